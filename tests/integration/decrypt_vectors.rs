//! The SDK `decrypt`, `decrypt_wrong_password` and `decrypt_invalid` vectors through
//! `POST /api/v2/decrypt` over HTTP.

use crate::common::*;
use futures::StreamExt;
use ofc_signer::config::Env;
use ofc_signer::js_json::{JsObject, JsValue};

fn body(input: &str, password: &str) -> String {
    let mut object = JsObject::new();
    object.insert("input", input);
    object.insert("password", password);
    JsValue::Object(object).to_json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decrypt_vectors_over_http() {
    let setup = setup(&[], Env::default()).await;
    let url = format!("{}/api/v2/decrypt", setup.signer.url);
    let mut cases = Vec::new();
    for name in ["decrypt", "decrypt_wrong_password", "decrypt_invalid"] {
        for v in kind(name) {
            cases.push((name, v));
        }
    }
    assert_eq!(cases.len(), 37 + 8 + 13);
    let failures: Vec<String> = futures::stream::iter(cases)
        .map(|(name, v)| {
            let url = url.clone();
            async move {
                let id = text(v, "id");
                let answer = post_json(
                    &url,
                    body(&text(v, "encryptedPrv"), &text(v, "passphrase")),
                    None,
                )
                .await;
                let ok = if name == "decrypt" {
                    answer.status == 200 && answer.field("decrypted") == text(v, "prv")
                } else {
                    // The SDK's message, as Express renders it: 500, name Error, and every
                    // occurrence of the request's password replaced by [REDACTED] (spec §0.3:
                    // plain substring replacement, so a password `p` mangles `incorrect password`).
                    let password = text(v, "passphrase");
                    let mut expected = text(v, "sdkError");
                    if !password.is_empty() {
                        expected = expected.replace(&password, "[REDACTED]");
                    }
                    answer.status == 500
                        && answer.field("message") == expected
                        && answer.field("error") == expected
                        && answer.field("name") == "Error"
                };
                (!ok).then(|| format!("{name}/{id}: {} {}", answer.status, answer.body))
            }
        })
        .buffer_unordered(4)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    assert!(failures.is_empty(), "{failures:#?}");
}
