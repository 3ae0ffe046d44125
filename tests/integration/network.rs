//! Go Network sign-and-forward against the sandbox BitGo (which issues its own canonical payloads,
//! verifies signatures with the trading account's key and refuses duplicate ids): settlements,
//! allocations, deallocations and connections (with connection-key encryption), passthrough of
//! pre-signed bodies, the idempotency rules, step-named errors, the audit log, fail-closed auditing.

use std::sync::Arc;

use crate::common::*;
use clap::Parser;
use ofc_signer::config::{Cli, Config, Env};
use ofc_signer::js_json::{self, JsObject, JsValue};
use ofc_signer::sandbox::{Fault, Partner, Sandbox};
use ofc_signer::store::audit::{AuditError, AuditLog, AuditRecord};
use ofc_signer::upstream::client::SystemClock;

const ENTERPRISE: &str = "e1e1e1e1e1e1e1e1e1e1e1e1";
const TRADING_ACCOUNT: &str = "7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a";
const PASSPHRASE: &str = "trading account passphrase ✓";
const PARTNER: &str = "p0000000-0000-4000-8000-000000000001";

fn network_vector() -> &'static JsValue {
    &kind("network_encrypt")[0]
}

/// A sandbox with an enterprise whose trading account key comes from a public seed.
async fn network_sandbox() -> Sandbox {
    let sandbox = sandbox_with_trading_account(
        b"network test trading account",
        ENTERPRISE,
        TRADING_ACCOUNT,
        PASSPHRASE,
    )
    .await;
    sandbox.add_partner(
        ENTERPRISE,
        Partner {
            id: PARTNER.to_string(),
            name: "Test Partner".to_string(),
            public_key_pem: Some(text(network_vector(), "rsaPublicKeyPem")),
            connection_key_schema: "token".to_string(),
        },
    );
    sandbox
}

async fn signer_for(sandbox: &Sandbox, extra: &[&str]) -> Signer {
    let env = Env::from_pairs([(format!("WALLET_{TRADING_ACCOUNT}_PASSPHRASE"), PASSPHRASE)]);
    let trading = format!("{ENTERPRISE}={TRADING_ACCOUNT}");
    let mut args = vec!["--trading-account", &trading];
    args.extend_from_slice(extra);
    start_signer(&sandbox.url(), &args, env, Arc::new(SystemClock)).await
}

fn settlement(external_id: &str, btc: &str) -> String {
    format!(
        r#"{{"externalId":"{external_id}","notes":"end of day","settlementAmounts":{{"09684b38-49ed-4cf6-a28e-c3a459494c69":{{"BTC":"{btc}","ETH":"-200"}}}}}}"#
    )
}

fn url(signer: &Signer, path: &str) -> String {
    format!("{}/api/network/{path}", signer.url)
}

#[tokio::test]
async fn settlements_are_signed_forwarded_and_never_submitted_twice() {
    let sandbox = network_sandbox().await;
    let signer = signer_for(&sandbox, &[]).await;
    let path = url(
        &signer,
        &format!("v1/enterprises/{ENTERPRISE}/partners/settlements"),
    );

    let created = post_json(&path, settlement("ext-1", "100"), Some(TOKEN)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created
        .json()
        .get("settlement")
        .and_then(|s| s.get("id"))
        .cloned()
        .unwrap();
    assert_eq!(sandbox.create_count(), 1);
    // What went up: the client's fields, a 64-hex nonce, BitGo's payload and the signature;
    // no walletId, no passphrase.
    let sent = sandbox
        .requests()
        .into_iter()
        .rfind(|r| r.path.ends_with("/partners/settlements"))
        .unwrap();
    let sent = js_json::parse(std::str::from_utf8(&sent.body).unwrap()).unwrap();
    let nonce = sent
        .get("nonce")
        .and_then(JsValue::as_str)
        .unwrap()
        .to_string();
    assert_eq!(nonce.len(), 64);
    assert!(nonce.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(
        sent.get("payload")
            .and_then(JsValue::as_str)
            .unwrap()
            .contains(r#""type":"settlement""#)
    );
    assert!(sent.get("walletId").is_none() && sent.get("walletPassphrase").is_none());

    // The same request again: the stored answer, no second create, nothing sent.
    let before = sandbox.requests().len();
    let again = post_json(&path, settlement("ext-1", "100"), Some(TOKEN)).await;
    assert_eq!(again.status, 201);
    assert_eq!(
        again
            .json()
            .get("settlement")
            .and_then(|s| s.get("id"))
            .cloned()
            .unwrap(),
        id
    );
    assert_eq!(sandbox.create_count(), 1);
    assert_eq!(sandbox.requests().len(), before);

    // The same externalId with other amounts: 409, nothing sent.
    let conflict = post_json(&path, settlement("ext-1", "999"), Some(TOKEN)).await;
    assert_eq!(conflict.status, 409, "{}", conflict.body);
    assert!(conflict.field("message").contains("ext-1"));
    assert_eq!(sandbox.requests().len(), before);

    // v2 requires cutoffAt.
    let v2 = url(
        &signer,
        &format!("v2/enterprises/{ENTERPRISE}/partners/settlements"),
    );
    let missing = post_json(&v2, settlement("ext-2", "1"), Some(TOKEN)).await;
    assert_eq!(missing.status, 400);
    let body = r#"{"externalId":"ext-3","settlementAmounts":{"a":{"BTC":"1"}},"cutoffAt":"2025-01-01T00:00:00Z"}"#;
    let created = post_json(&v2, body, Some(TOKEN)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(sandbox.create_count(), 2);
}

#[tokio::test]
async fn a_pre_signed_settlement_passes_through_byte_for_byte() {
    let sandbox = network_sandbox().await;
    let signer = signer_for(&sandbox, &[]).await;
    // The client signs for itself: BitGo's payload, then ofc-signer's signPayload.
    let fields = r#"{"externalId":"pre-1","settlementAmounts":{"a":{"BTC":"5"}},"nonce":"1"}"#;
    let signing = post_json(
        &url(
            &signer,
            &format!("v1/enterprises/{ENTERPRISE}/partners/settlements-signing"),
        ),
        fields,
        Some(TOKEN),
    )
    .await;
    assert_eq!(signing.status, 200, "{}", signing.body);
    let payload = signing.field("payload");
    let mut request = JsObject::new();
    request.insert("walletId", TRADING_ACCOUNT);
    request.insert("payload", payload.as_str());
    let signed = post_json(
        &format!("{}/api/v2/ofc/signPayload", signer.url),
        JsValue::Object(request).to_json(),
        Some(TOKEN),
    )
    .await;
    assert_eq!(signed.status, 200, "{}", signed.body);
    let mut body = js_json::parse(fields).unwrap();
    let object = body.as_object_mut().unwrap();
    object.insert("payload", payload.as_str());
    object.insert("signature", signed.field("signature"));
    let bytes = format!(
        "{}\n",
        JsValue::Object(object.clone())
            .to_json()
            .replace(",\"", ", \"")
    );
    let created = post_json(
        &url(
            &signer,
            &format!("v1/enterprises/{ENTERPRISE}/partners/settlements"),
        ),
        bytes.clone(),
        Some(TOKEN),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let sent = sandbox.requests().pop().unwrap();
    assert_eq!(sent.body.as_ref(), bytes.as_bytes());
    assert_eq!(sent.headers.get("enterprise-id").unwrap(), ENTERPRISE);
}

#[tokio::test]
async fn connections_are_encrypted_then_signed_and_allocations_follow() {
    let sandbox = network_sandbox().await;
    let signer = signer_for(&sandbox, &[]).await;
    let secret = "partner-connection-token-SECRET";
    let body = format!(
        r#"{{"partnerId":"{PARTNER}","name":"my connection","connectionKey":{{"schema":"token","connectionToken":"{secret}"}},"nonce":"n-1","encrypt":true}}"#
    );
    let created = post_json(
        &url(
            &signer,
            &format!("v1/enterprises/{ENTERPRISE}/clients/connections"),
        ),
        body,
        Some(TOKEN),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    // The plaintext never went upstream; the partner's key decrypts what did.
    for request in sandbox.requests() {
        assert!(
            !String::from_utf8_lossy(&request.body).contains(secret),
            "plaintext sent to {}",
            request.path
        );
    }
    let stored = sandbox.connections().pop().unwrap();
    let token = stored
        .get("connectionKey")
        .and_then(|k| k.get("connectionToken"))
        .and_then(JsValue::as_str)
        .unwrap()
        .to_string();
    let decrypted = ofc_signer::network_crypto::decrypt_from_partner(
        &text(network_vector(), "rsaPrivateKeyPem"),
        &token,
    )
    .unwrap();
    assert_eq!(decrypted.as_str(), secret);
    let connection_id = created
        .json()
        .get("connection")
        .and_then(|c| c.get("id"))
        .and_then(JsValue::as_str)
        .unwrap()
        .to_string();

    // Allocation: clientExternalId given; a retry returns the same allocation.
    let allocations = url(
        &signer,
        &format!("v1/enterprises/{ENTERPRISE}/clients/connections/{connection_id}/allocations"),
    );
    let body = r#"{"amount":{"currency":"ofctusd","quantity":"2500000"},"clientExternalId":"alloc-1","notes":"n"}"#;
    let first = post_json(&allocations, body, Some(TOKEN)).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let second = post_json(&allocations, body, Some(TOKEN)).await;
    assert_eq!(second.body, first.body);
    assert_eq!(sandbox.allocations().len(), 1);
    // Deallocation without a clientExternalId: one is generated.
    let deallocations = allocations.replace("/allocations", "/deallocations");
    let dealloc = post_json(
        &deallocations,
        r#"{"amount":{"currency":"ofctusd","quantity":"1"}}"#,
        Some(TOKEN),
    )
    .await;
    assert_eq!(dealloc.status, 201, "{}", dealloc.body);
    assert_eq!(sandbox.allocations().len(), 2);
}

#[tokio::test]
async fn encryption_refusals_follow_express() {
    let sandbox = network_sandbox().await;
    let signer = signer_for(&sandbox, &[]).await;
    let path = url(
        &signer,
        &format!("v1/enterprises/{ENTERPRISE}/clients/connections"),
    );
    let answer = post_json(&path, r#"{"name":"x","encrypt":true}"#, Some(TOKEN)).await;
    assert_eq!(
        (answer.status, answer.field("message")),
        (400, "Missing required field: partnerId".to_string())
    );
    let answer = post_json(&path, r#"{"partnerId":"nope","encrypt":true}"#, Some(TOKEN)).await;
    assert_eq!(
        (answer.status, answer.field("message")),
        (400, "Partner not found for partnerId: nope".to_string())
    );
}

#[tokio::test]
async fn errors_name_the_step_that_failed() {
    let sandbox = network_sandbox().await;
    let signer = signer_for(&sandbox, &[]).await;
    let path = url(
        &signer,
        &format!("v1/enterprises/{ENTERPRISE}/partners/settlements"),
    );
    // BitGo's signing endpoint refuses (no settlementAmounts).
    let answer = post_json(&path, r#"{"externalId":"bad-1"}"#, Some(TOKEN)).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(answer.field("step"), "signing payload");
    // A wrong passphrase.
    let body = r#"{"externalId":"bad-2","settlementAmounts":{"a":{"BTC":"1"}},"walletPassphrase":"wrong"}"#;
    let answer = post_json(&path, body, Some(TOKEN)).await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert_eq!(answer.field("step"), "signature");
    assert_eq!(answer.field("name"), "IncorrectPasswordError");
    assert!(
        !answer.body.contains("wrong\""),
        "the passphrase is redacted"
    );
    // No trading account known for the enterprise.
    let other = url(
        &signer,
        "v1/enterprises/unknown-enterprise/partners/settlements",
    );
    let answer = post_json(&other, settlement("x", "1"), Some(TOKEN)).await;
    assert_eq!(answer.status, 400);
    assert!(answer.field("message").starts_with("walletId is required"));
}

#[tokio::test]
async fn a_pending_request_is_resent_byte_for_byte() {
    let sandbox = network_sandbox().await;
    let signer = signer_for(&sandbox, &[]).await;
    let path = url(
        &signer,
        &format!("v1/enterprises/{ENTERPRISE}/partners/settlements"),
    );
    // BitGo fails the submission (after the signing step): the request stays pending.
    sandbox.set_fault(Some(Fault::On {
        path_suffix: "/partners/settlements".into(),
        fault: Box::new(Fault::Respond {
            status: 503,
            content_type: "application/json".into(),
            body: r#"{"error":"down"}"#.into(),
        }),
    }));
    let failed = post_json(&path, settlement("resend-1", "7"), Some(TOKEN)).await;
    assert_eq!(failed.status, 503, "{}", failed.body);
    assert_eq!(failed.field("step"), "submission");
    let first = sandbox
        .requests()
        .into_iter()
        .rfind(|r| r.path.ends_with("/partners/settlements"))
        .unwrap();
    // The retry re-sends the very same bytes (same nonce, same signature) and succeeds.
    sandbox.set_fault(None);
    let retried = post_json(&path, settlement("resend-1", "7"), Some(TOKEN)).await;
    assert_eq!(retried.status, 201, "{}", retried.body);
    let second = sandbox
        .requests()
        .into_iter()
        .rfind(|r| r.path.ends_with("/partners/settlements"))
        .unwrap();
    assert_eq!(first.body, second.body);
    assert_eq!(sandbox.create_count(), 1);
    // A definitive rejection (4xx) forgets the request, so a corrected retry may proceed.
    sandbox.set_fault(Some(Fault::On {
        path_suffix: "/partners/settlements".into(),
        fault: Box::new(Fault::Respond {
            status: 400,
            content_type: "application/json".into(),
            body: r#"{"error":"bad"}"#.into(),
        }),
    }));
    assert_eq!(
        post_json(&path, settlement("reject-1", "1"), Some(TOKEN))
            .await
            .status,
        400
    );
    sandbox.set_fault(None);
    assert_eq!(
        post_json(&path, settlement("reject-1", "2"), Some(TOKEN))
            .await
            .status,
        201
    );
}

/// An audit log that cannot be written.
struct BrokenAuditLog;

impl AuditLog for BrokenAuditLog {
    fn append(&self, _record: &AuditRecord) -> Result<(), AuditError> {
        Err(AuditError::Io {
            path: "audit.log".into(),
            op: "write",
            message: "disk full".into(),
        })
    }
}

#[tokio::test]
async fn signatures_are_audited_and_withheld_when_the_log_fails() {
    let sandbox = network_sandbox().await;
    let state_dir = tempfile::tempdir().unwrap();
    let trading = format!("{ENTERPRISE}={TRADING_ACCOUNT}");
    let args = [
        "ofc-signer",
        "--env",
        "custom",
        "--customrooturi",
        &sandbox.url(),
        "--disablessl",
        "--trading-account",
        &trading,
        "--state-dir",
        state_dir.path().to_str().unwrap(),
    ];
    let env = Env::from_pairs([(format!("WALLET_{TRADING_ACCOUNT}_PASSPHRASE"), PASSPHRASE)]);
    let config = Config::resolve(Cli::try_parse_from(args).unwrap(), &env).unwrap();
    let signer = start_configured(config, env.clone(), Arc::new(SystemClock)).await;
    let sign_url = format!("{}/api/v2/ofc/signPayload", signer.url);
    let body = format!(r#"{{"walletId":"{TRADING_ACCOUNT}","payload":{{"a":1}}}}"#);
    assert_eq!(
        post_json(&sign_url, body.clone(), Some(TOKEN)).await.status,
        200
    );
    let created = post_json(
        &url(
            &signer,
            &format!("v1/enterprises/{ENTERPRISE}/partners/settlements"),
        ),
        settlement("audit-1", "3"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    // Two signatures, chained; no token, passphrase or payload text in the log.
    let log = state_dir.path().join("audit.log");
    let report = ofc_signer::store::audit::verify(&log).unwrap();
    assert_eq!(report.records, 2);
    let text = std::fs::read_to_string(&log).unwrap();
    for secret in [TOKEN, PASSPHRASE, r#"{"a":1}"#, "end of day"] {
        assert!(!text.contains(secret), "{secret} in the audit log");
    }

    // With a log that cannot be written, no signature leaves: 503.
    let config = Config::resolve(
        Cli::try_parse_from([
            "ofc-signer",
            "--env",
            "custom",
            "--customrooturi",
            &sandbox.url(),
            "--disablessl",
        ])
        .unwrap(),
        &env,
    )
    .unwrap();
    let mut prepared = ofc_signer::server::Prepared::new(
        Config {
            state_dir: tempfile::tempdir().unwrap().keep(),
            ..config
        },
        &env,
        Arc::new(SystemClock),
    )
    .unwrap();
    Arc::get_mut(&mut prepared.state).unwrap().audit_log = Arc::new(BrokenAuditLog);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broken_url = format!(
        "http://{}/api/v2/ofc/signPayload",
        listener.local_addr().unwrap()
    );
    tokio::spawn(prepared.serve(
        listener,
        std::future::pending(),
        std::time::Duration::from_secs(1),
    ));
    let refused = post_json(&broken_url, body, Some(TOKEN)).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(!refused.body.contains("signature\":"), "{}", refused.body);
}
