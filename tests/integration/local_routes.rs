//! Express's local routes (spec §6): pingexpress, ping, encrypt, decrypt; and the catch-all 404.

use crate::common::*;
use ofc_signer::config::Env;
use ofc_signer::js_json::{JsObject, JsValue};
use ofc_signer::sandbox::Fault;

fn body(pairs: &[(&str, JsValue)]) -> String {
    let mut object = JsObject::new();
    for (key, value) in pairs {
        object.insert(*key, value.clone());
    }
    JsValue::Object(object).to_json()
}

#[tokio::test]
async fn pingexpress_answers_locally() {
    let setup = setup(&[], Env::default()).await;
    for version in ["v1", "v2"] {
        let answer = get(
            &format!("{}/api/{version}/pingexpress", setup.signer.url),
            None,
        )
        .await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, r#"{"status":"express server is ok!"}"#);
        assert_eq!(answer.content_type, "application/json; charset=utf-8");
    }
    assert!(setup.sandbox.requests().is_empty(), "no upstream call");
}

#[tokio::test]
async fn ping_relays_bitgo_ping() {
    let setup = setup(&[], Env::default()).await;
    setup.sandbox.add_token(TOKEN);
    for version in ["v1", "v2"] {
        let answer = get(
            &format!("{}/api/{version}/ping", setup.signer.url),
            Some(TOKEN),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(
            answer.body,
            r#"{"status":"service is ok!","environment":"ofc-signer sandbox"}"#
        );
    }
    let paths: Vec<_> = setup
        .sandbox
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(paths, ["/api/v1/ping", "/api/v1/ping"]);
    // A body with `status` and `body` keys is relayed as it is (spec §11.12).
    setup.sandbox.set_fault(Some(Fault::Respond {
        status: 200,
        content_type: "application/json".into(),
        body: r#"{"status":418,"body":{"x":1}}"#.into(),
    }));
    let answer = get(&format!("{}/api/v2/ping", setup.signer.url), None).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, r#"{"status":418,"body":{"x":1}}"#)
    );
}

async fn decrypt_with(url: &str, envelope: &str, password: &str) -> Answer {
    let request = body(&[("input", envelope.into()), ("password", password.into())]);
    post_json(url, request, None).await
}

#[tokio::test]
async fn encrypt_then_decrypt_round_trips_both_versions() {
    let setup = setup(&[], Env::default()).await;
    let encrypt = format!("{}/api/v2/encrypt", setup.signer.url);
    let decrypt = format!("{}/api/v1/decrypt", setup.signer.url);
    // Default: a v2 envelope with the SDK's Argon2id parameters.
    let answer = post_json(
        &encrypt,
        body(&[("input", "secret ✓".into()), ("password", "pw".into())]),
        None,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let envelope = answer.field("encrypted");
    assert!(
        envelope.starts_with(r#"{"v":2,"m":65536,"t":3,"p":4,"salt":""#),
        "{envelope}"
    );
    let answer = decrypt_with(&decrypt, &envelope, "pw").await;
    assert_eq!(
        (answer.status, answer.field("decrypted")),
        (200, "secret ✓".to_string())
    );
    // encryptionVersion 1: SJCL, with adata escaped like JavaScript's escape().
    let answer = post_json(
        &encrypt,
        body(&[
            ("input", "hello".into()),
            ("password", "pw".into()),
            ("adata", "my adata!".into()),
            ("encryptionVersion", 1.0.into()),
        ]),
        None,
    )
    .await;
    let envelope = answer.field("encrypted");
    assert_eq!(
        object_keys(&ofc_signer::js_json::parse(&envelope).unwrap()),
        [
            "iv", "v", "iter", "ks", "ts", "mode", "adata", "cipher", "salt", "ct"
        ]
    );
    assert!(
        envelope.contains(r#""adata":"my%20adata%21""#),
        "{envelope}"
    );
    let answer = decrypt_with(&decrypt, &envelope, "pw").await;
    assert_eq!(answer.field("decrypted"), "hello");
}

#[tokio::test]
async fn encrypt_and_decrypt_errors() {
    let setup = setup(&[], Env::default()).await;
    let encrypt = format!("{}/api/v2/encrypt", setup.signer.url);
    let decrypt = format!("{}/api/v2/decrypt", setup.signer.url);
    let cases = [
        (&encrypt, "{}", 400, "Missing required field 'input'."),
        (
            &encrypt,
            r#"{"input":5}"#,
            400,
            "Invalid value for 'input': expected string, got '5'.",
        ),
        (
            &encrypt,
            r#"{"input":"x","password":5}"#,
            400,
            "Invalid value for 'password': expected string, got '5'.",
        ),
        (
            &encrypt,
            r#"{"input":"x"}"#,
            500,
            "Missing parameter: password",
        ),
        (
            &encrypt,
            r#"{"input":"","password":"pw"}"#,
            500,
            "Missing parameter: input",
        ),
        (
            &decrypt,
            r#"{"input":"{}"}"#,
            500,
            "Missing parameter: password",
        ),
        (
            &decrypt,
            r#"{"input":"not json","password":"pw"}"#,
            500,
            "decrypt: ciphertext is not valid JSON",
        ),
        (
            &decrypt,
            r#"{"input":"{\"v\":3}","password":"pw"}"#,
            500,
            "decrypt: unknown envelope version 3",
        ),
    ];
    for (url, request, status, message) in cases {
        let answer = post_json(url, request, None).await;
        assert_eq!(answer.status, status, "{request}: {}", answer.body);
        assert_eq!(answer.field("message"), message, "{request}");
    }
}

#[tokio::test]
async fn non_api_paths_are_404() {
    let setup = setup(&[], Env::default()).await;
    for path in ["/", "/foo", "/API/network/v1/x"] {
        let answer = get(&format!("{}{path}", setup.signer.url), None).await;
        assert_eq!(answer.status, 404, "{path}");
        assert_eq!(
            answer.body,
            format!(
                r#"{{"error":"bitgo-express can only proxy BitGo API requests","message":"bitgo-express can only proxy BitGo API requests","name":"ApiResponseError",{}}}"#,
                versions()
            )
        );
    }
}
