//! `POST /api/v2/ofc/signPayload` (spec §1.1–1.4, §1.7): the trading-account signature.
//!
//! 1. Decode the body like Express's typed route (400 `ValidationError` otherwise).
//! 2. The payload string: a JSON string payload is signed as sent; anything else is the V8-exact
//!    `JSON.stringify` of the parsed value.
//! 3. Normal mode: `GET /api/v2/ofc/wallet/<id>` with the caller's token; passphrase from the body,
//!    else `WALLET_<id>_PASSPHRASE`; with a passphrase `GET /api/v2/ofc/key/<keys[0]>`, decrypt the
//!    user key and sign locally; without one ask BitGo to sign (`POST …/tx/sign`). A decrypted
//!    key stays unlocked (checked against a keyed hash of its passphrase) until it is idle for
//!    the key cache's TTL, so a warm request runs no KDF; with `--metadata-cache-ttl` the wallet
//!    and keychain documents are also reused per token for that long (no upstream call).
//! 4. Respond `{"payload": <payload string>, "signature": <hex>}`.

use std::sync::Arc;

use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::Response;
use zeroize::Zeroizing;

use crate::error::{ApiError, json_response};
use crate::js_json::{JsString, JsValue};
use crate::keys;
use crate::keys::keystore::KeyStore;
use crate::keys::unlocked::{Unlock, UnlockedKey};
use crate::message_sign::sign_message_hex;
use crate::routes::validation::decode_sign_payload;
use crate::routes::{Caller, TypedBody};
use crate::server::AppState;
use crate::upstream::client::encode_path_segment;
use crate::upstream::external_signer::ExternalSigner;
use crate::upstream::metadata_cache::MetadataKey;

/// `{"payload": …, "signature": …}` with V8's string escaping; an undefined signature (a remote
/// signer that answered without one) is omitted, as `JSON.stringify` does.
pub fn response_body(payload: &JsString, signature: Option<&JsValue>) -> String {
    let mut out = String::with_capacity(payload.as_wtf8_bytes().len() + 160);
    out.push_str("{\"payload\":");
    payload.write_json(&mut out);
    if let Some(signature) = signature {
        out.push_str(",\"signature\":");
        signature.write_json(&mut out);
    }
    out.push('}');
    out
}

/// Serves the route in normal mode (spec §1.4).
pub async fn handle(
    state: &AppState,
    parts: &Parts,
    body: &mut TypedBody,
) -> Result<Response, ApiError> {
    let request = decode_sign_payload(&body.value)?;
    let caller = Caller::from_headers(&parts.headers);
    let wallet_id = request.wallet_id.to_utf8_lossy().into_owned();
    let signed = sign_with_wallet(
        state,
        &caller,
        &wallet_id,
        request.wallet_passphrase,
        &request.payload,
    )
    .await?;
    audited_response(state, parts, &wallet_id, &request.payload, &signed).await
}

/// A signature made for a trading account, and what the audit log says about it.
pub struct WalletSignature {
    /// The signature (BitGo's remote signature is returned as it came, possibly absent).
    pub signature: Option<JsValue>,
    /// The wallet's enterprise, as BitGo reported it.
    pub enterprise: Option<String>,
    /// `signed` (the user key, here) or `bitgo-signed` (BitGo's key, remotely).
    pub outcome: &'static str,
}

impl WalletSignature {
    /// The audit fields this signature contributes.
    pub fn audit_entry(&self, wallet_id: &str, payload: &JsString) -> crate::server::AuditEntry {
        crate::server::AuditEntry {
            wallet_id: wallet_id.to_string(),
            enterprise: self.enterprise.clone(),
            payload: payload.to_utf8_lossy().into_owned(),
            signature: self.signature.as_ref().map(|s| match s {
                JsValue::String(text) => text.to_utf8_lossy().into_owned(),
                other => other.to_json(),
            }),
            outcome: self.outcome.to_string(),
        }
    }
}

/// Spec §1.4 steps 1–5 for any payload string: the wallet with the caller's token, the passphrase
/// (given, else `WALLET_<id>_PASSPHRASE` keyed by the id BitGo returned), then the user key
/// signs locally or — without a passphrase — BitGo signs.
pub async fn sign_with_wallet(
    state: &AppState,
    caller: &Caller,
    wallet_id: &str,
    passphrase: Option<Zeroizing<String>>,
    payload: &JsString,
) -> Result<WalletSignature, ApiError> {
    let wallet_path = format!("/api/v2/ofc/wallet/{}", encode_path_segment(wallet_id));
    let wallet = fetch_wallet(state, caller, &wallet_path, wallet_id).await?;
    let env_wallet_id = wallet
        .get("id")
        .and_then(JsValue::as_str)
        .unwrap_or(wallet_id);
    let passphrase = passphrase.or_else(|| {
        let from_env = state.passphrases.get(env_wallet_id)?;
        Some(Zeroizing::new(from_env.to_string()))
    });
    let enterprise = wallet
        .get("enterprise")
        .and_then(JsValue::as_str)
        .map(str::to_string);
    match passphrase.filter(|p| !p.is_empty()) {
        None => Ok(WalletSignature {
            signature: sign_with_bitgo_key(state, caller, &wallet, &wallet_path, payload).await?,
            enterprise,
            outcome: "bitgo-signed",
        }),
        Some(passphrase) => {
            let key = unlock_user_key(state, caller, &wallet, passphrase).await?;
            let message = payload.to_utf8_lossy();
            Ok(WalletSignature {
                signature: Some(JsValue::from(sign_message_hex(
                    key.key(),
                    message.as_bytes(),
                ))),
                enterprise,
                outcome: "signed",
            })
        }
    }
}

/// Step 1: `GET /api/v2/ofc/wallet/<id>` with the caller's token — BitGo's authorization check
/// (reused for the metadata cache's TTL, for this token only).
async fn fetch_wallet(
    state: &AppState,
    caller: &Caller,
    wallet_path: &str,
    wallet_id: &str,
) -> Result<Arc<JsValue>, ApiError> {
    let (wallet, _) = fetch_document(state, caller, wallet_path, true).await?;
    if matches!(*wallet, JsValue::Object(_)) {
        Ok(wallet)
    } else {
        let key = MetadataKey::new(caller.token.as_ref(), wallet_path);
        state.metadata.remove(&key);
        Err(ApiError::api_response(
            StatusCode::NOT_FOUND,
            format!("Could not find OFC wallet {wallet_id}"),
        ))
    }
}

/// A GET of a wallet or keychain document with the caller's token: from the metadata cache when
/// this token fetched it within the TTL (`true`), else from BitGo (`false`).
async fn fetch_document(
    state: &AppState,
    caller: &Caller,
    path: &str,
    with_request_id: bool,
) -> Result<(Arc<JsValue>, bool), ApiError> {
    let key = MetadataKey::new(caller.token.as_ref(), path);
    if let Some(document) = state.metadata.get(&key) {
        state.metrics.metadata_cache(true);
        return Ok((document, true));
    }
    state.metrics.metadata_cache(false);
    let mut request = caller.upstream(Method::GET, path);
    if with_request_id {
        // The id the server gave this request (the client's own when it sent one).
        let request_id = caller.request_id.clone().or_else(|| {
            HeaderValue::from_str(&crate::routes::request_id(&http::HeaderMap::new())).ok()
        });
        if let Some(request_id) = request_id {
            request = request.header(http::HeaderName::from_static("request-id"), request_id);
        }
    }
    let document = Arc::new(state.upstream.send(request).await?.json());
    state.metadata.insert(key, document.clone());
    Ok((document, false))
}

fn wallet_keys(wallet: &JsValue) -> &[JsValue] {
    wallet
        .get("keys")
        .and_then(JsValue::as_array)
        .unwrap_or_default()
}

/// Step 4, no passphrase: BitGo signs with its own key (`POST …/tx/sign`), if the wallet allows.
/// Its `signature` is returned as it is.
async fn sign_with_bitgo_key(
    state: &AppState,
    caller: &Caller,
    wallet: &JsValue,
    wallet_path: &str,
    payload: &JsString,
) -> Result<Option<JsValue>, ApiError> {
    // `coinSpecific.userKeySigningRequired ?? userKeySigningRequired ?? true`
    let user_key_signing_required = wallet
        .get("coinSpecific")
        .and_then(|c| c.get("userKeySigningRequired"))
        .filter(|v| !v.is_null())
        .or_else(|| {
            wallet
                .get("userKeySigningRequired")
                .filter(|v| !v.is_null())
        })
        .map(JsValue::is_truthy)
        .unwrap_or(true);
    if user_key_signing_required {
        return Err(ApiError::internal(
            "Wallet must use user key to sign ofc transaction, please provide the wallet passphrase, the private key, or visit your wallet settings page to configure one.",
        ));
    }
    if wallet_keys(wallet).len() < 2 {
        return Err(ApiError::internal(
            "Wallet does not support BitGo signing. Please reach out to support@bitgo.com to resolve this issue.",
        ));
    }
    let mut sign_body = String::from("{\"payload\":");
    payload.write_json(&mut sign_body);
    sign_body.push('}');
    let sign_path = format!("{wallet_path}/tx/sign");
    let signed = state
        .upstream
        .send(
            caller
                .upstream(Method::POST, &sign_path)
                .json_body(sign_body),
        )
        .await?
        .json();
    Ok(signed.get("signature").cloned())
}

/// Step 5, with a passphrase: `GET /api/v2/ofc/key/<keys[0]>`, then the key of its
/// `encryptedPrv` — unlocked before (a constant-time passphrase check) or decrypted now off the
/// executor. A keychain from the metadata cache that the passphrase does not open is fetched again
/// once (it may have been re-encrypted) before the answer is 401.
async fn unlock_user_key(
    state: &AppState,
    caller: &Caller,
    wallet: &JsValue,
    passphrase: Zeroizing<String>,
) -> Result<Arc<UnlockedKey>, ApiError> {
    let key_id = wallet_keys(wallet)
        .first()
        .map(crate::routes::validation::shown)
        .ok_or_else(|| ApiError::internal("Cannot read properties of undefined (reading '0')"))?;
    let key_path = format!("/api/v2/ofc/key/{}", encode_path_segment(&key_id));
    let (keychain, cached) = fetch_document(state, caller, &key_path, false).await?;
    let envelope = encrypted_prv(&keychain)?;
    match unlock_envelope(state, &key_id, &envelope, passphrase.clone()).await {
        Err(error) if cached && error.status == StatusCode::UNAUTHORIZED => {
            state
                .metadata
                .remove(&MetadataKey::new(caller.token.as_ref(), &key_path));
            let (keychain, _) = fetch_document(state, caller, &key_path, false).await?;
            let fresh = encrypted_prv(&keychain)?;
            if *fresh == *envelope {
                return Err(error);
            }
            unlock_envelope(state, &key_id, &fresh, passphrase).await
        }
        result => result,
    }
}

/// The keychain's `encryptedPrv`, with the SDK's messages when it is missing or not a string.
fn encrypted_prv(keychain: &JsValue) -> Result<Zeroizing<String>, ApiError> {
    match keychain.get("encryptedPrv") {
        Some(JsValue::String(text)) if !text.is_empty() => {
            Ok(Zeroizing::new(text.to_utf8_lossy().into_owned()))
        }
        // `decryptAsync`'s parameter check of a non-string envelope.
        Some(value) if value.is_truthy() => Err(ApiError::internal(format!(
            "Expecting parameter string: input but found {}",
            value.type_of()
        ))),
        _ => Err(ApiError::internal(
            "Expected encryptedPrv to be present on user keychain.",
        )),
    }
}

/// The key of `envelope`: from the key cache (one derivation per envelope, however many requests
/// wait for it), or — cache disabled — derived for this request alone.
async fn unlock_envelope(
    state: &AppState,
    key_id: &str,
    envelope: &Zeroizing<String>,
    passphrase: Zeroizing<String>,
) -> Result<Arc<UnlockedKey>, ApiError> {
    let slot = state.key_cache.slot(key_id, envelope).unwrap_or_default();
    let tag = state.key_cache.tag(&passphrase);
    let envelope = envelope.to_string();
    let derive = || async move {
        let started = std::time::Instant::now();
        let xprv = state.kdf.decrypt(passphrase, envelope).await;
        state.metrics.kdf_time(started.elapsed());
        keys::signing_key(&xprv?)
    };
    let (key, outcome) = slot.unlock(tag, derive).await?;
    state.metrics.key_cache(outcome == Unlock::Hit);
    Ok(key)
}

/// Signer mode (spec §1.5): the key comes from the key file, unlocked once; no upstream call.
pub async fn handle_signer_mode(
    state: &AppState,
    store: &KeyStore,
    parts: &Parts,
    body: &mut TypedBody,
) -> Result<Response, ApiError> {
    let request = decode_sign_payload(&body.value)?;
    // Step 1: falsy payloads are refused in this mode.
    if !body.value.get("payload").is_some_and(JsValue::is_truthy) {
        return Err(ApiError::api_response(
            StatusCode::BAD_REQUEST,
            "Missing required field: payload",
        ));
    }
    let wallet_id = request.wallet_id.to_utf8_lossy().into_owned();
    // Step 2: a non-empty body passphrase, else the environment's.
    let passphrase = match request.wallet_passphrase.filter(|p| !p.is_empty()) {
        Some(passphrase) => passphrase,
        None => {
            let from_env = state.passphrases.get(&wallet_id).ok_or_else(|| {
                ApiError::internal(format!(
                    "Could not find wallet passphrase WALLET_{wallet_id}_PASSPHRASE in environment"
                ))
            })?;
            Zeroizing::new(from_env.to_string())
        }
    };
    // Steps 4–6: the key file entry, unlocked (once), signs.
    let key = store.unlock(&wallet_id, &passphrase).await?;
    let message = request.payload.to_utf8_lossy();
    let signature = JsValue::from(sign_message_hex(key.key(), message.as_bytes()));
    let signed = WalletSignature {
        signature: Some(signature),
        enterprise: None,
        outcome: "signed",
    };
    audited_response(state, parts, &wallet_id, &request.payload, &signed).await
}

/// The signature goes into the audit log (durably) before `{payload, signature}` is answered.
async fn audited_response(
    state: &AppState,
    parts: &Parts,
    wallet_id: &str,
    payload: &JsString,
    signed: &WalletSignature,
) -> Result<Response, ApiError> {
    state
        .audit(
            parts,
            "POST /api/v2/ofc/signPayload",
            &signed.audit_entry(wallet_id, payload),
        )
        .await?;
    Ok(json_response(
        StatusCode::OK,
        response_body(payload, signed.signature.as_ref()),
    ))
}

/// Forward mode (spec §1.3): `{walletId, payload}` goes to the external signer (the caller's
/// passphrase does not travel); its JSON answer comes back re-serialised with 200.
pub async fn handle_forward(
    signer: &ExternalSigner,
    body: &TypedBody,
) -> Result<Response, ApiError> {
    decode_sign_payload(&body.value)?;
    let wallet_id = body.value.get("walletId").cloned().unwrap_or(JsValue::Null);
    let payload = body.value.get("payload").cloned().unwrap_or(JsValue::Null);
    let answer = signer.sign(&wallet_id, &payload).await?;
    Ok(json_response(StatusCode::OK, answer.to_json()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::js_json::parse;

    fn error_of(body: &str) -> String {
        decode_sign_payload(&parse(body).unwrap())
            .unwrap_err()
            .message_text()
    }

    #[test]
    fn validation_table_of_spec_1_1() {
        assert_eq!(
            error_of("{}"),
            "Missing required field 'walletId'. Missing required field 'payload'."
        );
        assert_eq!(
            error_of(r#"{"walletId":"w"}"#),
            "Missing required field 'payload'."
        );
        assert_eq!(
            error_of(r#"{"walletId":"","payload":{}}"#),
            "Invalid value for 'walletId': expected NonEmptyString, got ''."
        );
        assert_eq!(
            error_of(r#"{"walletId":123,"payload":{}}"#),
            "Invalid value for 'walletId': expected NonEmptyString, got '123'."
        );
        assert_eq!(
            error_of(r#"{"walletId":null,"payload":{}}"#),
            "Invalid value for 'walletId': expected NonEmptyString, got 'null'."
        );
        assert_eq!(
            error_of(r#"{"walletId":["a"],"payload":{}}"#),
            r#"Invalid value for 'walletId': expected NonEmptyString, got '["a"]'."#
        );
        for (value, shown) in [("123", "123"), ("null", "null"), ("true", "true")] {
            assert_eq!(
                error_of(&format!(
                    r#"{{"walletId":"w","payload":1,"walletPassphrase":{value}}}"#
                )),
                format!("Invalid value for 'walletPassphrase': expected string, got '{shown}'.")
            );
        }
        assert_eq!(error_of("[]"), "");
    }

    #[test]
    fn payload_strings() {
        let decoded = |body: &str| decode_sign_payload(&parse(body).unwrap()).unwrap().payload;
        assert_eq!(
            decoded(r#"{"walletId":"w","payload":"hello world"}"#),
            "hello world"
        );
        assert_eq!(
            decoded(r#"{"walletId":"w","payload":{ "a": 1.50 }}"#),
            r#"{"a":1.5}"#
        );
        assert_eq!(decoded(r#"{"walletId":"w","payload":0}"#), "0");
        assert_eq!(decoded(r#"{"walletId":"w","payload":null}"#), "null");
        assert_eq!(
            response_body(&JsString::from("x\"y"), Some(&JsValue::from("ab"))),
            r#"{"payload":"x\"y","signature":"ab"}"#
        );
    }
}
