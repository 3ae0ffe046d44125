//! The SDK `flows` vectors: the recorded BitGoAPI exchanges (GET wallet, GET key) are replayed by
//! a fake upstream that checks ofc-signer sends byte-identical authentication headers at the same
//! clock, answers with the recorded (HMAC-signed) responses, and the route returns the recorded
//! result — or the recorded failure (bad response HMAC, stale v3 response).

use std::sync::{Arc, Mutex};

use crate::common::*;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use ofc_signer::config::Env;
use ofc_signer::js_json::JsValue;
use ofc_signer::upstream::client::FixedClock;

/// The authentication headers that must match the recording exactly.
const AUTH_HEADERS: [&str; 4] = [
    "auth-timestamp",
    "authorization",
    "hmac",
    "bitgo-auth-version",
];

struct Replay {
    exchanges: Vec<JsValue>,
    next: Mutex<usize>,
    mismatches: Mutex<Vec<String>>,
}

async fn replay_exchange(State(replay): State<Arc<Replay>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let index = {
        let mut next = replay.next.lock().unwrap();
        *next += 1;
        *next - 1
    };
    let Some(exchange) = replay.exchanges.get(index) else {
        replay.mismatches.lock().unwrap().push(format!(
            "unexpected extra request {} {}",
            parts.method, parts.uri
        ));
        return (StatusCode::IM_A_TEAPOT, "unexpected").into_response();
    };
    let recorded = exchange.get("request").unwrap();
    let mut mismatch = Vec::new();
    if parts.method.as_str() != text(recorded, "method") {
        mismatch.push(format!(
            "method {} != {}",
            parts.method,
            text(recorded, "method")
        ));
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or_default();
    if path != text(recorded, "pathWithQuery") {
        mismatch.push(format!(
            "path {path} != {}",
            text(recorded, "pathWithQuery")
        ));
    }
    if body.as_ref() != text(recorded, "body").as_bytes() {
        mismatch.push("body differs".to_string());
    }
    let headers = recorded.get("headers").unwrap();
    for name in AUTH_HEADERS {
        let sent = parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("<missing>");
        let expected = text(headers, name);
        if sent != expected {
            mismatch.push(format!("{name}: sent {sent}, recorded {expected}"));
        }
    }
    if !mismatch.is_empty() {
        replay.mismatches.lock().unwrap().extend(mismatch);
    }
    let recorded = exchange.get("response").unwrap();
    let status = recorded
        .get("statusCode")
        .and_then(JsValue::as_f64)
        .unwrap() as u16;
    let mut response = (
        StatusCode::from_u16(status).unwrap(),
        text(recorded, "body"),
    )
        .into_response();
    for (name, value) in recorded
        .get("headers")
        .and_then(JsValue::as_object)
        .unwrap()
        .iter()
    {
        let value = value.as_str().unwrap();
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_str().unwrap().as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_flows_replay_byte_identical() {
    let flows = kind("flows");
    assert_eq!(flows.len(), 6);
    for flow in flows {
        let id = text(flow, "id");
        let replay = Arc::new(Replay {
            exchanges: flow
                .get("exchanges")
                .and_then(JsValue::as_array)
                .unwrap()
                .to_vec(),
            next: Mutex::new(0),
            mismatches: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .fallback(replay_exchange)
            .with_state(replay.clone());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        let clock = Arc::new(FixedClock::new(
            flow.get("clock").and_then(JsValue::as_f64).unwrap() as u64,
        ));
        let version =
            (flow.get("authVersion").and_then(JsValue::as_f64).unwrap() as u8).to_string();
        let env = Env::from_pairs([(
            format!("WALLET_{}_PASSPHRASE", text(flow, "walletId")),
            text(flow, "walletPassphrase"),
        )]);
        let signer = start_signer(&upstream, &["--authversion", &version], env, clock).await;
        let answer = post_json(
            &format!("{}/api/v2/ofc/signPayload", signer.url),
            text(flow, "rawBody"),
            Some(&text(flow, "token")),
        )
        .await;

        let mismatches = replay.mismatches.lock().unwrap().clone();
        assert!(
            mismatches.is_empty(),
            "{id}: upstream requests differ from the SDK's: {mismatches:#?}"
        );
        match flow.get("expectedResult") {
            Some(expected @ JsValue::Object(_)) => {
                assert_eq!(answer.status, 200, "{id}: {}", answer.body);
                assert_eq!(answer.json(), *expected, "{id}");
                assert_eq!(
                    *replay.next.lock().unwrap(),
                    2,
                    "{id}: GET wallet then GET key"
                );
            }
            _ => {
                // "invalid response HMAC (status 511)" / "server response outside … (status 511)"
                let sdk_error = text(flow, "sdkError");
                let (message, status) = sdk_error.rsplit_once(" (status ").unwrap();
                assert_eq!(
                    answer.status.to_string(),
                    status.trim_end_matches(')'),
                    "{id}: {}",
                    answer.body
                );
                assert_eq!(answer.field("message"), message, "{id}");
                assert_eq!(answer.field("name"), "ApiResponseError", "{id}");
                assert!(
                    answer.json().get("error").is_none(),
                    "{id}: 511 bodies have no error key"
                );
                let token = text(flow, "token");
                assert!(
                    !answer.body.contains(&token[..10]),
                    "{id}: no part of the token in the body"
                );
            }
        }
        server.abort();
    }
}
