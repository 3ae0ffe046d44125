//! Express's generic proxy (spec §5.1–5.3): everything under `/api` (and `/oauth/token`) that is
//! not a local route goes to BitGo with the caller's token, the client's exact body bytes and
//! Content-Type, `x-bitgo-otp`, and `enterprise-id` on enterprise routes; BitGo's status and JSON
//! body come back.
//!
//! [`plan`] is the route table in Express's match order (`proxy_plan.rs`); [`forward`] sends.

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;

use crate::error::{ApiError, Secrets, json_response};
use crate::js_json::JsValue;
pub use crate::routes::proxy_plan::{NotProxied, ProxyPlan, ProxyRoute, hides_dot_segment, plan};
use crate::routes::{self, Caller};
use crate::server::AppState;
use crate::upstream::client::{UpstreamResponse, upstream_status_error};

/// The body sent upstream and its Content-Type (spec §5.2).
pub struct ForwardBody {
    pub bytes: Option<Bytes>,
    pub content_type: Option<String>,
    /// The parsed JSON (for redaction and for routes that look inside).
    pub value: JsValue,
    pub secrets: Secrets,
}

/// Reads the body as Express's proxy routes do: a missing Content-Type means JSON; JSON bodies
/// are validated (400/413/415) and sent as the client's exact bytes with its Content-Type; other
/// bodies are replaced by `{}` (`application/json`). GET and HEAD send nothing.
pub async fn read_forward_body(parts: &mut Parts, body: Body) -> Result<ForwardBody, ApiError> {
    if parts.method == Method::GET || parts.method == Method::HEAD {
        return Ok(ForwardBody {
            bytes: None,
            content_type: None,
            value: JsValue::Object(Default::default()),
            secrets: Secrets::default(),
        });
    }
    if !parts.headers.contains_key(header::CONTENT_TYPE) {
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    let has_body = parts.headers.contains_key(header::TRANSFER_ENCODING)
        || parts.headers.contains_key(header::CONTENT_LENGTH);
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let raw = routes::read_body(parts, body).await?;
    let typed = routes::decode_typed_body(parts, &raw)?;
    let is_json = routes::is_json_content_type(&parts.headers);
    let (bytes, content_type) = if has_body && is_json {
        (raw, content_type)
    } else {
        (
            Bytes::from_static(b"{}"),
            Some("application/json".to_string()),
        )
    };
    Ok(ForwardBody {
        bytes: Some(bytes),
        content_type,
        value: typed.value,
        secrets: typed.secrets,
    })
}

/// Sends a proxied request and renders BitGo's answer as Express does: the upstream status with
/// its JSON body re-serialised (`{}` for non-JSON), or the upstream error (spec §5.3).
pub async fn forward(
    state: &AppState,
    parts: &Parts,
    plan: &ProxyPlan,
    body: &ForwardBody,
) -> Result<UpstreamResponse, ApiError> {
    let caller = Caller::from_headers(&parts.headers);
    let mut request = caller.upstream(parts.method.clone(), &plan.upstream_path);
    request.body = body.bytes.clone();
    request.content_type = body.content_type.as_deref();
    if let Some(enterprise_id) = &plan.enterprise_id
        && let Ok(value) = HeaderValue::from_str(enterprise_id)
    {
        request = request.header(HeaderName::from_static("enterprise-id"), value);
    }
    if let Some(otp) = parts.headers.get("x-bitgo-otp") {
        request = request.header(HeaderName::from_static("x-bitgo-otp"), otp.clone());
    }
    state.upstream.exchange(&request).await
}

/// The client's answer for an upstream response.
pub fn relay(response: &UpstreamResponse, secrets: &Secrets) -> Response {
    if response.status.is_success()
        || response.status.is_informational()
        || response.status.is_redirection()
    {
        json_response(response.status, response.json().to_json())
    } else {
        upstream_status_error(response).render(secrets)
    }
}

/// The whole proxy route: plan, body, forward, relay.
pub async fn handle(state: &AppState, mut parts: Parts, body: Body) -> Response {
    let original = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let plan = match plan(&parts.method, &original, state.config.disable_proxy) {
        Ok(plan) => plan,
        Err(NotProxied::NotApi) => {
            return ApiError::api_response(
                StatusCode::NOT_FOUND,
                "bitgo-express can only proxy BitGo API requests",
            )
            .render(&Secrets::default());
        }
        Err(NotProxied::Disabled) => return cannot(&parts),
    };
    if hides_dot_segment(&plan.upstream_path) {
        return ApiError::api_response(
            StatusCode::BAD_REQUEST,
            format!(
                "invalid upstream path {}: '.' and '..' segments are not allowed",
                plan.upstream_path
            ),
        )
        .render(&Secrets::default());
    }
    if !matches!(
        parts.method,
        Method::GET
            | Method::HEAD
            | Method::POST
            | Method::PUT
            | Method::PATCH
            | Method::OPTIONS
            | Method::DELETE
    ) {
        return cannot(&parts);
    }
    let body = match read_forward_body(&mut parts, body).await {
        Ok(body) => body,
        Err(error) => return error.render(&Secrets::default()),
    };
    if let Some((route, enterprise_id)) = crate::routes::network::classify(&parts.method, &plan) {
        return crate::routes::network::handle(state, &parts, &plan, route, &enterprise_id, body)
            .await;
    }
    match forward(state, &parts, &plan, &body).await {
        Ok(response) => relay(&response, &body.secrets),
        Err(error) => error.render(&body.secrets),
    }
}

/// Express's default 404 for an unrouted request (as a JSON error body).
pub fn cannot(parts: &Parts) -> Response {
    ApiError::api_response(
        StatusCode::NOT_FOUND,
        format!("Cannot {} {}", parts.method, parts.uri.path()),
    )
    .render(&Secrets::default())
}
