//! Go Network routes (beyond Express): connection-key encryption (spec §5.4 with §11.1) and
//! sign-and-forward of partner settlements, client allocations/deallocations and client
//! connections, never submitted twice.
//!
//! A request that already carries `payload` and `signature` is forwarded unchanged. One that
//! carries neither is completed here: the canonical payload comes from BitGo's signing endpoint
//! (or, for connections, is `JSON.stringify` of the body), the trading account signs it exactly as
//! signPayload does, the signature is audited, the signed body is stored durably under the
//! request's idempotency key, and only then sent. A retry with the same key and content re-sends
//! the stored bytes or returns the stored answer; different content is `409`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{ApiError, Secrets};
use crate::js_json::{JsObject, JsString, JsValue};
use crate::routes::Caller;
use crate::routes::proxy::{self, ForwardBody, ProxyPlan, ProxyRoute};
use crate::routes::sign_payload::{WalletSignature, sign_with_wallet};
use crate::routes::validation::Messages;
use crate::server::{AppState, Signing};
use crate::store::idempotency::{Begin, Outcome, RequestKey};
use crate::upstream::client::UpstreamRequest;
use crate::upstream::client::{UpstreamResponse, upstream_status_error};

/// The routes ofc-signer can sign for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedRoute {
    /// `POST /api/network/v{1,2}/enterprises/:eid/partners/settlements`
    Settlement { version: u8 },
    /// `POST /api/network/v1/enterprises/:eid/clients/connections/:cid/allocations|deallocations`
    Allocation {
        connection_id: String,
        deallocation: bool,
    },
    /// `POST /api/network/v1/enterprises/:eid/clients/connections`
    Connection,
}

impl SignedRoute {
    fn name(&self) -> String {
        match self {
            SignedRoute::Settlement { version } => format!("partners/settlements v{version}"),
            SignedRoute::Allocation {
                connection_id,
                deallocation: false,
            } => {
                format!("clients/connections/{connection_id}/allocations")
            }
            SignedRoute::Allocation {
                connection_id,
                deallocation: true,
            } => {
                format!("clients/connections/{connection_id}/deallocations")
            }
            SignedRoute::Connection => "clients/connections".to_string(),
        }
    }
}

/// Which signed route `plan` is, if any (POST only; case-insensitive, trailing slash allowed).
pub fn classify(method: &Method, plan: &ProxyPlan) -> Option<(SignedRoute, String)> {
    if method != Method::POST {
        return None;
    }
    let enterprise_id = plan.enterprise_id.clone()?;
    if plan.route == ProxyRoute::Connections {
        return Some((SignedRoute::Connection, enterprise_id));
    }
    let path = plan.upstream_path.split('?').next().unwrap_or("");
    let path = path.strip_suffix('/').unwrap_or(path).to_ascii_lowercase();
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        [
            "",
            "api",
            "network",
            version @ ("v1" | "v2"),
            "enterprises",
            _,
            "partners",
            "settlements",
        ] => Some((
            SignedRoute::Settlement {
                version: if *version == "v2" { 2 } else { 1 },
            },
            enterprise_id,
        )),
        [
            "",
            "api",
            "network",
            "v1",
            "enterprises",
            _,
            "clients",
            "connections",
            _,
            kind @ ("allocations" | "deallocations"),
        ] => {
            // The connection id as sent (not lower-cased).
            let original: Vec<&str> = plan
                .upstream_path
                .split('?')
                .next()
                .unwrap_or("")
                .split('/')
                .collect();
            let connection_id = original.get(8).copied().unwrap_or_default().to_string();
            Some((
                SignedRoute::Allocation {
                    connection_id,
                    deallocation: *kind == "deallocations",
                },
                enterprise_id,
            ))
        }
        _ => None,
    }
}

/// Serialises sign-and-forward requests with the same idempotency key within this process.
#[derive(Default)]
pub struct KeyLocks(Mutex<HashMap<RequestKey, Arc<tokio::sync::Mutex<()>>>>);

impl KeyLocks {
    fn lock_for(&self, key: &RequestKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.clone()).or_default().clone()
    }

    fn release(&self, key: &RequestKey, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // The map's reference and ours: nobody else is waiting for this key.
        if Arc::strong_count(&lock) <= 2 {
            map.remove(key);
        }
    }
}

/// Adds the failed step's name to an error's body (`"step": …`), keeping Express's rendering.
fn at_step(mut error: ApiError, step: &str) -> ApiError {
    let mut base = match error.result.take().map(|r| *r) {
        Some(JsValue::Object(object)) => object,
        _ => {
            let mut object = JsObject::new();
            let message = if error.message.is_truthy() {
                error.message.clone()
            } else {
                JsValue::from("local error")
            };
            object.insert("error", message);
            object
        }
    };
    base.insert("step", step);
    error.result = Some(Box::new(JsValue::Object(base)));
    error
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::api_response(StatusCode::BAD_REQUEST, message)
}

/// The whole route: connection-key encryption when asked, then passthrough or sign-and-forward.
pub async fn handle(
    state: &AppState,
    parts: &Parts,
    plan: &ProxyPlan,
    route: SignedRoute,
    enterprise_id: &str,
    mut body: ForwardBody,
) -> Response {
    let secrets = std::mem::take(&mut body.secrets);
    match handle_inner(state, parts, plan, route, enterprise_id, body).await {
        Ok(response) => response,
        Err(error) => error.render(&secrets),
    }
}

async fn handle_inner(
    state: &AppState,
    parts: &Parts,
    plan: &ProxyPlan,
    route: SignedRoute,
    enterprise_id: &str,
    body: ForwardBody,
) -> Result<Response, ApiError> {
    let Some(mut object) = body.value.as_object().cloned() else {
        return forward_as_is(state, parts, plan, &body).await;
    };
    let mut body = body;
    if route == SignedRoute::Connection && object.get("encrypt") == Some(&JsValue::Bool(true)) {
        encrypt_connection_key(state, parts, enterprise_id, &mut object).await?;
        // The plaintext never goes upstream: the modified JSON is sent (spec §11.1).
        body.bytes = Some(Bytes::from(JsValue::Object(object.clone()).to_json()));
        body.content_type = Some("application/json".to_string());
    }
    if object.contains_key("payload") || object.contains_key("signature") {
        return forward_as_is(state, parts, plan, &body).await;
    }
    sign_and_forward(state, parts, plan, route, enterprise_id, object).await
}

async fn forward_as_is(
    state: &AppState,
    parts: &Parts,
    plan: &ProxyPlan,
    body: &ForwardBody,
) -> Result<Response, ApiError> {
    let response = proxy::forward(state, parts, plan, body).await?;
    Ok(proxy::relay(&response, &body.secrets))
}

/// Spec §5.4 with §11.1: looks the partner up by `partnerId` and encrypts the `connectionKey`
/// fields of its schema with the partner's RSA key (the SDK's RSA-OAEP + AES-GCM format).
async fn encrypt_connection_key(
    state: &AppState,
    parts: &Parts,
    enterprise_id: &str,
    object: &mut JsObject,
) -> Result<(), ApiError> {
    let partner_id = object
        .get("partnerId")
        .filter(|p| p.is_truthy())
        .cloned()
        .ok_or_else(|| bad_request("Missing required field: partnerId"))?;
    let partner_id_text = match &partner_id {
        JsValue::String(s) => s.to_utf8_lossy().into_owned(),
        other => other.to_json(),
    };
    let caller = Caller::from_headers(&parts.headers);
    let path = format!("/api/network/v1/enterprises/{enterprise_id}/partners");
    let mut lookup = JsObject::new();
    lookup.insert("ids", JsValue::Array(vec![partner_id.clone()]));
    let partners = enterprise_call(
        state,
        caller.upstream(Method::GET, &path),
        enterprise_id,
        JsValue::Object(lookup),
        "partner lookup",
    )
    .await?;
    let list = partners
        .get("partners")
        .and_then(JsValue::as_array)
        .ok_or_else(|| {
            let mut error =
                ApiError::internal("Cannot read properties of undefined (reading 'find')");
            error.name = "TypeError".into();
            error
        })?;
    let partner = list
        .iter()
        .find(|p| p.get("id") == Some(&partner_id))
        .ok_or_else(|| {
            bad_request(format!(
                "Partner not found for partnerId: {partner_id_text}"
            ))
        })?;
    let public_key = partner
        .get("publicKey")
        .and_then(JsValue::as_str)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| bad_request("Partner does not require encryption"))?
        .to_string();
    let Some(JsValue::Object(connection_key)) = object.get_mut("connectionKey") else {
        return Ok(());
    };
    let fields: &[&str] = match connection_key.get("schema").and_then(JsValue::as_str) {
        Some("token") => &["connectionToken"],
        Some("tokenAndSignature") => &["connectionToken", "signature"],
        Some("apiKeyAndSecret" | "clearloop") => &["apiKey", "apiSecret"],
        _ => &[],
    };
    for field in fields {
        let Some(plaintext) = connection_key.get(field).and_then(JsValue::as_js_string) else {
            continue;
        };
        let plaintext = Zeroizing::new(plaintext.to_utf8_lossy().into_owned());
        let key = public_key.clone();
        // PBKDF2 × 200 000 per field: off the executor.
        let encrypted = state
            .kdf
            .run(move || crate::network_crypto::encrypt_for_partner(&key, &plaintext))
            .await?
            .map_err(|e| at_step(ApiError::internal(e.to_string()), "encryption"))?;
        connection_key.insert(*field, encrypted);
    }
    Ok(())
}

/// The request's own content, for the idempotency check (the passphrase is not part of it).
fn content_hash(route: &SignedRoute, wallet_id: &str, fields: &JsObject) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(route.name().as_bytes());
    hasher.update([0]);
    hasher.update(wallet_id.as_bytes());
    hasher.update([0]);
    hasher.update(JsValue::Object(fields.clone()).to_json().as_bytes());
    hasher.finalize().into()
}

fn random_nonce() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn text_field(object: &JsObject, key: &str) -> Option<String> {
    object
        .get(key)
        .and_then(JsValue::as_js_string)
        .map(|s| s.to_utf8_lossy().into_owned())
}

async fn sign_and_forward(
    state: &AppState,
    parts: &Parts,
    plan: &ProxyPlan,
    route: SignedRoute,
    enterprise_id: &str,
    mut fields: JsObject,
) -> Result<Response, ApiError> {
    // The trading account and its passphrase never travel upstream. Given with the wrong type,
    // they are refused as signPayload refuses them, never silently replaced.
    let wallet_field = fields.remove("walletId");
    let passphrase_field = fields.remove("walletPassphrase");
    let mut messages = Messages::default();
    if let Some(other) = wallet_field
        .as_ref()
        .filter(|v| !matches!(v, JsValue::String(id) if !id.is_empty()))
    {
        messages.invalid("walletId", "NonEmptyString", other);
    }
    if let Some(other) = passphrase_field
        .as_ref()
        .filter(|v| !matches!(v, JsValue::String(_)))
    {
        messages.invalid("walletPassphrase", "string", other);
    }
    messages.finish().map_err(ApiError::validation)?;
    let wallet_id = match wallet_field {
        Some(JsValue::String(id)) => id.to_utf8_lossy().into_owned(),
        _ => state.config.trading_accounts.get(enterprise_id).cloned().ok_or_else(|| {
            bad_request(format!(
                "walletId is required to sign this request (or configure --trading-account {enterprise_id}=<walletId>)"
            ))
        })?,
    };
    let passphrase = match passphrase_field {
        Some(JsValue::String(p)) => Some(Zeroizing::new(p.to_utf8_lossy().into_owned())),
        _ => None,
    };
    let hash = content_hash(&route, &wallet_id, &fields);

    // Fill what the client may leave out.
    match &route {
        SignedRoute::Settlement { version } => {
            if *version == 2 && !fields.contains_key("cutoffAt") {
                return Err(bad_request("cutoffAt is required for v2 settlements"));
            }
            if !fields.contains_key("nonce") {
                fields.insert("nonce", random_nonce());
            }
        }
        SignedRoute::Allocation { .. } => {
            if !fields.contains_key("clientExternalId") {
                fields.insert("clientExternalId", uuid::Uuid::new_v4().to_string());
            }
            if !fields.contains_key("nonce") {
                fields.insert("nonce", random_nonce());
            }
        }
        SignedRoute::Connection => {}
    }
    let key = match &route {
        SignedRoute::Settlement { .. } => Some(
            text_field(&fields, "externalId")
                .ok_or_else(|| bad_request("Missing required field: externalId"))?,
        ),
        SignedRoute::Allocation { .. } => text_field(&fields, "clientExternalId"),
        SignedRoute::Connection => None,
    }
    .map(|external_id| RequestKey {
        enterprise: enterprise_id.to_string(),
        route: route.name(),
        external_id,
    });

    let Some(key) = key else {
        let signed_body = sign(
            state,
            parts,
            enterprise_id,
            &route,
            &wallet_id,
            passphrase,
            fields,
        )
        .await?;
        return submit(state, parts, plan, &signed_body, None).await;
    };
    let store = state
        .idempotency
        .clone()
        .ok_or_else(|| ApiError::internal("sign-and-forward needs the idempotency store"))?;
    let lock = state.key_locks.lock_for(&key);
    let result = {
        let _guard = lock.lock().await;
        let existing = store
            .get(&key)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        match existing {
            Some(record) if record.content_hash != hash => Err(ApiError::api_response(
                StatusCode::CONFLICT,
                format!(
                    "{} {} was already signed with different content; use a new id for a different request",
                    match route {
                        SignedRoute::Settlement { .. } => "settlement externalId",
                        _ => "clientExternalId",
                    },
                    key.external_id
                ),
            )),
            Some(record) => match record.outcome {
                Outcome::Completed { status, body } => Ok(stored_answer(status, body)),
                // Sent before a crash or an upstream failure: re-send the very same bytes.
                Outcome::Pending => {
                    submit(
                        state,
                        parts,
                        plan,
                        &record.signed_body,
                        Some((&*store, &key)),
                    )
                    .await
                }
            },
            None => {
                let signed_body = sign(
                    state,
                    parts,
                    enterprise_id,
                    &route,
                    &wallet_id,
                    passphrase,
                    fields,
                )
                .await?;
                match store.begin(&key, hash, &signed_body, state.clock.now_ms()) {
                    Ok(Begin::Inserted) => {
                        submit(state, parts, plan, &signed_body, Some((&*store, &key))).await
                    }
                    Ok(Begin::Existing(_)) => {
                        Err(ApiError::internal("concurrent request for the same id"))
                    }
                    Err(error) => Err(ApiError::api_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        error.to_string(),
                    )),
                }
            }
        }
    };
    state.key_locks.release(&key, lock);
    result
}

/// The canonical payload, the signature (audited), and the body to send.
async fn sign(
    state: &AppState,
    parts: &Parts,
    enterprise_id: &str,
    route: &SignedRoute,
    wallet_id: &str,
    passphrase: Option<Zeroizing<String>>,
    mut fields: JsObject,
) -> Result<Vec<u8>, ApiError> {
    let caller = Caller::from_headers(&parts.headers);
    let payload = match route {
        SignedRoute::Connection => JsString::from(JsValue::Object(fields.clone()).to_json()),
        SignedRoute::Settlement { .. } => {
            let mut request = JsObject::new();
            for name in [
                "externalId",
                "notes",
                "settlementAmounts",
                "nonce",
                "cutoffAt",
            ] {
                if let Some(value) = fields.get(name) {
                    request.insert(name, value.clone());
                }
            }
            let path =
                format!("/api/network/v1/enterprises/{enterprise_id}/partners/settlements-signing");
            signing_payload(state, &caller, enterprise_id, &path, request).await?
        }
        SignedRoute::Allocation {
            connection_id,
            deallocation,
        } => {
            let kind = if *deallocation {
                "deallocations"
            } else {
                "allocations"
            };
            let path = format!(
                "/api/network/v1/enterprises/{enterprise_id}/clients/connections/{connection_id}/{kind}/signing"
            );
            signing_payload(state, &caller, enterprise_id, &path, fields.clone()).await?
        }
    };
    let signed = match &state.signing {
        Signing::Forward(signer) => {
            let answer = signer
                .sign(&JsValue::from(wallet_id), &JsValue::String(payload.clone()))
                .await
                .map_err(|e| at_step(e, "signature"))?;
            WalletSignature {
                signature: answer.get("signature").cloned(),
                enterprise: Some(enterprise_id.to_string()),
                outcome: "signed",
            }
        }
        _ => sign_with_wallet(state, &caller, wallet_id, passphrase, &payload)
            .await
            .map_err(|e| at_step(e, "signature"))?,
    };
    let signature = signed
        .signature
        .clone()
        .ok_or_else(|| at_step(ApiError::internal("no signature was produced"), "signature"))?;
    let mut entry = signed.audit_entry(wallet_id, &payload);
    entry.enterprise = Some(enterprise_id.to_string());
    state
        .audit(parts, &format!("POST {}", route.name()), &entry)
        .await?;
    fields.insert("payload", JsValue::String(payload));
    fields.insert("signature", signature);
    Ok(JsValue::Object(fields).to_json().into_bytes())
}

/// A JSON call to BitGo on an enterprise's behalf (`enterprise-id` header, as Express adds on
/// enterprise routes); its error names `step`.
async fn enterprise_call(
    state: &AppState,
    request: UpstreamRequest<'_>,
    enterprise_id: &str,
    body: JsValue,
    step: &str,
) -> Result<JsValue, ApiError> {
    let mut request = request.json_body(body.to_json());
    if let Ok(value) = HeaderValue::from_str(enterprise_id) {
        request = request.header(HeaderName::from_static("enterprise-id"), value);
    }
    Ok(state
        .upstream
        .send(request)
        .await
        .map_err(|e| at_step(e, step))?
        .json())
}

/// BitGo's canonical payload for a request (`POST …/signing`, answered `{"payload": "…"}`).
async fn signing_payload(
    state: &AppState,
    caller: &Caller,
    enterprise_id: &str,
    path: &str,
    request: JsObject,
) -> Result<JsString, ApiError> {
    let answer = enterprise_call(
        state,
        caller.upstream(Method::POST, path),
        enterprise_id,
        JsValue::Object(request),
        "signing payload",
    )
    .await?;
    answer
        .get("payload")
        .and_then(JsValue::as_js_string)
        .cloned()
        .ok_or_else(|| {
            at_step(
                ApiError::internal("BitGo's signing endpoint returned no payload string"),
                "signing payload",
            )
        })
}

/// Sends the signed body to the route the client called and records the outcome: an answer is
/// stored; a definitive rejection (4xx other than 409) forgets the request so a corrected retry
/// can proceed; a 5xx or a transport failure leaves it pending (a retry re-sends the same bytes).
async fn submit(
    state: &AppState,
    parts: &Parts,
    plan: &ProxyPlan,
    signed_body: &[u8],
    store: Option<(
        &dyn crate::store::idempotency::IdempotencyStore,
        &RequestKey,
    )>,
) -> Result<Response, ApiError> {
    let body = ForwardBody {
        bytes: Some(Bytes::copy_from_slice(signed_body)),
        content_type: Some("application/json".to_string()),
        value: JsValue::Null,
        secrets: Secrets::default(),
    };
    let response = proxy::forward(state, parts, plan, &body)
        .await
        .map_err(|e| at_step(e, "submission"))?;
    if let Some((store, key)) = store {
        let status = response.status.as_u16();
        let recorded = if response.status.is_success() || status == 409 {
            store.complete(key, status, &response.body)
        } else if response.status.is_client_error() {
            store.forget(key)
        } else {
            Ok(())
        };
        if let Err(error) = recorded {
            tracing::error!(%error, "could not record the upstream answer of a sign-and-forward request");
        }
    }
    Ok(relay_submission(&response))
}

fn relay_submission(response: &UpstreamResponse) -> Response {
    if response.status.is_success() {
        proxy::relay(response, &Secrets::default())
    } else {
        at_step(upstream_status_error(response), "submission").render(&Secrets::default())
    }
}

/// A stored upstream answer, replayed.
fn stored_answer(status: u16, body: Vec<u8>) -> Response {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let response = UpstreamResponse {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        headers,
        body: Bytes::from(body),
    };
    relay_submission(&response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(path: &str) -> ProxyPlan {
        proxy::plan(&Method::POST, path, false).unwrap()
    }

    #[test]
    fn classifies_the_signed_routes() {
        let classified = |path: &str| classify(&Method::POST, &plan_of(path));
        assert_eq!(
            classified("/api/network/v1/enterprises/E1/partners/settlements"),
            Some((SignedRoute::Settlement { version: 1 }, "E1".to_string()))
        );
        assert_eq!(
            classified("/api/network/v2/enterprises/E1/partners/settlements/?x=1"),
            Some((SignedRoute::Settlement { version: 2 }, "E1".to_string()))
        );
        assert_eq!(
            classified("/api/network/v1/enterprises/E1/clients/connections/Cx/deallocations"),
            Some((
                SignedRoute::Allocation {
                    connection_id: "Cx".into(),
                    deallocation: true
                },
                "E1".to_string()
            ))
        );
        assert_eq!(
            classified("/api/network/v1/enterprises/E1/clients/connections"),
            Some((SignedRoute::Connection, "E1".to_string()))
        );
        assert_eq!(
            classified("/api/network/v1/enterprises/E1/partners/settlements-signing"),
            None
        );
        assert_eq!(
            classify(
                &Method::GET,
                &plan_of("/api/network/v1/enterprises/E1/partners/settlements")
            ),
            None
        );
    }

    #[test]
    fn errors_name_their_step() {
        let error = at_step(ApiError::internal("boom"), "submission");
        let body = error.body(&Secrets::default()).to_json();
        assert!(
            body.starts_with(r#"{"error":"boom","step":"submission","message":"boom""#),
            "{body}"
        );
    }
}
