//! Signer mode (spec §1.5, §11.9) over HTTP: every sign vector from a key file built from the
//! vectors, environment and body passphrases, the mode's error table, reload on change, unlock
//! once, client authentication, and forward mode (§1.3) against a signer-mode instance.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use clap::Parser;
use futures::StreamExt;
use ofc_signer::config::{Cli, Config, Env};
use ofc_signer::js_json::{JsObject, JsString, JsValue};
use ofc_signer::upstream::client::SystemClock;

/// Starts ofc-signer with exactly these arguments (no upstream needed in signer mode).
async fn start(args: &[&str], env: Env) -> Signer {
    let cli = Cli::try_parse_from(std::iter::once("ofc-signer").chain(args.iter().copied()))
        .expect("arguments");
    let config = Config::resolve(cli, &env).expect("config");
    start_configured(config, env, Arc::new(SystemClock)).await
}

/// Writes a key file `{walletId: entry}` atomically (temp file + rename).
fn write_key_file(path: &Path, entries: &[(String, JsValue)]) {
    let mut object = JsObject::new();
    for (wallet_id, entry) in entries {
        object.insert(wallet_id.as_str(), entry.clone());
    }
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, JsValue::Object(object).to_json()).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// The key file of every sign vector (v1 envelopes) and the matching passphrase variables.
fn vector_key_file(dir: &Path) -> (String, Env) {
    let path = dir.join("encryptedPrivKeys.json");
    let mut env = Env::default();
    let mut entries = Vec::new();
    for vector in kind("sign") {
        let wallet_id = text(vector, "walletId");
        let (encrypted, passphrase) = sign_vector_key(vector, EnvelopeKind::V1);
        entries.push((wallet_id.clone(), JsValue::from(encrypted)));
        env.set(format!("WALLET_{wallet_id}_PASSPHRASE"), passphrase);
    }
    write_key_file(&path, &entries);
    (path.to_string_lossy().into_owned(), env)
}

fn with_body_passphrase(raw_body: &str, passphrase: &str) -> String {
    let mut escaped = String::new();
    JsString::from(passphrase).write_json(&mut escaped);
    format!(
        "{{\"walletPassphrase\":{escaped},{}",
        raw_body.strip_prefix('{').unwrap()
    )
}

/// Checks a signPayload answer against a sign vector. Falsy payloads are 400 in signer mode;
/// through a forwarder that 400 arrives as Express relays it: the reason phrase `Bad Request`.
fn check(vector: &JsValue, answer: &Answer) -> Result<(), String> {
    if vector.get("expressRejectsFalsyPayload") == Some(&JsValue::Bool(true)) {
        let message = answer.field("message");
        return if answer.status == 400
            && (message == "Missing required field: payload" || message == "Bad Request")
        {
            Ok(())
        } else {
            Err(format!("falsy payload: {} {}", answer.status, answer.body))
        };
    }
    if answer.status != 200 {
        return Err(format!("{} {}", answer.status, answer.body));
    }
    let json = answer.json();
    let payload = json
        .get("payload")
        .and_then(JsValue::as_js_string)
        .ok_or("payload")?;
    let expected_payload = match vector.get("payloadString") {
        Some(JsValue::String(s)) => hex::encode(s.to_utf8_lossy().as_bytes()),
        _ => text(vector, "payloadUtf8Hex"),
    };
    if hex::encode(payload.to_utf8_lossy().as_bytes()) != expected_payload {
        return Err("payload differs".into());
    }
    if json.get("signature").and_then(JsValue::as_str) != Some(text(vector, "signature").as_str()) {
        return Err(format!("signature differs: {}", answer.body));
    }
    Ok(())
}

async fn sign_all(url: &str, body_passphrases: bool, headers: &[(&str, &str)]) {
    let failures: Vec<String> = futures::stream::iter(kind("sign"))
        .map(|vector| async move {
            let raw = text(vector, "rawBody");
            let body = if body_passphrases {
                with_body_passphrase(&raw, &sign_vector_key(vector, EnvelopeKind::V1).1)
            } else {
                raw
            };
            let mut request = client()
                .post(format!("{url}/api/v2/ofc/signPayload"))
                .header("content-type", "application/json")
                .body(body);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let answer = answer(request.send().await.unwrap()).await;
            check(vector, &answer)
                .err()
                .map(|e| format!("{}: {e}", text(vector, "id")))
        })
        .buffer_unordered(8)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sign_vector_with_environment_passphrases() {
    let dir = tempfile::tempdir().unwrap();
    let (key_file, env) = vector_key_file(dir.path());
    let signer = start(&["--signerMode", "--signerFileSystemPath", &key_file], env).await;
    sign_all(&signer.url, false, &[]).await;
    // Unlocked once at startup: no request ran a key derivation.
    let health = get(&format!("{}/ofc-signer/health", signer.url), None).await;
    let runs = health
        .json()
        .get("kdfRuns")
        .and_then(JsValue::as_f64)
        .unwrap();
    assert_eq!(
        runs, 62.0,
        "one derivation per wallet, at startup: {}",
        health.body
    );
    assert_eq!(health.field("mode"), "signer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sign_vector_with_body_passphrases() {
    let dir = tempfile::tempdir().unwrap();
    let (key_file, _) = vector_key_file(dir.path());
    let signer = start(
        &["--signerMode", "--signerFileSystemPath", &key_file],
        Env::default(),
    )
    .await;
    sign_all(&signer.url, true, &[]).await;
    // A second round is served by the unlocked keys.
    let runs_before = get(&format!("{}/ofc-signer/health", signer.url), None)
        .await
        .json()
        .get("kdfRuns")
        .cloned();
    sign_all(&signer.url, true, &[]).await;
    let runs_after = get(&format!("{}/ofc-signer/health", signer.url), None)
        .await
        .json()
        .get("kdfRuns")
        .cloned();
    assert_eq!(
        runs_before, runs_after,
        "no derivation for already unlocked keys"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_envelopes_unlock_once_and_check_passphrases_in_constant_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let vector = &kind("sign")[1];
    let wallet_id = text(vector, "walletId");
    let (envelope, passphrase) = sign_vector_key(vector, EnvelopeKind::V2);
    write_key_file(&path, &[(wallet_id.clone(), JsValue::from(envelope))]);
    let env = Env::from_pairs([(format!("WALLET_{wallet_id}_PASSPHRASE"), passphrase.clone())]);
    let signer = start(
        &[
            "--signerMode",
            "--signerFileSystemPath",
            path.to_str().unwrap(),
        ],
        env,
    )
    .await;
    let url = format!("{}/api/v2/ofc/signPayload", signer.url);
    for _ in 0..5 {
        let answer = post_json(&url, text(vector, "rawBody"), None).await;
        assert_eq!(answer.field("signature"), text(vector, "signature"));
        let answer = post_json(
            &url,
            with_body_passphrase(&text(vector, "rawBody"), &passphrase),
            None,
        )
        .await;
        assert_eq!(answer.field("signature"), text(vector, "signature"));
    }
    let wrong = post_json(
        &url,
        with_body_passphrase(&text(vector, "rawBody"), "wrong"),
        None,
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.field("name"), "IncorrectPasswordError");
    let health = get(&format!("{}/ofc-signer/health", signer.url), None).await;
    assert_eq!(
        health.json().get("kdfRuns").and_then(JsValue::as_f64),
        Some(1.0),
        "{}",
        health.body
    );
}

#[tokio::test]
async fn signer_mode_error_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let vector = &kind("sign")[0];
    let (envelope, passphrase) = sign_vector_key(vector, EnvelopeKind::V1);
    write_key_file(
        &path,
        &[
            ("good".to_string(), JsValue::from(envelope)),
            ("junk".to_string(), JsValue::from("invalid")),
            ("v3".to_string(), JsValue::from(r#"{"v":3}"#)),
            ("number".to_string(), JsValue::Number(5.0)),
        ],
    );
    let env = Env::from_pairs([
        ("WALLET_good_PASSPHRASE", passphrase.as_str()),
        ("WALLET_junk_PASSPHRASE", "x"),
        ("WALLET_v3_PASSPHRASE", "x"),
        ("WALLET_number_PASSPHRASE", "x"),
        ("WALLET_missing_PASSPHRASE", "x"),
    ]);
    let key_file = path.to_str().unwrap();
    let signer = start(&["--signerMode", "--signerFileSystemPath", key_file], env).await;
    let url = format!("{}/api/v2/ofc/signPayload", signer.url);
    let body = |wallet: &str, payload: &str, passphrase: Option<&str>| {
        let passphrase = passphrase
            .map(|p| format!(r#","walletPassphrase":"{p}""#))
            .unwrap_or_default();
        format!(r#"{{"walletId":"{wallet}","payload":{payload}{passphrase}}}"#)
    };
    let cases: Vec<(String, u16, String, &str)> = vec![
        (
            body("good", "0", None),
            400,
            "Missing required field: payload".into(),
            "ApiResponseError",
        ),
        (
            body("good", r#""""#, None),
            400,
            "Missing required field: payload".into(),
            "ApiResponseError",
        ),
        (
            body("good", "null", None),
            400,
            "Missing required field: payload".into(),
            "ApiResponseError",
        ),
        (
            body("good", "false", None),
            400,
            "Missing required field: payload".into(),
            "ApiResponseError",
        ),
        (
            body("nopass", "1", None),
            500,
            "Could not find wallet passphrase WALLET_nopass_PASSPHRASE in environment".into(),
            "Error",
        ),
        (
            body("missing", "1", None),
            500,
            format!("Could not find a field for walletId: missing in {key_file}"),
            "Error",
        ),
        (
            body("junk", "1", None),
            500,
            "Error when trying to decrypt private key: decrypt: ciphertext is not valid JSON"
                .into(),
            "Error",
        ),
        (
            body("v3", "1", None),
            500,
            "Error when trying to decrypt private key: decrypt: unknown envelope version 3".into(),
            "Error",
        ),
        (
            body("number", "1", None),
            401,
            "unable to decrypt keychain with the given wallet passphrase".into(),
            "IncorrectPasswordError",
        ),
        (
            body("good", "1", Some("wrong")),
            401,
            "unable to decrypt keychain with the given wallet passphrase".into(),
            "IncorrectPasswordError",
        ),
        // An empty body passphrase falls through to the environment's.
        (body("good", "1", Some("")), 200, String::new(), ""),
    ];
    for (request, status, message, name) in cases {
        let answer = post_json(&url, request.clone(), None).await;
        assert_eq!(answer.status, status, "{request}: {}", answer.body);
        if status != 200 {
            assert_eq!(answer.field("message"), message, "{request}");
            assert_eq!(answer.field("name"), name, "{request}");
        }
    }
    // Nothing but signPayload (and ofc-signer's health route) exists in signer mode.
    for (method, path) in [
        ("GET", "/api/v2/pingexpress"),
        ("POST", "/api/v2/user/x"),
        ("GET", "/api/v2/ping"),
    ] {
        let request = client().request(method.parse().unwrap(), format!("{}{path}", signer.url));
        let answer = answer(request.send().await.unwrap()).await;
        assert_eq!(answer.status, 404, "{method} {path}");
        assert_eq!(answer.field("message"), format!("Cannot {method} {path}"));
    }
}

async fn wait_for(deadline: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn key_file_is_reloaded_on_change_and_a_broken_file_keeps_the_last_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let (a, b) = (&kind("sign")[0], &kind("sign")[1]);
    let entry = |v: &JsValue| {
        (
            text(v, "walletId"),
            JsValue::from(sign_vector_key(v, EnvelopeKind::V1).0),
        )
    };
    write_key_file(&path, &[entry(a)]);
    let mut env = Env::default();
    for v in [a, b] {
        env.set(
            format!("WALLET_{}_PASSPHRASE", text(v, "walletId")),
            sign_vector_key(v, EnvelopeKind::V1).1,
        );
    }
    let signer = start(
        &[
            "--signerMode",
            "--signerFileSystemPath",
            path.to_str().unwrap(),
            "--key-file-poll-ms",
            "50",
        ],
        env,
    )
    .await;
    let url = format!("{}/api/v2/ofc/signPayload", signer.url);
    let sign = |v: &'static JsValue| {
        let url = url.clone();
        async move { post_json(&url, text(v, "rawBody"), None).await }
    };
    assert_eq!(sign(a).await.status, 200);
    assert_eq!(sign(b).await.status, 500, "b is not in the file yet");

    // Adding a wallet is picked up without a restart.
    write_key_file(&path, &[entry(a), entry(b)]);
    assert!(
        wait_for(Duration::from_secs(10), async || sign(b).await.status
            == 200)
        .await,
        "reload"
    );
    assert_eq!(sign(b).await.field("signature"), text(b, "signature"));

    // A broken file keeps the previous version.
    std::fs::write(&path, "{ not json").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sign(a).await.status, 200);
    assert_eq!(sign(b).await.status, 200);

    // Removing a wallet is picked up too.
    write_key_file(&path, &[entry(b)]);
    assert!(
        wait_for(Duration::from_secs(10), async || sign(a).await.status
            == 500)
        .await,
        "removal"
    );
    assert!(
        sign(a)
            .await
            .field("message")
            .starts_with("Could not find a field for walletId")
    );
    assert_eq!(sign(b).await.status, 200);
}

#[tokio::test]
async fn client_authentication_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let (key_file, env) = vector_key_file(dir.path());
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "signer-token-123\n").unwrap();
    let allowed = text(&kind("sign")[0], "walletId");
    let signer = start(
        &[
            "--signerMode",
            "--signerFileSystemPath",
            &key_file,
            "--auth-token-file",
            token_file.to_str().unwrap(),
            "--allowed-wallets",
            &allowed,
        ],
        env,
    )
    .await;
    let url = format!("{}/api/v2/ofc/signPayload", signer.url);
    let post = |body: String, header: Option<(&'static str, &'static str)>| {
        let url = url.clone();
        async move {
            let mut request = client()
                .post(&url)
                .header("content-type", "application/json")
                .body(body);
            if let Some((name, value)) = header {
                request = request.header(name, value);
            }
            answer(request.send().await.unwrap()).await
        }
    };
    let allowed_body = text(&kind("sign")[0], "rawBody");
    let other_body = text(&kind("sign")[1], "rawBody");
    // No token, a wrong token: 401 with Express's error body.
    for header in [
        None,
        Some(("x-signer-token", "nope")),
        Some(("authorization", "Bearer nope")),
    ] {
        let answer = post(allowed_body.clone(), header).await;
        assert_eq!(answer.status, 401, "{header:?}");
        assert_eq!(answer.field("name"), "ApiResponseError");
        assert!(!answer.body.contains("signer-token-123"));
    }
    // The token, in either header.
    for header in [
        ("x-signer-token", "signer-token-123"),
        ("authorization", "Bearer signer-token-123"),
    ] {
        let answer = post(allowed_body.clone(), Some(header)).await;
        assert_eq!(answer.status, 200, "{header:?}: {}", answer.body);
    }
    // A wallet outside the allowlist: 403.
    let answer = post(other_body, Some(("x-signer-token", "signer-token-123"))).await;
    assert_eq!(answer.status, 403);
    assert!(
        answer
            .field("message")
            .contains("is not allowed on this signer")
    );
    // Refusals are counted apart from failures.
    let health = get(&format!("{}/ofc-signer/health", signer.url), None)
        .await
        .json();
    assert_eq!(health.get("refusals").and_then(JsValue::as_f64), Some(4.0));
    assert_eq!(health.get("failures").and_then(JsValue::as_f64), Some(0.0));
    assert_eq!(
        health.get("signatures").and_then(JsValue::as_f64),
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_mode_returns_the_signers_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let (key_file, env) = vector_key_file(dir.path());
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "fwd-token").unwrap();
    let signer = start(
        &[
            "--signerMode",
            "--signerFileSystemPath",
            &key_file,
            "--auth-token-file",
            token_file.to_str().unwrap(),
        ],
        env,
    )
    .await;
    let forwarder = start(
        &[
            "--externalSignerUrl",
            &signer.url,
            "--disablessl",
            "--external-signer-token-file",
            token_file.to_str().unwrap(),
        ],
        Env::default(),
    )
    .await;
    // The client's passphrase is not forwarded: a wrong one still signs with the signer's.
    let failures: Vec<String> = futures::stream::iter(kind("sign"))
        .map(|vector| {
            let url = format!("{}/api/v2/ofc/signPayload", forwarder.url);
            async move {
                let body = with_body_passphrase(&text(vector, "rawBody"), "not forwarded");
                let answer = post_json(&url, body, None).await;
                check(vector, &answer)
                    .err()
                    .map(|e| format!("{}: {e}", text(vector, "id")))
            }
        })
        .buffer_unordered(8)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    assert!(failures.is_empty(), "{failures:#?}");

    // Without the signer token the signer refuses: Express relays the reason phrase.
    let unauthenticated = start(
        &["--externalSignerUrl", &signer.url, "--disablessl"],
        Env::default(),
    )
    .await;
    let answer = post_json(
        &format!("{}/api/v2/ofc/signPayload", unauthenticated.url),
        text(&kind("sign")[0], "rawBody"),
        None,
    )
    .await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.field("message"), "Unauthorized");
    assert_eq!(answer.field("name"), "Error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_mode_retries_refused_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (key_file, env) = vector_key_file(dir.path());
    // A port nothing listens on yet.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = reserved.local_addr().unwrap().port();
    drop(reserved);
    let signer_url = format!("http://127.0.0.1:{port}");
    let forwarder = start(
        &["--externalSignerUrl", &signer_url, "--disablessl"],
        Env::default(),
    )
    .await;
    let url = format!("{}/api/v2/ofc/signPayload", forwarder.url);
    let vector = &kind("sign")[0];

    // Nobody answers: three attempts (1–2 s, then 2–3 s apart), then Express's message.
    let started = Instant::now();
    let answer = post_json(&url, text(vector, "rawBody"), None).await;
    let elapsed = started.elapsed();
    assert_eq!(answer.status, 500);
    assert_eq!(
        answer.field("message"),
        "giving up after reaching max retry limit of 3"
    );
    assert!(
        elapsed >= Duration::from_secs(3),
        "waited {elapsed:?} between the three attempts"
    );

    // The signer comes up during the retries: the request succeeds.
    let request = tokio::spawn({
        let url = url.clone();
        let body = text(vector, "rawBody");
        async move { post_json(&url, body, None).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let cli = Cli::try_parse_from([
        "ofc-signer",
        "--signerMode",
        "--signerFileSystemPath",
        &key_file,
    ])
    .unwrap();
    let _signer = start_on(
        listener,
        Config::resolve(cli, &env).unwrap(),
        env,
        Arc::new(SystemClock),
    )
    .await;
    let answer = request.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.field("signature"), text(vector, "signature"));
}
