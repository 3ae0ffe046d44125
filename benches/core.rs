//! Criterion micro-benchmarks of the pure core: payload canonicalisation, v1 (PBKDF2 + AES-CCM)
//! and v2 (Argon2id + AES-GCM) envelope decryption, signing, and request HMACs.
//!
//! `cargo bench --bench core` — medians are reported in the README.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ofc_signer::js_json::{self, JsValue};
use ofc_signer::keys::envelope;
use ofc_signer::keys::xprv::SigningKey;
use ofc_signer::message_sign::sign_message_hex;
use ofc_signer::upstream::hmac::{AccessToken, AuthVersion, request_headers};

fn vectors() -> JsValue {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/sdk-vectors.json"
    ))
    .expect("tests/vectors/sdk-vectors.json");
    js_json::parse(&text).expect("vectors")
}

fn field<'a>(value: &'a JsValue, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(JsValue::as_str)
        .expect("vector field")
}

fn sign_vector<'a>(vectors: &'a JsValue, id: &str) -> &'a JsValue {
    vectors
        .get("sign")
        .and_then(JsValue::as_array)
        .and_then(|signs| {
            signs
                .iter()
                .find(|v| v.get("id").and_then(JsValue::as_str) == Some(id))
        })
        .expect("sign vector")
}

fn benches(c: &mut Criterion) {
    let vectors = vectors();
    let settlement = sign_vector(&vectors, "settlement");
    let raw_body = field(settlement, &["rawBody"]).as_bytes().to_vec();
    let key0 = vectors
        .get("meta")
        .and_then(|m| m.get("keys"))
        .and_then(JsValue::as_array)
        .and_then(|k| k.first())
        .expect("key");
    let passphrase = field(key0, &["walletPassphrase"]).to_string();
    let v1 = field(key0, &["encryptedPrv"]).to_string();
    let v2 = field(key0, &["encryptedPrvV2"]).to_string();
    let key = SigningKey::from_xprv(field(key0, &["xprv"])).expect("xprv");
    let payload = field(settlement, &["payloadString"]).to_string();

    c.bench_function(
        "canonicalise settlement body (parse + JSON.stringify payload)",
        |b| {
            b.iter(|| {
                let body = js_json::parse_body(black_box(&raw_body)).expect("body");
                black_box(body.get("payload").map(JsValue::to_json))
            })
        },
    );
    c.bench_function("sign settlement payload (digest + RFC 6979 ECDSA)", |b| {
        b.iter(|| black_box(sign_message_hex(&key, black_box(payload.as_bytes()))))
    });
    let token =
        AccessToken::new("v2x0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    c.bench_function("HMAC v2 request headers", |b| {
        b.iter(|| {
            black_box(request_headers(
                AuthVersion::V2,
                Some(&token),
                "get",
                "/api/v2/ofc/wallet/abc123",
                b"",
                1_700_000_000_000,
            ))
        })
    });
    let mut slow = c.benchmark_group("envelopes");
    slow.sample_size(10);
    slow.bench_function("decrypt v1 (PBKDF2-SHA256 10k + AES-256-CCM)", |b| {
        b.iter(|| black_box(envelope::decrypt(&passphrase, black_box(&v1)).expect("v1")))
    });
    slow.bench_function("decrypt v2 (Argon2id m=64MiB t=3 p=4 + AES-256-GCM)", |b| {
        b.iter(|| black_box(envelope::decrypt(&passphrase, black_box(&v2)).expect("v2")))
    });
    slow.finish();
}

criterion_group!(core, benches);
criterion_main!(core);
