//! Issue 5 behaviour seen from outside: the caches keep Express's answers while skipping repeated
//! upstream fetches and key derivations; `/metrics`, liveness, readiness, request ids and the
//! connection limit.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::*;
use ofc_signer::config::Env;
use ofc_signer::js_json::{JsObject, JsValue};
use ofc_signer::keys::envelope::{self, EnvelopeVersion};
use ofc_signer::keys::xprv::{SigningKey, master_xprv_from_seed, xpub_from_xprv};
use ofc_signer::message_sign::verify_message;
use ofc_signer::sandbox::SandboxWallet;

const WALLET: &str = "5f00000000000000000000000000c0de";
const PASSPHRASE: &str = "operations passphrase";
const OTHER_TOKEN: &str = "v2x0e1c5c5c6b0e6e0a4d27c9f1f0b1e6f4f7f57d4f2e0d0c7b8a9e1f2a3b4c5d6e8";

struct TestKey {
    xprv: String,
    xpub: String,
    key: SigningKey,
}

fn test_key() -> TestKey {
    let xprv = master_xprv_from_seed(b"operations test seed").unwrap();
    let xpub = xpub_from_xprv(&xprv).unwrap();
    let key = SigningKey::from_xprv(&xprv).unwrap();
    TestKey {
        xprv: xprv.to_string(),
        xpub,
        key,
    }
}

fn wallet(key: &TestKey, passphrase: &str, version: EnvelopeVersion) -> SandboxWallet {
    let encrypted = envelope::encrypt(passphrase, &key.xprv, version, None).unwrap();
    wallet_with(WALLET, &key.xpub, &encrypted)
}

async fn ready(args: &[&str], version: EnvelopeVersion) -> (Setup, TestKey) {
    let setup = setup(args, Env::default()).await;
    setup.sandbox.add_token(TOKEN);
    setup.sandbox.add_token(OTHER_TOKEN);
    let key = test_key();
    setup.sandbox.add_wallet(wallet(&key, PASSPHRASE, version));
    (setup, key)
}

fn sign_body(payload: &str, passphrase: &str) -> String {
    let mut body = JsObject::new();
    body.insert("walletId", WALLET);
    body.insert("payload", payload);
    body.insert("walletPassphrase", passphrase);
    JsValue::Object(body).to_json()
}

async fn sign(setup: &Setup, token: &str, payload: &str, passphrase: &str) -> Answer {
    post_json(
        &format!("{}/api/v2/ofc/signPayload", setup.signer.url),
        sign_body(payload, passphrase),
        Some(token),
    )
    .await
}

fn assert_signed(answer: &Answer, key: &TestKey, payload: &str) {
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.field("payload"), payload);
    verify_message(
        payload.as_bytes(),
        &answer.field("signature"),
        &key.key.public_key(),
    )
    .expect("a signature by the wallet's key");
}

/// Upstream GETs of the wallet and of its keychain, as the sandbox saw them.
fn upstream_gets(setup: &Setup) -> (usize, usize) {
    let requests = setup.sandbox.requests();
    let count = |prefix: &str| {
        requests
            .iter()
            .filter(|r| r.method == "GET" && r.path.starts_with(prefix))
            .count()
    };
    (count("/api/v2/ofc/wallet/"), count("/api/v2/ofc/key/"))
}

async fn kdf_runs(setup: &Setup) -> f64 {
    let health = get(&format!("{}/ofc-signer/health", setup.signer.url), None).await;
    assert_eq!(health.status, 200, "{}", health.body);
    health.field("kdfRuns").parse().unwrap()
}

/// `/metrics`, parsed by an independent Prometheus text parser.
async fn metrics(setup: &Setup) -> prometheus_parse::Scrape {
    let response = client()
        .get(format!("{}/metrics", setup.signer.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        // Every sample line is `name{labels} value` with a finite or ±Inf value.
        let value = line.rsplit_once(' ').expect("sample").1;
        assert!(value.parse::<f64>().is_ok(), "unparsable sample {line:?}");
    }
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("Prometheus text format")
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: HashMap<&str, &str> = labels.iter().copied().collect();
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && wanted.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref buckets) => {
                buckets.last().map_or(0.0, |b| b.count)
            }
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

/// Both caches on (the metadata cache is opt-in).
const WARM: [&str; 2] = ["--metadata-cache-ttl", "10"];

#[tokio::test]
async fn by_default_every_request_fetches_like_express_but_derives_once() {
    let (setup, key) = ready(&[], EnvelopeVersion::V1).await;
    for n in 0..3 {
        let payload = format!("d{n}");
        assert_signed(
            &sign(&setup, TOKEN, &payload, PASSPHRASE).await,
            &key,
            &payload,
        );
    }
    assert_eq!(upstream_gets(&setup), (3, 3));
    assert_eq!(kdf_runs(&setup).await, 1.0);
    // An upstream answer changes what the next request gets at once.
    setup
        .sandbox
        .set_fault(Some(ofc_signer::sandbox::Fault::Respond {
            status: 401,
            content_type: "application/json".into(),
            body: r#"{"error":"unauthorized"}"#.into(),
        }));
    let revoked = sign(&setup, TOKEN, "d", PASSPHRASE).await;
    assert_eq!(revoked.status, 401, "{}", revoked.body);
    assert_eq!(revoked.field("error"), "unauthorized");
}

#[tokio::test]
async fn warm_requests_fetch_once_and_derive_once() {
    let (setup, key) = ready(&WARM, EnvelopeVersion::V1).await;
    for n in 0..5 {
        let payload = format!("payload {n}");
        assert_signed(
            &sign(&setup, TOKEN, &payload, PASSPHRASE).await,
            &key,
            &payload,
        );
    }
    assert_eq!(upstream_gets(&setup), (1, 1));
    assert_eq!(kdf_runs(&setup).await, 1.0);

    // Another token is authorised by BitGo on its own: its wallet and keychain GETs happen, the
    // unlocked key is shared.
    assert_signed(&sign(&setup, OTHER_TOKEN, "x", PASSPHRASE).await, &key, "x");
    assert_eq!(upstream_gets(&setup), (2, 2));
    assert_eq!(kdf_runs(&setup).await, 1.0);
}

#[tokio::test]
async fn a_wrong_passphrase_on_an_unlocked_key_is_401_without_a_derivation() {
    let (setup, key) = ready(&WARM, EnvelopeVersion::V1).await;
    assert_signed(&sign(&setup, TOKEN, "a", PASSPHRASE).await, &key, "a");
    assert_eq!(kdf_runs(&setup).await, 1.0);

    let wrong = sign(&setup, TOKEN, "a", "not the passphrase").await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    // Spec §11.3: the same answer as a cold wrong passphrase.
    assert_eq!(
        wrong.field("error"),
        "unable to decrypt keychain with the given wallet passphrase"
    );
    assert_eq!(wrong.field("code"), "wallet_passphrase_incorrect");
    assert!(!wrong.body.contains("not the passphrase"));
    assert_eq!(
        kdf_runs(&setup).await,
        1.0,
        "the verifier decided, not the KDF"
    );
    // The cached keychain was checked once against BitGo's current one before answering.
    assert_eq!(upstream_gets(&setup), (1, 2));

    // The right passphrase still signs from the unlocked key.
    assert_signed(&sign(&setup, TOKEN, "b", PASSPHRASE).await, &key, "b");
    assert_eq!(kdf_runs(&setup).await, 1.0);
}

#[tokio::test]
async fn a_keychain_reencrypted_upstream_is_refetched_before_401() {
    let (setup, key) = ready(&WARM, EnvelopeVersion::V1).await;
    assert_signed(&sign(&setup, TOKEN, "a", PASSPHRASE).await, &key, "a");

    // The user changes the wallet passphrase: BitGo now holds a new envelope of the same key.
    setup
        .sandbox
        .add_wallet(wallet(&key, "the new passphrase", EnvelopeVersion::V1));
    let answer = sign(&setup, TOKEN, "b", "the new passphrase").await;
    assert_signed(&answer, &key, "b");
    assert_eq!(upstream_gets(&setup), (1, 2), "keychain refetched once");
    assert_eq!(kdf_runs(&setup).await, 2.0);

    // The old passphrase no longer opens anything.
    let old = sign(&setup, TOKEN, "c", PASSPHRASE).await;
    assert_eq!(old.status, 401, "{}", old.body);
}

#[tokio::test]
async fn with_caches_off_every_request_fetches_and_derives() {
    let args = ["--key-cache-ttl", "0", "--metadata-cache-ttl", "0"];
    let (setup, key) = ready(&args, EnvelopeVersion::V1).await;
    for n in 0..3 {
        let payload = format!("p{n}");
        assert_signed(
            &sign(&setup, TOKEN, &payload, PASSPHRASE).await,
            &key,
            &payload,
        );
    }
    assert_eq!(upstream_gets(&setup), (3, 3));
    assert_eq!(kdf_runs(&setup).await, 3.0);
    let scrape = metrics(&setup).await;
    assert_eq!(sample(&scrape, "ofc_signer_unlocked_keys", &[]), Some(0.0));
}

#[tokio::test]
async fn concurrent_requests_for_a_locked_key_wait_for_one_derivation() {
    let (setup, key) = ready(&[], EnvelopeVersion::V2).await;
    let requests = (0..16).map(|n| {
        let setup = &setup;
        async move { (n, sign(setup, TOKEN, &format!("c{n}"), PASSPHRASE).await) }
    });
    for (n, answer) in futures::future::join_all(requests).await {
        assert_signed(&answer, &key, &format!("c{n}"));
    }
    assert_eq!(kdf_runs(&setup).await, 1.0);
}

#[tokio::test]
async fn metrics_parse_and_count_what_happened() {
    let (setup, key) = ready(&WARM, EnvelopeVersion::V1).await;
    for n in 0..3 {
        let payload = format!("m{n}");
        assert_signed(
            &sign(&setup, TOKEN, &payload, PASSPHRASE).await,
            &key,
            &payload,
        );
    }
    let wrong = sign(&setup, TOKEN, "m", "wrong").await;
    assert_eq!(wrong.status, 401);

    let scrape = metrics(&setup).await;
    let signed = [("wallet", WALLET), ("outcome", "signed")];
    assert_eq!(
        sample(&scrape, "ofc_signer_signatures_total", &signed),
        Some(3.0)
    );
    let ok = [("route", "sign_payload"), ("status", "200")];
    assert_eq!(sample(&scrape, "ofc_signer_requests_total", &ok), Some(3.0));
    let refused = [("route", "sign_payload"), ("status", "401")];
    assert_eq!(
        sample(&scrape, "ofc_signer_requests_total", &refused),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &scrape,
            "ofc_signer_sign_failures_total",
            &[("status", "401")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &scrape,
            "ofc_signer_request_duration_seconds_count",
            &[("route", "sign_payload")]
        ),
        Some(4.0)
    );
    assert_eq!(
        sample(&scrape, "ofc_signer_kdf_duration_seconds_count", &[]),
        Some(1.0)
    );
    assert_eq!(
        sample(&scrape, "ofc_signer_key_cache_total", &[("result", "miss")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&scrape, "ofc_signer_key_cache_total", &[("result", "hit")]),
        Some(2.0)
    );
    assert_eq!(sample(&scrape, "ofc_signer_unlocked_keys", &[]), Some(1.0));
    assert_eq!(
        sample(&scrape, "ofc_signer_audit_records_total", &[]),
        Some(3.0)
    );
    // One at a time: each signature had a sync of its own, and each sync was timed.
    assert_eq!(
        sample(&scrape, "ofc_signer_audit_syncs_total", &[]),
        Some(3.0)
    );
    assert_eq!(
        sample(&scrape, "ofc_signer_audit_sync_duration_seconds_count", &[]),
        Some(3.0)
    );
    assert!(
        sample(&scrape, "ofc_signer_audit_sync_duration_seconds_sum", &[])
            .is_some_and(|seconds| seconds > 0.0)
    );
    assert!(
        sample(
            &scrape,
            "ofc_signer_upstream_requests_total",
            &[("outcome", "2xx")]
        )
        .is_some_and(|n| n >= 2.0)
    );
    // No secret reaches the exposition.
    let text = client()
        .get(format!("{}/metrics", setup.signer.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for secret in [PASSPHRASE, TOKEN, &key.xprv] {
        assert!(!text.contains(secret));
    }
}

#[tokio::test]
async fn liveness_and_readiness() {
    let (setup, _) = ready(&[], EnvelopeVersion::V1).await;
    let live = get(&format!("{}/ofc-signer/live", setup.signer.url), None).await;
    assert_eq!(
        (live.status, live.body.as_str()),
        (200, r#"{"status":"ok"}"#)
    );
    let ready = get(&format!("{}/ofc-signer/ready", setup.signer.url), None).await;
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (200, r#"{"status":"ready"}"#)
    );
}

#[tokio::test]
async fn not_ready_while_the_state_directory_is_unwritable() {
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let dir = state_dir.to_str().unwrap();
    let (setup, _) = ready(&["--state-dir", dir], EnvelopeVersion::V1).await;
    let url = format!("{}/ofc-signer/ready", setup.signer.url);
    assert_eq!(get(&url, None).await.status, 200);

    // Replace the directory by a file: no user, root included, can create files under it.
    std::fs::rename(&state_dir, state.path().join("moved")).unwrap();
    std::fs::write(&state_dir, b"not a directory").unwrap();
    let answer = get(&url, None).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.field("status"), "not ready");
    assert!(!answer.field("reason").is_empty());
}

#[tokio::test]
async fn request_ids_are_echoed_logged_and_sent_upstream() {
    let (setup, _) = ready(&[], EnvelopeVersion::V1).await;
    let response = client()
        .post(format!("{}/api/v2/ofc/signPayload", setup.signer.url))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("request-id", "client-chosen-42")
        .body(sign_body("r", PASSPHRASE))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["request-id"], "client-chosen-42");
    let wallet_get = setup
        .sandbox
        .requests()
        .into_iter()
        .find(|r| r.path.starts_with("/api/v2/ofc/wallet/"))
        .unwrap();
    assert_eq!(wallet_get.headers["request-id"], "client-chosen-42");

    // Without one, a fresh id in the SDK's format, the same in the answer and upstream.
    setup.sandbox.clear_requests();
    let response = client()
        .get(format!("{}/api/v2/ping", setup.signer.url))
        .send()
        .await
        .unwrap();
    let id = response.headers()["request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(id.len(), 25, "{id}");
    assert!(id.ends_with("-0000"), "{id}");
    assert!(id[..20].bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
}

#[tokio::test]
async fn admin_routes_can_be_limited_to_loopback_clients() {
    // Every test client is on loopback, so the routes stay served; the refusal itself is a unit
    // test of the server (`admin_refused_off_loopback`).
    let (setup, _) = ready(&["--admin-loopback-only"], EnvelopeVersion::V1).await;
    for path in ["/metrics", "/ofc-signer/live", "/ofc-signer/ready"] {
        let answer = get(&format!("{}{path}", setup.signer.url), None).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
    }
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let (setup, key) = ready(&["--max-connections", "1"], EnvelopeVersion::V1).await;
    let address = setup.signer.url.trim_start_matches("http://").to_string();
    // An idle connection holds the only slot...
    let held = tokio::net::TcpStream::connect(&address).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiting = tokio::spawn({
        let url = format!("{}/api/v2/ofc/signPayload", setup.signer.url);
        async move { post_json(&url, sign_body("q", PASSPHRASE), Some(TOKEN)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "served beyond the connection limit");
    // ...and once it closes, the queued client is served.
    drop(held);
    let answer = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served after the slot freed")
        .unwrap();
    assert_signed(&answer, &key, "q");
}
