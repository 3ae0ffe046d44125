//! The BitGo API client: one pooled HTTP client (keep-alive, rustls), every request carrying the
//! SDK's headers and the caller's HMAC authentication, every 2xx answer to an HMAC-signed request
//! verified, every failure turned into the error Express would render (spec §4, §5.3).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use crate::error::ApiError;
use crate::js_json::{self, JsObject, JsValue};
use crate::upstream::error_text::upstream_error_message;
use crate::upstream::hmac::{
    self, AccessToken, AuthVersion, ResponseCheckError, SignedResponse, subject_path,
};

/// The BitGo SDK version whose request protocol ofc-signer speaks (sent as `BitGo-SDK-Version`).
pub const SDK_PROTOCOL_VERSION: &str = "52.8.1";

/// Milliseconds since the epoch; injectable so tests can replay recorded exchanges.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that stands still (tests).
#[derive(Debug, Default)]
pub struct FixedClock(AtomicU64);

impl FixedClock {
    pub fn new(now_ms: u64) -> Self {
        FixedClock(AtomicU64::new(now_ms))
    }
    pub fn set(&self, now_ms: u64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// One request to BitGo.
pub struct UpstreamRequest<'a> {
    pub method: Method,
    /// Path and query as they go on the wire (already escaped; see [`encode_path_segment`]).
    pub path: &'a str,
    pub body: Option<Bytes>,
    pub content_type: Option<&'a str>,
    pub token: Option<&'a AccessToken>,
    /// The client's `User-Agent`, appended to ours as Express does.
    pub client_user_agent: Option<&'a str>,
    pub extra_headers: Vec<(HeaderName, HeaderValue)>,
}

impl<'a> UpstreamRequest<'a> {
    pub fn new(method: Method, path: &'a str) -> Self {
        UpstreamRequest {
            method,
            path,
            body: None,
            content_type: None,
            token: None,
            client_user_agent: None,
            extra_headers: Vec::new(),
        }
    }

    pub fn json_body(mut self, body: String) -> Self {
        self.body = Some(Bytes::from(body));
        self.content_type = Some("application/json");
        self
    }

    pub fn token(mut self, token: Option<&'a AccessToken>) -> Self {
        self.token = token;
        self
    }

    pub fn client_user_agent(mut self, user_agent: Option<&'a str>) -> Self {
        self.client_user_agent = user_agent;
        self
    }

    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.extra_headers.push((name, value));
        self
    }
}

/// An upstream answer after status and HMAC checks.
#[derive(Debug, Clone)]
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl UpstreamResponse {
    /// The body as superagent parses it: JSON when the response says it is JSON, else `{}`.
    pub fn json(&self) -> JsValue {
        parse_json_body(&self.headers, &self.body)
    }
}

fn is_json_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            let mime = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

fn parse_json_body(headers: &HeaderMap, body: &[u8]) -> JsValue {
    if !is_json_content_type(headers) || body.is_empty() {
        return JsValue::Object(JsObject::new());
    }
    js_json::parse(&String::from_utf8_lossy(body))
        .unwrap_or_else(|_| JsValue::Object(JsObject::new()))
}

/// The path and query as they go on the wire and into the HMAC subject: legacy `url.parse`
/// escaping ([`subject_path`]) plus percent-encoding of non-ASCII bytes, which the HTTP client
/// would otherwise encode after signing.
pub fn wire_path(path_and_query: &str) -> String {
    let escaped = subject_path(path_and_query);
    if escaped.is_ascii() {
        return escaped;
    }
    let mut out = String::with_capacity(escaped.len() + 16);
    for c in escaped.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    out
}

/// Whether the path part of `path_and_query` has a `.` or `..` segment (also percent-encoded),
/// which URL parsing would remove.
pub fn has_dot_segment(path_and_query: &str) -> bool {
    let path = path_and_query.split(['?', '#']).next().unwrap_or("");
    path.split('/').any(|segment| {
        let lower = segment.to_ascii_lowercase();
        matches!(
            lower.as_str(),
            "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."
        )
    })
}

/// Percent-encodes one path segment (everything but RFC 3986 unreserved characters), so a
/// `walletId` with `?`, `/` or spaces can never change the upstream URL (spec §11.12). The result
/// contains nothing legacy `url.parse` would escape, so it is signed exactly as sent.
pub fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The pooled BitGo API client.
#[derive(Clone)]
pub struct UpstreamClient {
    http: reqwest::Client,
    base_url: Arc<str>,
    auth_version: AuthVersion,
    clock: Arc<dyn Clock>,
    user_agent: Arc<str>,
    timeout: Duration,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("base_url", &self.base_url)
            .field("auth_version", &self.auth_version)
            .finish()
    }
}

/// Redirects as superagent follows them: at most [`MAX_REDIRECTS`], after which the last 3xx
/// answer is the answer (relayed by the proxy, an `ApiResponseError` elsewhere). One difference: a
/// URL already requested in the chain is never requested again, so a redirect loop cannot make a
/// request (a settlement POST answered `307` to itself, say) reach BitGo twice (spec §11.13).
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let seen = attempt.previous();
        if seen.len() > MAX_REDIRECTS || seen.contains(attempt.url()) {
            attempt.stop()
        } else {
            attempt.follow()
        }
    })
}

/// superagent's default `redirects(5)`.
const MAX_REDIRECTS: usize = 5;

/// What the client needs to know.
pub struct ClientSettings {
    pub base_url: String,
    pub auth_version: AuthVersion,
    pub timeout: Duration,
    pub clock: Arc<dyn Clock>,
    /// `BITGO_USE_PROXY`: an outbound HTTP(S) proxy for all upstream calls.
    pub proxy: Option<String>,
}

/// Makes `ring` the process-wide rustls provider (idempotent). Every TLS client and server of
/// ofc-signer uses it.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl UpstreamClient {
    pub fn new(settings: ClientSettings) -> Result<Self, String> {
        install_crypto_provider();
        let tls = crate::tls::client_config(None, None)?;
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(settings.timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .redirect(redirect_policy());
        builder = match &settings.proxy {
            Some(url) => builder.proxy(
                reqwest::Proxy::all(url).map_err(|e| format!("invalid BITGO_USE_PROXY: {e}"))?,
            ),
            None => builder.no_proxy(),
        };
        let http = builder
            .build()
            .map_err(|e| format!("HTTP client setup failed: {e}"))?;
        Ok(UpstreamClient {
            http,
            base_url: settings.base_url.trim_end_matches('/').into(),
            auth_version: settings.auth_version,
            clock: settings.clock,
            user_agent: format!(
                "ofc-signer/{} (BitGoExpress-compatible)",
                env!("CARGO_PKG_VERSION")
            )
            .into(),
            timeout: settings.timeout,
            metrics: None,
        })
    }

    /// Counts every call, its outcome and its duration in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn auth_version(&self) -> AuthVersion {
        self.auth_version
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Sends `request` and applies the SDK's `result()` semantics: 2xx answers to HMAC-signed
    /// requests are verified (511 otherwise), non-2xx answers become an `ApiResponseError` with the
    /// upstream status and body (spec §5.3), transport failures a 500 with Node's error `code`.
    pub async fn send(&self, request: UpstreamRequest<'_>) -> Result<UpstreamResponse, ApiError> {
        let response = self.exchange(&request).await?;
        if response.status.is_success() {
            Ok(response)
        } else {
            Err(upstream_status_error(&response))
        }
    }

    /// Sends `request` and returns any HTTP answer (verified when 2xx), for callers that relay
    /// upstream statuses themselves.
    pub async fn exchange(
        &self,
        request: &UpstreamRequest<'_>,
    ) -> Result<UpstreamResponse, ApiError> {
        let started = std::time::Instant::now();
        let result = self.exchange_unobserved(request).await;
        if let Some(metrics) = &self.metrics {
            let outcome = match &result {
                Ok(response) => match response.status.as_u16() {
                    200..=299 => "2xx",
                    300..=399 => "3xx",
                    400..=499 => "4xx",
                    _ => "5xx",
                },
                Err(error) if error.status == StatusCode::NETWORK_AUTHENTICATION_REQUIRED => {
                    "response_hmac"
                }
                Err(error) if error.status == StatusCode::BAD_REQUEST => "refused",
                Err(error) if error.code.as_deref() == Some("ECONNABORTED") => "timeout",
                Err(_) => "transport",
            };
            metrics.upstream(outcome, started.elapsed());
        }
        result
    }

    async fn exchange_unobserved(
        &self,
        request: &UpstreamRequest<'_>,
    ) -> Result<UpstreamResponse, ApiError> {
        if has_dot_segment(request.path) {
            // URL parsing would rewrite the path, so what is signed would not be what is sent.
            return Err(ApiError::api_response(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid upstream path {}: '.' and '..' segments are not allowed",
                    request.path
                ),
            ));
        }
        // What is signed is exactly what is sent (Express's non-ASCII mismatch is fixed).
        let path = wire_path(request.path);
        let url = format!("{}{}", self.base_url, path);
        let body = request.body.clone().unwrap_or_default();
        let timestamp = self.clock.now_ms();

        let mut headers = HeaderMap::new();
        if let Some(content_type) = request.content_type
            && let Ok(value) = HeaderValue::from_str(content_type)
        {
            headers.insert(http::header::CONTENT_TYPE, value);
        }
        for (name, value) in &request.extra_headers {
            headers.insert(name.clone(), value.clone());
        }
        headers.insert(
            "bitgo-sdk-version",
            HeaderValue::from_static(SDK_PROTOCOL_VERSION),
        );
        headers.insert(
            http::header::IF_MODIFIED_SINCE,
            HeaderValue::from_static("Mon, 26 Jul 1997 05:00:00 GMT"),
        );
        let user_agent = match request.client_user_agent {
            Some(client) => format!("{} {client}", self.user_agent),
            None => self.user_agent.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&user_agent) {
            headers.insert(http::header::USER_AGENT, value);
        }
        let method_name = request.method.as_str();
        for (name, value) in hmac::request_headers(
            self.auth_version,
            request.token,
            method_name,
            &path,
            &body,
            timestamp,
        )
        .0
        {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(name, value);
            }
        }

        let mut builder = self
            .http
            .request(request.method.clone(), &url)
            .headers(headers);
        if request.body.is_some() {
            builder = builder.body(body);
        }
        let response = builder
            .send()
            .await
            .map_err(|e| self.transport_error(&e, &url))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e, &url))?;
        let response = UpstreamResponse {
            status,
            headers,
            body,
        };

        // Spec §4.4: only 2xx answers to HMAC-signed requests are verified.
        if status.is_success()
            && let Some(token) = request.token.filter(|t| !t.is_legacy())
        {
            let header = |name: &str| response.headers.get(name).and_then(|v| v.to_str().ok());
            let signed = SignedResponse {
                method: method_name,
                path: &path,
                status: status.as_u16(),
                body: &response.body,
                timestamp: header("timestamp"),
                hmac: header("hmac"),
            };
            hmac::verify_response(self.auth_version, token, &signed, self.clock.now_ms())
                .map_err(response_check_error)?;
        }
        Ok(response)
    }

    /// Maps a transport failure to the Node error Express would render (500 with `code`).
    fn transport_error(&self, error: &reqwest::Error, url: &str) -> ApiError {
        let authority = reqwest::Url::parse(url)
            .ok()
            .map(|u| {
                format!(
                    "{}:{}",
                    u.host_str().unwrap_or(""),
                    u.port_or_known_default().unwrap_or(0)
                )
            })
            .unwrap_or_default();
        if error.is_timeout() {
            return ApiError::internal(format!(
                "Timeout of {}ms exceeded",
                self.timeout.as_millis()
            ))
            .with_code("ECONNABORTED");
        }
        let io_kind = std::iter::successors(std::error::Error::source(error), |e| e.source())
            .find_map(|e| e.downcast_ref::<std::io::Error>())
            .map(|e| e.kind());
        match io_kind {
            Some(std::io::ErrorKind::ConnectionRefused) => {
                ApiError::internal(format!("connect ECONNREFUSED {authority}"))
                    .with_code("ECONNREFUSED")
            }
            Some(std::io::ErrorKind::ConnectionReset) => {
                ApiError::internal("socket hang up").with_code("ECONNRESET")
            }
            _ if error.is_connect() => {
                let host = authority
                    .rsplit_once(':')
                    .map(|(h, _)| h)
                    .unwrap_or(&authority);
                let chain = format!("{error:?}");
                if chain.contains("dns error") || chain.contains("failed to lookup") {
                    ApiError::internal(format!("getaddrinfo ENOTFOUND {host}"))
                        .with_code("ENOTFOUND")
                } else {
                    ApiError::internal(format!("connect failed {authority}"))
                        .with_code("ECONNREFUSED")
                }
            }
            _ => ApiError::internal("socket hang up").with_code("ECONNRESET"),
        }
    }
}

/// `errFromResponse` (spec §5.3): status = upstream status, message = body `error` if truthy else
/// `<status>` + sanitised text, result = the parsed body.
pub fn upstream_status_error(response: &UpstreamResponse) -> ApiError {
    let body = response.json();
    let text = String::from_utf8_lossy(&response.body);
    let message = match body.get("error").filter(|e| e.is_truthy()) {
        Some(error) => error.clone(),
        None => JsValue::from(upstream_error_message(response.status.as_u16(), &text)),
    };
    ApiError {
        status: response.status,
        name: "ApiResponseError".into(),
        message,
        code: None,
        result: Some(Box::new(body)),
        redact_strings: true,
    }
}

/// 511 errors of the response check (spec §4.4), without any part of the token (§11.5).
fn response_check_error(error: ResponseCheckError) -> ApiError {
    let status = StatusCode::from_u16(511).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match error {
        ResponseCheckError::InvalidHmac {
            expected_hmac,
            received_hmac,
            hmac_input,
        } => {
            let mut result = JsObject::new();
            result.insert("expectedHmac", expected_hmac);
            if let Some(received) = received_hmac {
                result.insert("receivedHmac", received);
            }
            result.insert("hmacInput", hmac_input);
            ApiError::api_response(status, "invalid response HMAC")
                .with_result(JsValue::Object(result))
        }
        ResponseCheckError::OutsideWindow {
            timestamp,
            verification_time,
        } => {
            let mut result = JsObject::new();
            if let Some(timestamp) = timestamp {
                result.insert("timestamp", timestamp);
            }
            result.insert("verificationTime", verification_time as f64);
            ApiError::api_response(
                status,
                "server response outside response validity time window",
            )
            .with_result(JsValue::Object(result))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_fully_escaped() {
        assert_eq!(
            encode_path_segment("6407b22ec86799000706e578332735a3"),
            "6407b22ec86799000706e578332735a3"
        );
        assert_eq!(encode_path_segment("a/b?c d#é"), "a%2Fb%3Fc%20d%23%C3%A9");
        assert_eq!(
            subject_path(&format!(
                "/api/v2/ofc/wallet/{}",
                encode_path_segment("x'y{z}")
            )),
            "/api/v2/ofc/wallet/x%27y%7Bz%7D"
        );
    }

    #[test]
    fn wire_paths_are_what_is_signed() {
        assert_eq!(
            wire_path("/api/v2/ofc/wallet/w?q=é"),
            "/api/v2/ofc/wallet/w?q=%C3%A9"
        );
        assert_eq!(wire_path("/a b'c?x=\"y\"#frag"), "/a%20b%27c?x=%22y%22");
        assert_eq!(subject_path(&wire_path("/x/é?ü=1")), wire_path("/x/é?ü=1"));
    }

    #[test]
    fn dot_segments_are_detected() {
        assert!(has_dot_segment("/api/v2/ofc/wallet/.."));
        assert!(has_dot_segment("/api/v2/ofc/wallet/./x"));
        assert!(has_dot_segment(&format!(
            "/api/v2/ofc/wallet/{}",
            encode_path_segment("..")
        )));
        assert!(has_dot_segment("/a/%2E%2e/b?x=1"));
        assert!(!has_dot_segment("/api/v2/ofc/wallet/...?a=/../"));
        assert!(!has_dot_segment("/api/v2/ofc/wallet/a.b"));
    }

    #[test]
    fn upstream_errors_follow_the_sdk() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let response = UpstreamResponse {
            status: StatusCode::BAD_REQUEST,
            headers: headers.clone(),
            body: Bytes::from_static(br#"{"foo":"bar","message":"m1"}"#),
        };
        let error = upstream_status_error(&response);
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            error.message_text(),
            "400\n{\"foo\":\"bar\",\"message\":\"m1\"}"
        );
        let response = UpstreamResponse {
            status: StatusCode::NOT_FOUND,
            headers,
            body: Bytes::from_static(br#"{"error":{"x":1},"code":"E1"}"#),
        };
        assert_eq!(
            upstream_status_error(&response).message.to_json(),
            r#"{"x":1}"#
        );
        let response = UpstreamResponse {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        };
        let error = upstream_status_error(&response);
        assert_eq!(error.message_text(), "500");
        assert_eq!(error.result.map(|r| r.to_json()).as_deref(), Some("{}"));
    }
}
