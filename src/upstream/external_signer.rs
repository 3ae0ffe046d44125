//! Forward mode (spec §1.3): signPayload is sent to another signer (`--externalSignerUrl`), as
//! Express does: `POST <url>/api/v2/ofc/signPayload` with `{"walletId", "payload"}` (never the
//! caller's passphrase), retried only when the connection is refused — up to 3 attempts, waiting
//! `round((2^(k-1) + U[0,1)) × 1000)` ms before attempt k+1 — so a request is never sent twice.

use std::time::Duration;

use zeroize::Zeroizing;

use crate::auth::SIGNER_TOKEN_HEADER;
use crate::config::ExternalSignerConfig;
use crate::error::ApiError;
use crate::js_json::{self, JsObject, JsValue};

/// How many times a refused connection is tried.
const MAX_ATTEMPTS: u32 = 3;

/// The external signer client.
pub struct ExternalSigner {
    http: reqwest::Client,
    endpoint: String,
    token: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for ExternalSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalSigner")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// The wait before attempt `attempt + 1` after `attempt` was refused.
fn backoff(attempt: u32) -> Duration {
    let jitter: f64 = rand::random();
    let seconds = f64::from(2u32.pow(attempt.saturating_sub(1))) + jitter;
    Duration::from_millis((seconds * 1000.0).round() as u64)
}

/// Whether a transport error is a refused connection (the request never left).
fn is_refused(error: &reqwest::Error) -> bool {
    std::iter::successors(std::error::Error::source(error), |e| e.source())
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
}

impl ExternalSigner {
    pub fn new(config: &ExternalSignerConfig, timeout: Duration) -> Result<Self, String> {
        crate::upstream::client::install_crypto_provider();
        let identity = config
            .client_identity
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()));
        let tls = crate::tls::client_config(config.ca.as_deref(), identity)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(timeout)
            .no_proxy()
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("external signer client setup failed: {e}"))?;
        Ok(ExternalSigner {
            http,
            endpoint: format!("{}/api/v2/ofc/signPayload", config.url),
            token: config.token.clone(),
        })
    }

    /// Forwards `{walletId, payload}` and returns the signer's JSON body.
    pub async fn sign(&self, wallet_id: &JsValue, payload: &JsValue) -> Result<JsValue, ApiError> {
        let mut body = JsObject::new();
        body.insert("walletId", wallet_id.clone());
        body.insert("payload", payload.clone());
        let body = JsValue::Object(body).to_json();
        let mut attempt = 1;
        let response = loop {
            let mut request = self
                .http
                .post(&self.endpoint)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(token) = &self.token {
                request = request.header(SIGNER_TOKEN_HEADER, token.as_str());
            }
            match request.send().await {
                Ok(response) => break response,
                Err(error) if is_refused(&error) => {
                    tracing::debug!(attempt, "external signer refused the connection");
                    if attempt >= MAX_ATTEMPTS {
                        return Err(ApiError::internal(format!(
                            "giving up after reaching max retry limit of {MAX_ATTEMPTS}"
                        )));
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(error) if error.is_timeout() => {
                    return Err(ApiError::internal("Response timeout").with_code("ECONNABORTED"));
                }
                Err(_) => return Err(ApiError::internal("socket hang up").with_code("ECONNRESET")),
            }
        };
        let status = response.status();
        if !status.is_success() {
            // superagent: the HTTP reason phrase, the signer's own body discarded.
            let reason = status.canonical_reason().unwrap_or("Unknown Error");
            return Err(ApiError::internal(reason).with_status(status));
        }
        let is_json = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
        let bytes = response
            .bytes()
            .await
            .map_err(|_| ApiError::internal("socket hang up").with_code("ECONNRESET"))?;
        if !is_json {
            return Ok(JsValue::Object(JsObject::new()));
        }
        js_json::parse(&String::from_utf8_lossy(&bytes))
            .map_err(|e| ApiError::internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_express() {
        for _ in 0..100 {
            let first = backoff(1).as_millis();
            let second = backoff(2).as_millis();
            assert!((1000..=2000).contains(&first), "{first}");
            assert!((2000..=3000).contains(&second), "{second}");
        }
    }
}
