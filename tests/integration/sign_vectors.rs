//! Every SDK `sign` vector through `POST /api/v2/ofc/signPayload` over HTTP against the sandbox
//! BitGo: v1 and v2 key envelopes, passphrase from the body and from `WALLET_<id>_PASSPHRASE`.

use std::sync::Arc;

use crate::common::*;
use futures::StreamExt;
use ofc_signer::config::Env;
use ofc_signer::js_json::{JsString, JsValue};
use ofc_signer::sandbox::Sandbox;
use ofc_signer::upstream::client::SystemClock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PassphraseFrom {
    Body,
    Env,
}

/// The vector's raw body with `walletPassphrase` added in front (the payload text stays verbatim).
fn with_body_passphrase(raw_body: &str, passphrase: &str) -> String {
    let mut escaped = String::new();
    JsString::from(passphrase).write_json(&mut escaped);
    let rest = raw_body.strip_prefix('{').expect("raw body is an object");
    format!("{{\"walletPassphrase\":{escaped},{rest}")
}

async fn run(envelope: EnvelopeKind, from: PassphraseFrom) {
    let sandbox = Sandbox::start().await.expect("sandbox");
    sandbox.add_token(TOKEN);
    let mut env = Env::default();
    for vector in kind("sign") {
        let wallet_id = text(vector, "walletId");
        let (encrypted, passphrase) = sign_vector_key(vector, envelope);
        sandbox.add_wallet(wallet_with(&wallet_id, &text(vector, "pub"), &encrypted));
        if from == PassphraseFrom::Env {
            env.set(format!("WALLET_{wallet_id}_PASSPHRASE"), passphrase);
        }
    }
    let signer = start_signer(&sandbox.url(), &[], env, Arc::new(SystemClock)).await;
    let url = format!("{}/api/v2/ofc/signPayload", signer.url);

    let results: Vec<(String, Result<(), String>)> = futures::stream::iter(kind("sign"))
        .map(|vector| {
            let url = url.clone();
            async move {
                let id = text(vector, "id");
                let raw = text(vector, "rawBody");
                let body = match from {
                    PassphraseFrom::Body => {
                        with_body_passphrase(&raw, &sign_vector_key(vector, envelope).1)
                    }
                    PassphraseFrom::Env => raw,
                };
                let answer = post_json(&url, body, Some(TOKEN)).await;
                (id, check(vector, &answer))
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let failures: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(
        failures.is_empty(),
        "{envelope:?}/{from:?}: {} of {} failed: {failures:#?}",
        failures.len(),
        results.len()
    );
    assert_eq!(results.len(), 62);
}

fn check(vector: &JsValue, answer: &Answer) -> Result<(), String> {
    if answer.status != 200 {
        return Err(format!("status {}: {}", answer.status, answer.body));
    }
    if answer.content_type != "application/json; charset=utf-8" {
        return Err(format!("content type {}", answer.content_type));
    }
    let json = answer.json();
    let payload = json
        .get("payload")
        .and_then(JsValue::as_js_string)
        .ok_or("no payload string")?;
    match vector.get("payloadString") {
        Some(JsValue::String(expected)) if payload != expected => {
            return Err(format!("payload {payload:?} != {expected:?}"));
        }
        Some(JsValue::String(_)) => {}
        _ => {
            // A lone surrogate: compare the signed bytes, and check V8's escaping on the wire.
            let expected_hex = text(vector, "payloadUtf8Hex");
            if hex::encode(payload.to_utf8_lossy().as_bytes()) != expected_hex {
                return Err("lone-surrogate payload bytes differ".to_string());
            }
            if !answer.body.contains("\\ud800") {
                return Err(format!("lone surrogate not escaped: {}", answer.body));
            }
        }
    }
    let signature = json
        .get("signature")
        .and_then(JsValue::as_str)
        .ok_or("no signature")?;
    let expected = text(vector, "signature");
    if signature != expected {
        return Err(format!("signature {signature} != {expected}"));
    }
    // Exactly two keys, in Express's order.
    let keys = object_keys(&json);
    if keys != ["payload", "signature"] {
        return Err(format!("keys {keys:?}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_envelopes_env_passphrase() {
    run(EnvelopeKind::V1, PassphraseFrom::Env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_envelopes_body_passphrase() {
    run(EnvelopeKind::V1, PassphraseFrom::Body).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_envelopes_env_passphrase() {
    run(EnvelopeKind::V2, PassphraseFrom::Env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_envelopes_body_passphrase() {
    run(EnvelopeKind::V2, PassphraseFrom::Body).await;
}

#[test]
fn body_passphrase_insertion_keeps_the_payload_text() {
    assert_eq!(
        with_body_passphrase(r#"{"walletId":"w","payload":{ "a" : 1 }}"#, "p\"✓"),
        r#"{"walletPassphrase":"p\"✓","walletId":"w","payload":{ "a" : 1 }}"#
    );
}
