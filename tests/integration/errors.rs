//! The signPayload error table of spec §1.7 (normal mode) and the §11 decisions, status and body,
//! plus what goes over the wire upstream (HMAC headers, legacy tokens, remote signing).

use crate::common::*;
use ofc_signer::config::Env;
use ofc_signer::js_json::{JsObject, JsValue};
use ofc_signer::keys::envelope::{self, EnvelopeVersion};
use ofc_signer::keys::xprv::{SigningKey, master_xprv_from_seed, xpub_from_xprv};
use ofc_signer::message_sign::verify_message;
use ofc_signer::sandbox::{Fault, SandboxWallet, keychain_document};

const WALLET: &str = "5f0000000000000000000000000000aa";
const PASSPHRASE: &str = "correct horse ✓";

/// A wallet keyed from a public test seed, its v1 envelope under [`PASSPHRASE`].
fn test_wallet(id: &str) -> (SandboxWallet, SigningKey) {
    let xprv = master_xprv_from_seed(format!("errors test seed {id}").as_bytes()).unwrap();
    let xpub = xpub_from_xprv(&xprv).unwrap();
    let encrypted = envelope::encrypt(PASSPHRASE, &xprv, EnvelopeVersion::V1, None).unwrap();
    (
        wallet_with(id, &xpub, &encrypted),
        SigningKey::from_xprv(&xprv).unwrap(),
    )
}

async fn ready(args: &[&str], env: Env) -> Setup {
    let setup = setup(args, env).await;
    setup.sandbox.add_token(TOKEN);
    setup.sandbox.add_token("v123xyz...");
    setup.sandbox.add_wallet(test_wallet(WALLET).0);
    setup
}

fn sign_url(setup: &Setup) -> String {
    format!("{}/api/v2/ofc/signPayload", setup.signer.url)
}

fn sign_body(wallet_id: &str, passphrase: Option<&str>) -> String {
    let mut body = JsObject::new();
    body.insert("walletId", wallet_id);
    body.insert("payload", ofc_signer::js_json::parse(r#"{"a":1}"#).unwrap());
    if let Some(passphrase) = passphrase {
        body.insert("walletPassphrase", passphrase);
    }
    JsValue::Object(body).to_json()
}

fn express_error(error: &str, name: &str) -> String {
    format!(
        r#"{{"error":"{error}","message":"{error}","name":"{name}",{}}}"#,
        versions()
    )
}

#[tokio::test]
async fn schema_violations_are_400_validation_errors() {
    let setup = ready(&[], Env::default()).await;
    let url = sign_url(&setup);
    let cases = [
        (
            "{}",
            "Missing required field 'walletId'. Missing required field 'payload'.",
        ),
        (r#"{"walletId":"w"}"#, "Missing required field 'payload'."),
        (
            r#"{"walletId":"","payload":{}}"#,
            "Invalid value for 'walletId': expected NonEmptyString, got ''.",
        ),
        (
            r#"{"walletId":123,"payload":{}}"#,
            "Invalid value for 'walletId': expected NonEmptyString, got '123'.",
        ),
        (
            r#"{"walletId":null,"payload":{}}"#,
            "Invalid value for 'walletId': expected NonEmptyString, got 'null'.",
        ),
        (
            r#"{"walletId":["a"],"payload":{}}"#,
            r#"Invalid value for 'walletId': expected NonEmptyString, got '[\"a\"]'."#,
        ),
        (
            r#"{"walletId":"w","payload":1,"walletPassphrase":123}"#,
            "Invalid value for 'walletPassphrase': expected string, got '123'.",
        ),
        (
            r#"{"walletId":"w","payload":1,"walletPassphrase":null}"#,
            "Invalid value for 'walletPassphrase': expected string, got 'null'.",
        ),
        (
            r#"{"walletId":"w","payload":1,"walletPassphrase":true}"#,
            "Invalid value for 'walletPassphrase': expected string, got 'true'.",
        ),
        ("[]", ""),
    ];
    for (body, message) in cases {
        let answer = post_json(&url, body, Some(TOKEN)).await;
        assert_eq!(answer.status, 400, "{body}");
        assert_eq!(
            answer.body,
            express_error(message, "ValidationError"),
            "{body}"
        );
    }
    // A 400 makes no upstream call at all.
    assert!(setup.sandbox.requests().is_empty());
    // Without a JSON content type the body decodes as {}.
    for content_type in [None, Some("text/plain"), Some("application/vnd.api+json")] {
        let mut request = client().post(&url).body(sign_body(WALLET, None));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let answer = answer(request.send().await.unwrap()).await;
        assert_eq!(answer.status, 400, "{content_type:?}");
        assert_eq!(
            answer.field("message"),
            "Missing required field 'walletId'. Missing required field 'payload'."
        );
    }
}

#[tokio::test]
async fn body_parser_failures_keep_status_codes_with_json_bodies() {
    let setup = ready(&[], Env::default()).await;
    let url = sign_url(&setup);
    for body in [r#"{"walletId":"w","#, r#""just a string""#, "{\"a\":1}x"] {
        let answer = post_json(&url, body, None).await;
        assert_eq!(answer.status, 400, "{body}");
        assert_eq!(answer.field("name"), "SyntaxError");
        assert_eq!(answer.content_type, "application/json; charset=utf-8");
    }
    // V8's excerpt around the fault is Express's message, unless the body names a secret field:
    // then part of the passphrase could be in it, so it is withheld.
    let plain = post_json(&url, r#"{"walletId":x}"#, None).await;
    assert_eq!(
        plain.field("message"),
        r#"Unexpected token 'x', "{"walletId":x}" is not valid JSON"#
    );
    let secret = post_json(&url, r#"{"walletId":"w","walletPassphrase":hunter2}"#, None).await;
    assert_eq!(secret.status, 400);
    assert_eq!(secret.field("name"), "SyntaxError");
    assert!(!secret.body.contains("hunter"), "{}", secret.body);
    assert!(
        secret
            .field("message")
            .starts_with("Unexpected token in JSON"),
        "{}",
        secret.body
    );
    let answer = answer(
        client()
            .post(&url)
            .header("content-type", "application/json; charset=latin1")
            .body("{}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 415);
    assert_eq!(answer.field("message"), "unsupported charset \"LATIN1\"");
    // `application/json; charset=utf-8` and odd casing are JSON.
    let answer = answer_of(&url, "Application/JSON; charset=UTF-8", "{}").await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.field("name"), "ValidationError");
}

async fn answer_of(url: &str, content_type: &str, body: impl Into<reqwest::Body>) -> Answer {
    answer(
        client()
            .post(url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn body_limit_is_twenty_mebibytes() {
    let setup = ready(&[], Env::default()).await;
    let url = sign_url(&setup);
    const LIMIT: usize = 20 * 1024 * 1024;
    let padded = |len: usize| {
        let prefix = r#"{"walletId":"missing-wallet","payload":""#;
        let suffix = r#""}"#;
        format!(
            "{prefix}{}{suffix}",
            "a".repeat(len - prefix.len() - suffix.len())
        )
    };
    // Exactly the limit is accepted: it reaches the upstream (which does not know the wallet).
    let answer = post_json(&url, padded(LIMIT), Some(TOKEN)).await;
    assert_eq!(
        answer.status,
        404,
        "{}",
        &answer.body[..answer.body.len().min(200)]
    );
    // One byte more is 413 with the JSON error body.
    let answer = post_json(&url, padded(LIMIT + 1), Some(TOKEN)).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.field("message"), "request entity too large");
    assert_eq!(answer.field("name"), "PayloadTooLargeError");
}

#[tokio::test]
async fn upstream_errors_are_relayed_like_the_sdk() {
    let setup = ready(&[], Env::default()).await;
    let url = sign_url(&setup);
    // Unknown wallet: the sandbox's 404 body, `name` overwritten in place.
    let answer = post_json(&url, sign_body("ffff", Some(PASSPHRASE)), Some(TOKEN)).await;
    assert_eq!(answer.status, 404);
    assert_eq!(
        answer.body,
        format!(
            r#"{{"error":"wallet not found","name":"ApiResponseError","message":"wallet not found",{}}}"#,
            versions()
        )
    );
    // A non-JSON 502: the sanitised text, no `error` key.
    setup.sandbox.set_fault(Some(Fault::Respond {
        status: 502,
        content_type: "text/html".into(),
        body: "<html><head><title>T</title></head><body><h1>Bad   gateway</h1>\n<p>upstream\tdown</p></body></html>".into(),
    }));
    let answer = post_json(&url, sign_body(WALLET, Some(PASSPHRASE)), Some(TOKEN)).await;
    assert_eq!(answer.status, 502);
    assert_eq!(
        answer.body,
        format!(
            r#"{{"message":"502\nTBad   gateway\nupstream\tdown","name":"ApiResponseError",{}}}"#,
            versions()
        )
    );
    // A JSON error without `error`: status + text; other fields stay in place.
    setup.sandbox.set_fault(Some(Fault::Respond {
        status: 400,
        content_type: "application/json".into(),
        body: r#"{"foo":"bar","message":"m1"}"#.into(),
    }));
    let answer = post_json(&url, sign_body(WALLET, Some(PASSPHRASE)), Some(TOKEN)).await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.body,
        format!(
            r#"{{"foo":"bar","message":"400\n{{\"foo\":\"bar\",\"message\":\"m1\"}}","name":"ApiResponseError",{}}}"#,
            versions()
        )
    );
    // An upstream message that echoes the passphrase is redacted.
    setup.sandbox.set_fault(Some(Fault::Respond {
        status: 403,
        content_type: "application/json".into(),
        body: format!(
            r#"{{"error":"bad passphrase {PASSPHRASE}","walletPassphrase":"{PASSPHRASE}"}}"#
        ),
    }));
    let answer = post_json(&url, sign_body(WALLET, Some(PASSPHRASE)), Some(TOKEN)).await;
    assert_eq!(answer.status, 403);
    assert!(!answer.body.contains(PASSPHRASE), "{}", answer.body);
    assert_eq!(answer.field("message"), "bad passphrase [REDACTED]");
    assert_eq!(answer.field("walletPassphrase"), "[REDACTED]");
}

#[tokio::test]
async fn unreachable_upstream_is_500_econnrefused() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let upstream = format!("http://127.0.0.1:{port}");
    let signer = start_signer(
        &upstream,
        &[],
        Env::default(),
        std::sync::Arc::new(ofc_signer::upstream::client::SystemClock),
    )
    .await;
    let answer = post_json(
        &format!("{}/api/v2/ofc/signPayload", signer.url),
        sign_body(WALLET, Some(PASSPHRASE)),
        Some(TOKEN),
    )
    .await;
    assert_eq!(answer.status, 500);
    let error = format!("connect ECONNREFUSED 127.0.0.1:{port}");
    assert_eq!(
        answer.body,
        format!(
            r#"{{"error":"{error}","message":"{error}","name":"Error",{},"code":"ECONNREFUSED"}}"#,
            versions()
        )
    );
}

#[tokio::test]
async fn bad_response_hmac_is_511_without_the_token() {
    let setup = ready(&[], Env::default()).await;
    setup.sandbox.set_fault(Some(Fault::CorruptResponseHmac));
    let answer = post_json(
        &sign_url(&setup),
        sign_body(WALLET, Some(PASSPHRASE)),
        Some(TOKEN),
    )
    .await;
    assert_eq!(answer.status, 511);
    assert_eq!(
        answer.keys(),
        [
            "expectedHmac",
            "receivedHmac",
            "hmacInput",
            "message",
            "name",
            "bitgoJsVersion",
            "bitgoExpressVersion"
        ]
    );
    assert_eq!(answer.field("message"), "invalid response HMAC");
    assert_eq!(answer.field("name"), "ApiResponseError");
    assert!(
        answer
            .field("hmacInput")
            .contains(&format!("|/api/v2/ofc/wallet/{WALLET}|200|"))
    );
    assert!(
        !answer.body.contains(&TOKEN[..10]),
        "no part of the token: {}",
        answer.body
    );
}

#[tokio::test]
async fn remote_signing_rules() {
    let setup = ready(&[], Env::default()).await;
    let url = sign_url(&setup);
    // Default: the user key is required.
    let answer = post_json(&url, sign_body(WALLET, None), Some(TOKEN)).await;
    assert_eq!(answer.status, 500);
    assert_eq!(
        answer.field("message"),
        "Wallet must use user key to sign ofc transaction, please provide the wallet passphrase, the private key, or visit your wallet settings page to configure one."
    );
    // Not required, but only one key.
    let (mut wallet, _) = test_wallet("aa01");
    wallet.user_key_signing_required = Some(false);
    setup.sandbox.add_wallet(wallet);
    let answer = post_json(&url, sign_body("aa01", None), Some(TOKEN)).await;
    assert_eq!(answer.status, 500);
    assert_eq!(
        answer.field("message"),
        "Wallet does not support BitGo signing. Please reach out to support@bitgo.com to resolve this issue."
    );
    // Not required and BitGo holds a key: BitGo signs the payload string.
    let bitgo_xprv = master_xprv_from_seed(b"sandbox bitgo key").unwrap();
    let (mut wallet, _) = test_wallet("aa02");
    wallet.user_key_signing_required = Some(false);
    wallet.bitgo_signing_xprv = Some(bitgo_xprv.to_string());
    setup.sandbox.add_wallet(wallet);
    setup.sandbox.clear_requests();
    let answer = post_json(&url, sign_body("aa02", None), Some(TOKEN)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.field("payload"), r#"{"a":1}"#);
    let bitgo_key = SigningKey::from_xprv(&bitgo_xprv).unwrap();
    verify_message(
        br#"{"a":1}"#,
        &answer.field("signature"),
        &bitgo_key.public_key(),
    )
    .unwrap();
    let requests = setup.sandbox.requests();
    let paths: Vec<_> = requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        paths,
        [
            "GET /api/v2/ofc/wallet/aa02",
            "POST /api/v2/ofc/wallet/aa02/tx/sign"
        ]
    );
    assert_eq!(requests[1].body.as_ref(), br#"{"payload":"{\"a\":1}"}"#);
    assert_eq!(
        requests[1].headers.get("content-type").unwrap(),
        "application/json"
    );
}

#[tokio::test]
async fn empty_body_passphrase_means_remote_signing_even_with_the_env_variable() {
    let env = Env::from_pairs([(format!("WALLET_{WALLET}_PASSPHRASE"), PASSPHRASE)]);
    let setup = ready(&[], env).await;
    let answer = post_json(&sign_url(&setup), sign_body(WALLET, Some("")), Some(TOKEN)).await;
    assert_eq!(answer.status, 500);
    assert!(
        answer
            .field("message")
            .starts_with("Wallet must use user key")
    );
    assert_eq!(setup.sandbox.requests().len(), 1, "no key GET");
    // Without the body passphrase the environment's is used.
    let answer = post_json(&sign_url(&setup), sign_body(WALLET, None), Some(TOKEN)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test]
async fn keychain_and_passphrase_failures() {
    let setup = ready(&[], Env::default()).await;
    let url = sign_url(&setup);
    // Wrong passphrase: 401 IncorrectPasswordError in every mode (spec §11.3).
    let answer = post_json(&url, sign_body(WALLET, Some("wrong")), Some(TOKEN)).await;
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.body,
        format!(
            r#"{{"error":"unable to decrypt keychain with the given wallet passphrase","message":"unable to decrypt keychain with the given wallet passphrase","name":"IncorrectPasswordError",{},"code":"wallet_passphrase_incorrect"}}"#,
            versions()
        )
    );
    // A keychain without encryptedPrv.
    let (mut wallet, _) = test_wallet("aa03");
    let mut keychain = JsObject::new();
    keychain.insert("id", "keyaa03");
    keychain.insert("pub", "xpub-not-needed");
    wallet.user_keychain = JsValue::Object(keychain);
    setup.sandbox.add_wallet(wallet);
    let answer = post_json(&url, sign_body("aa03", Some(PASSPHRASE)), Some(TOKEN)).await;
    assert_eq!(answer.status, 500);
    assert_eq!(
        answer.body,
        express_error(
            "Expected encryptedPrv to be present on user keychain.",
            "Error"
        )
    );
    // A keychain whose envelope is junk: the SDK's message.
    let (mut wallet, _) = test_wallet("aa04");
    wallet.user_keychain = keychain_document("keyaa04", "xpub", "not json");
    setup.sandbox.add_wallet(wallet);
    let answer = post_json(&url, sign_body("aa04", Some(PASSPHRASE)), Some(TOKEN)).await;
    assert_eq!(answer.status, 500);
    assert_eq!(
        answer.body,
        express_error("decrypt: ciphertext is not valid JSON", "Error")
    );
}

#[tokio::test]
async fn upstream_authentication_on_the_wire() {
    let setup = ready(&[], Env::default()).await;
    let url = sign_url(&setup);
    // HMAC token: hashed bearer, timestamp, HMAC (the sandbox verified them), version 2.0.
    let answer = post_json(&url, sign_body(WALLET, Some(PASSPHRASE)), Some(TOKEN)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let requests = setup.sandbox.requests();
    assert_eq!(requests.len(), 2);
    let token_hash = ofc_signer::upstream::hmac::AccessToken::new(TOKEN).hash_hex();
    for request in &requests {
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(header("bitgo-auth-version").as_deref(), Some("2.0"));
        assert_eq!(
            header("authorization"),
            Some(format!("Bearer {token_hash}"))
        );
        assert!(header("auth-timestamp").is_some() && header("hmac").is_some());
        assert!(header("user-agent").unwrap().starts_with("ofc-signer/"));
    }
    assert!(
        requests[0].headers.contains_key("request-id"),
        "the wallet GET carries a Request-ID"
    );
    // The legacy documentation token: plain bearer, no HMAC headers.
    setup.sandbox.clear_requests();
    let answer = post_json(
        &url,
        sign_body(WALLET, Some(PASSPHRASE)),
        Some("v123xyz..."),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    for request in setup.sandbox.requests() {
        assert_eq!(
            request.headers.get("authorization").unwrap(),
            "Bearer v123xyz..."
        );
        assert!(
            !request.headers.contains_key("hmac")
                && !request.headers.contains_key("auth-timestamp")
        );
        assert!(!request.headers.contains_key("bitgo-auth-version"));
    }
    // No token: only the version header goes up, and BitGo's 401 comes back.
    setup.sandbox.clear_requests();
    let answer = post_json(&url, sign_body(WALLET, Some(PASSPHRASE)), None).await;
    assert_eq!(answer.status, 401);
    let request = &setup.sandbox.requests()[0];
    assert_eq!(request.headers.get("bitgo-auth-version").unwrap(), "2.0");
    assert!(!request.headers.contains_key("authorization"));
}

#[tokio::test]
async fn auth_version_3_when_configured() {
    let setup = ready(&["--authversion", "3"], Env::default()).await;
    let answer = post_json(
        &sign_url(&setup),
        sign_body(WALLET, Some(PASSPHRASE)),
        Some(TOKEN),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    for request in setup.sandbox.requests() {
        assert_eq!(request.headers.get("bitgo-auth-version").unwrap(), "3.0");
    }
}

#[tokio::test]
async fn request_timeout_is_503() {
    let setup = ready(&["--timeout", "300"], Env::default()).await;
    setup.sandbox.set_fault(Some(Fault::Delay { ms: 3000 }));
    let started = std::time::Instant::now();
    let answer = post_json(
        &sign_url(&setup),
        sign_body(WALLET, Some(PASSPHRASE)),
        Some(TOKEN),
    )
    .await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.field("message"), "Response timeout");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "answered before the upstream did"
    );
}

#[tokio::test]
async fn wallet_id_is_one_path_segment() {
    let setup = ready(&[], Env::default()).await;
    let answer = post_json(
        &sign_url(&setup),
        sign_body("a/b?c d", Some(PASSPHRASE)),
        Some(TOKEN),
    )
    .await;
    assert_eq!(answer.status, 404);
    assert_eq!(
        setup.sandbox.requests()[0].path,
        "/api/v2/ofc/wallet/a%2Fb%3Fc%20d"
    );
    // `.` and `..` would be removed by URL normalisation: refused locally, nothing sent.
    setup.sandbox.clear_requests();
    for wallet_id in [".", ".."] {
        let answer = post_json(
            &sign_url(&setup),
            sign_body(wallet_id, Some(PASSPHRASE)),
            Some(TOKEN),
        )
        .await;
        assert_eq!(answer.status, 400, "{wallet_id}: {}", answer.body);
        assert_eq!(answer.field("name"), "ApiResponseError");
    }
    assert!(setup.sandbox.requests().is_empty());
}
