//! What a request brings, Express style: its route, its body (decoded only when it says it is
//! JSON), the caller's token and request id.

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;

use super::collapse_double_slashes;
use crate::error::{ApiError, Secrets};
use crate::js_json::{self, JsObject, JsValue};
use crate::upstream::client::UpstreamRequest;
use crate::upstream::hmac::AccessToken;

/// body-parser's `limit: '20mb'`: 20 971 520 bytes are accepted, one more is 413.
pub const BODY_LIMIT: usize = 20 * 1024 * 1024;

/// The routes this server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    SignPayload,
    Ping,
    PingExpress,
    Encrypt,
    Decrypt,
    /// Not a BitGo API path: 404 `bitgo-express can only proxy BitGo API requests`.
    NotApi,
    /// A BitGo API path Express would proxy upstream.
    Proxy,
    /// `GET /ofc-signer/health`: ofc-signer's own status route.
    Health,
    /// `GET /ofc-signer/live`: the process is serving.
    Live,
    /// `GET /ofc-signer/ready`: ready to sign (503 while starting or shutting down).
    Ready,
    /// `GET /metrics`: Prometheus text.
    Metrics,
}

impl Route {
    /// ofc-signer's own operational routes (not Express's; no secrets, not authenticated).
    pub fn is_admin(self) -> bool {
        matches!(
            self,
            Route::Health | Route::Live | Route::Ready | Route::Metrics
        )
    }

    /// The `route` label of the metrics.
    pub fn label(self) -> &'static str {
        match self {
            Route::SignPayload => "sign_payload",
            Route::Ping => "ping",
            Route::PingExpress => "ping_express",
            Route::Encrypt => "encrypt",
            Route::Decrypt => "decrypt",
            Route::NotApi => "not_api",
            Route::Proxy => "proxy",
            Route::Health => "health",
            Route::Live => "live",
            Route::Ready => "ready",
            Route::Metrics => "metrics",
        }
    }
}

/// Matches `method` + `path` (no query) against the route table, as Express does.
pub fn resolve(method: &Method, path: &str) -> Route {
    let path = collapse_double_slashes(path);
    let trimmed = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(&path);
    let lower = trimmed.to_ascii_lowercase();
    // Express answers HEAD with the GET route.
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    let typed = match (method, lower.as_str()) {
        (&Method::POST, "/api/v2/ofc/signpayload") => Some(Route::SignPayload),
        (&Method::GET, "/api/v1/ping" | "/api/v2/ping") => Some(Route::Ping),
        (&Method::GET, "/api/v1/pingexpress" | "/api/v2/pingexpress") => Some(Route::PingExpress),
        (&Method::POST, "/api/v1/encrypt" | "/api/v2/encrypt") => Some(Route::Encrypt),
        (&Method::POST, "/api/v1/decrypt" | "/api/v2/decrypt") => Some(Route::Decrypt),
        (&Method::GET, "/ofc-signer/health") => Some(Route::Health),
        (&Method::GET, "/ofc-signer/live") => Some(Route::Live),
        (&Method::GET, "/ofc-signer/ready") => Some(Route::Ready),
        (&Method::GET, "/metrics") => Some(Route::Metrics),
        _ => None,
    };
    // The catch-all proxy test `^/api` is case-sensitive (spec §5.1 route 9).
    typed.unwrap_or(
        if path.starts_with("/api") || path.starts_with("/oauth/token") {
            Route::Proxy
        } else {
            Route::NotApi
        },
    )
}

/// A decoded typed-route body and the secrets it carries (for error redaction).
pub struct TypedBody {
    pub value: JsValue,
    pub secrets: Secrets,
}

/// The caller's access token from `Authorization: Bearer <token>` (spec §0.2): exactly two parts
/// split on single spaces, the first `bearer` in any case; anything else means no token. Header
/// bytes are read as Latin-1, as Node does.
pub fn access_token(headers: &HeaderMap) -> Option<AccessToken> {
    let raw = headers.get(header::AUTHORIZATION)?;
    let text: String = raw.as_bytes().iter().map(|&b| b as char).collect();
    let mut parts = text.split(' ');
    let (scheme, token) = (parts.next()?, parts.next()?);
    if parts.next().is_some() || !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(AccessToken::new(token))
}

/// The request id: the client's `Request-ID` header when it sent a usable one, else a new one in
/// the SDK's format (`<20 hex>-0000`, what Express sends on the wallet GET).
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{}-0000", hex::encode(rand::random::<[u8; 10]>())))
}

/// The client's `User-Agent` (Latin-1), appended to ours upstream.
pub fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::USER_AGENT)
        .map(|v| v.as_bytes().iter().map(|&b| b as char).collect())
}

/// The caller's credentials as they travel upstream: the access token and the `User-Agent`
/// (appended to ours, as Express does), and the request id (sent where Express sends one). No
/// other client header is propagated on these routes.
#[derive(Debug, Default)]
pub struct Caller {
    pub token: Option<AccessToken>,
    pub user_agent: Option<String>,
    pub request_id: Option<HeaderValue>,
}

impl Caller {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Caller {
            token: access_token(headers),
            user_agent: user_agent(headers),
            request_id: headers.get("request-id").cloned(),
        }
    }

    /// An upstream request made on the caller's behalf.
    pub fn upstream<'a>(&'a self, method: Method, path: &'a str) -> UpstreamRequest<'a> {
        UpstreamRequest::new(method, path)
            .token(self.token.as_ref())
            .client_user_agent(self.user_agent.as_deref())
    }
}

/// What the `Content-Type` says about a body, per body-parser's json parser.
enum BodyKind {
    /// Not JSON (or no body): typed routes decode against `{}`.
    Ignored,
    Json,
    UnsupportedCharset(String),
}

fn body_kind(headers: &HeaderMap) -> BodyKind {
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| !v.trim().is_empty());
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return BodyKind::Ignored;
    };
    let mut params = content_type.split(';');
    let mime = params.next().unwrap_or("").trim().to_ascii_lowercase();
    if mime != "application/json" || !has_body {
        return BodyKind::Ignored;
    }
    for param in params {
        if let Some((name, value)) = param.split_once('=')
            && name.trim().eq_ignore_ascii_case("charset")
        {
            let charset = value.trim().trim_matches('"').to_ascii_lowercase();
            if charset != "utf-8" && charset != "utf8" {
                return BodyKind::UnsupportedCharset(charset.to_ascii_uppercase());
            }
        }
    }
    BodyKind::Json
}

/// Reads the whole body, at most [`BODY_LIMIT`] bytes (413 beyond, without reading further when
/// `Content-Length` already says so).
pub async fn read_body(parts: &Parts, body: Body) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::body_parser(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLargeError",
            "request entity too large",
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > BODY_LIMIT as u64) {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, BODY_LIMIT)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(ApiError::body_parser(
            StatusCode::BAD_REQUEST,
            "BadRequestError",
            "request aborted",
        )),
    }
}

/// Whether the request's `Content-Type` is JSON for body-parser (`application/json`, any case,
/// any parameters).
pub fn is_json_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
}

/// Reads and decodes a typed route's body like Express's global JSON parser (spec §0.1 step 3,
/// §0.1 step 7): JSON content types are parsed strictly, anything else decodes as `{}`.
pub async fn read_typed_body(parts: &Parts, body: Body) -> Result<TypedBody, ApiError> {
    let bytes = read_body(parts, body).await?;
    decode_typed_body(parts, &bytes)
}

/// Decodes an already read body (see [`read_typed_body`]).
pub fn decode_typed_body(parts: &Parts, bytes: &[u8]) -> Result<TypedBody, ApiError> {
    let kind = body_kind(&parts.headers);
    if let Some(encoding) = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
    {
        let encoding = encoding.trim().to_ascii_lowercase();
        if matches!(kind, BodyKind::Json) && encoding != "identity" {
            return Err(ApiError::body_parser(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaTypeError",
                format!("unsupported content encoding \"{encoding}\""),
            ));
        }
    }
    let value = match kind {
        BodyKind::Ignored => JsValue::Object(JsObject::new()),
        BodyKind::UnsupportedCharset(charset) => {
            return Err(ApiError::body_parser(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaTypeError",
                format!("unsupported charset \"{charset}\""),
            ));
        }
        BodyKind::Json => js_json::parse_body(bytes).map_err(|e| syntax_error(bytes, e))?,
    };
    let secrets = Secrets::from_request_body(&value);
    Ok(TypedBody { value, secrets })
}

/// body-parser's `400 SyntaxError`. V8's "Unexpected token" message quotes up to 10 characters
/// on each side of the fault; when the body names a secret field (`walletPassphrase`, `prv`, …)
/// that excerpt could hold part of the secret, so it is withheld (a README difference).
fn syntax_error(body: &[u8], error: js_json::JsonError) -> ApiError {
    let message = if error.message.starts_with("Unexpected token '")
        && crate::error::mentions_sensitive_key(body)
    {
        "Unexpected token in JSON (excerpt withheld: the body has a secret field)".to_string()
    } else {
        error.message
    };
    ApiError::body_parser(StatusCode::BAD_REQUEST, "SyntaxError", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_like_express() {
        assert_eq!(
            resolve(&Method::POST, "/api/v2/ofc/signPayload"),
            Route::SignPayload
        );
        assert_eq!(
            resolve(&Method::POST, "/API/V2/OFC/SIGNPAYLOAD"),
            Route::SignPayload
        );
        assert_eq!(
            resolve(&Method::POST, "/api/v2/ofc/signPayload/"),
            Route::SignPayload
        );
        assert_eq!(
            resolve(&Method::POST, "/api//v2/ofc/signPayload"),
            Route::SignPayload
        );
        assert_eq!(
            resolve(&Method::GET, "/api/v2/ofc/signPayload"),
            Route::Proxy
        );
        assert_eq!(
            resolve(&Method::HEAD, "/api/v1/pingexpress"),
            Route::PingExpress
        );
        assert_eq!(resolve(&Method::GET, "/api/v2/ping"), Route::Ping);
        assert_eq!(resolve(&Method::POST, "/api/v2/decrypt"), Route::Decrypt);
        assert_eq!(resolve(&Method::GET, "/foo"), Route::NotApi);
        assert_eq!(resolve(&Method::GET, "/API/network/v1/x"), Route::NotApi);
        assert_eq!(resolve(&Method::GET, "/oauth/token"), Route::Proxy);
    }

    #[test]
    fn bearer_tokens_follow_express() {
        let token = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            access_token(&headers).map(|t| t.expose().to_string())
        };
        assert_eq!(token("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(token("BEARER t").as_deref(), Some("t"));
        assert_eq!(token("bearer  t"), None);
        assert_eq!(token("Basic abc"), None);
        assert_eq!(token("Bearer a b"), None);
    }
}
