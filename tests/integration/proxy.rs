//! The generic proxy (spec §5.1–5.3) against the sandbox BitGo: exact body bytes and
//! Content-Type, `x-bitgo-otp`, `enterprise-id`, URL rebuilding per route, methods, relayed
//! statuses and bodies, errors, `--disableproxy` — every request HMAC-verified by the sandbox.

use crate::common::*;
use ofc_signer::config::Env;
use ofc_signer::sandbox::{Fault, RecordedRequest};

async fn proxied() -> Setup {
    let setup = setup(&[], Env::default()).await;
    setup.sandbox.add_token(TOKEN);
    setup.sandbox.set_fault(Some(Fault::Respond {
        status: 201,
        content_type: "application/json".into(),
        body: r#"{ "b" : 2, "a" : 1.50 }"#.into(),
    }));
    setup
}

async fn send(
    setup: &Setup,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    let mut request = client()
        .request(
            method.parse().unwrap(),
            format!("{}{path}", setup.signer.url),
        )
        .header("authorization", format!("Bearer {TOKEN}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    answer(request.send().await.unwrap()).await
}

fn last(setup: &Setup) -> RecordedRequest {
    setup
        .sandbox
        .requests()
        .pop()
        .expect("a request reached the sandbox")
}

fn header(request: &RecordedRequest, name: &str) -> Option<String> {
    request
        .headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn bodies_go_up_byte_for_byte_and_answers_come_back_reserialised() {
    let setup = proxied().await;
    // Pre-signed (payload and signature present): forwarded as it is.
    let body =
        "{ \"externalId\" : \"ext-2\", \"payload\": \"p\", \"signature\": \"s\",\n  \"n\": 1.50 }";
    let answer = send(
        &setup,
        "POST",
        "/api/network/v1/enterprises/E1/partners/settlements?dryRun=true&b=2",
        &[
            ("content-type", "application/json; charset=UTF-8"),
            ("x-bitgo-otp", "000000"),
            ("cookie", "c=1"),
            ("x-custom", "1"),
        ],
        Some(body),
    )
    .await;
    assert_eq!(answer.status, 201);
    assert_eq!(answer.body, r#"{"b":2,"a":1.5}"#);
    assert_eq!(answer.content_type, "application/json; charset=utf-8");
    let request = last(&setup);
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.path,
        "/api/network/v1/enterprises/E1/partners/settlements?dryRun=true&b=2"
    );
    assert_eq!(request.body.as_ref(), body.as_bytes());
    assert_eq!(
        header(&request, "content-type").as_deref(),
        Some("application/json; charset=UTF-8")
    );
    assert_eq!(header(&request, "x-bitgo-otp").as_deref(), Some("000000"));
    assert_eq!(header(&request, "enterprise-id").as_deref(), Some("E1"));
    assert_eq!(header(&request, "cookie"), None);
    assert_eq!(header(&request, "x-custom"), None);
}

#[tokio::test]
async fn urls_per_route() {
    let setup = proxied().await;
    let cases = [
        ("/api/v2/user//me?x=a//b", "/api/v2/user/me?x=a//b"),
        (
            "/api/v2/user/a%2Fb?x=%20&y=%2F",
            "/api/v2/user/a/b?x=%20&y=%2F",
        ),
        ("/API/V2/USER/me?Q=1", "/api/v2/user/me?Q=1"),
        ("/api/v2/ofc/foo%2Fbar?x=1", "/api/v2/ofc/foo/bar?x=1"),
        ("/api/v2/ofc/wallet/x/", "/api/v2/ofc/wallet/x/"),
        (
            "/api/v1/wallet/w1?limit=2&limit=3",
            "/api/v1/wallet/w1?limit=2&limit=3",
        ),
        (
            "/api/network/v1/foo//bar?q=1//2",
            "/api/network/v1/foo//bar?q=1//2",
        ),
        (
            "/api/foo/v2/enterprises/E2/x%2Fy?z=1",
            "/api/foo/v2/enterprises/E2/x%2Fy?z=1",
        ),
        ("/oauth/token?a=1", "/oauth/token?a=1"),
        (
            "/api/v2/unknowncoin/foo%2Fx?a=1&a=2&b=x%20y",
            "/api/v2/unknowncoin/foo/x?a=1&a=2&b=x%20y",
        ),
    ];
    for (path, upstream) in cases {
        let answer = send(&setup, "GET", path, &[], None).await;
        assert_eq!(answer.status, 201, "{path}: {}", answer.body);
        let request = last(&setup);
        assert_eq!(request.path, upstream, "{path}");
        assert!(request.body.is_empty(), "GET sends no body");
    }
    assert_eq!(
        header(&setup.sandbox.requests()[7], "enterprise-id").as_deref(),
        Some("E2")
    );
}

#[tokio::test]
async fn bodies_of_the_other_methods() {
    let setup = proxied().await;
    let path = "/api/v2/ofc/wallet/w/webhooks";
    // DELETE/OPTIONS/PATCH/PUT with a JSON body: those bytes.
    for method in ["DELETE", "OPTIONS", "PATCH", "PUT"] {
        let answer = send(
            &setup,
            method,
            path,
            &[("content-type", "application/json")],
            Some(r#"{ "k" : 1 }"#),
        )
        .await;
        assert_eq!(answer.status, 201, "{method}");
        let request = last(&setup);
        assert_eq!(
            (request.method.as_str(), request.body.as_ref()),
            (method, br#"{ "k" : 1 }"#.as_slice())
        );
    }
    // A body-less DELETE sends `{}` as JSON.
    send(&setup, "DELETE", path, &[], None).await;
    let request = last(&setup);
    assert_eq!(request.body.as_ref(), b"{}");
    assert_eq!(
        header(&request, "content-type").as_deref(),
        Some("application/json")
    );
    // Content-Length: 0 sends an empty body.
    send(
        &setup,
        "DELETE",
        path,
        &[
            ("content-type", "application/json"),
            ("content-length", "0"),
        ],
        Some(""),
    )
    .await;
    assert_eq!(last(&setup).body.as_ref(), b"");
    // A text/plain PUT sends `{}` as JSON.
    send(
        &setup,
        "PUT",
        path,
        &[("content-type", "text/plain")],
        Some("hello"),
    )
    .await;
    let request = last(&setup);
    assert_eq!(request.body.as_ref(), b"{}");
    assert_eq!(
        header(&request, "content-type").as_deref(),
        Some("application/json")
    );
    // A POST without Content-Type: the raw bytes, as JSON.
    let request = client()
        .post(format!("{}{path}", setup.signer.url))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body("[1, 2]");
    assert_eq!(answer(request.send().await.unwrap()).await.status, 201);
    let request = last(&setup);
    assert_eq!(request.body.as_ref(), b"[1, 2]");
    assert_eq!(
        header(&request, "content-type").as_deref(),
        Some("application/json")
    );
    // HEAD is forwarded as HEAD.
    let head = client()
        .head(format!("{}{path}", setup.signer.url))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 201);
    assert_eq!(last(&setup).method, "HEAD");
    // Malformed JSON is refused before anything is sent.
    setup.sandbox.clear_requests();
    let answer = send(
        &setup,
        "POST",
        path,
        &[("content-type", "application/json")],
        Some("{oops"),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert!(setup.sandbox.requests().is_empty());
}

#[tokio::test]
async fn upstream_answers_and_errors() {
    let setup = proxied().await;
    // A non-JSON 2xx body becomes `{}`.
    setup.sandbox.set_fault(Some(Fault::Respond {
        status: 200,
        content_type: "text/plain".into(),
        body: "hello text".into(),
    }));
    let answer = send(&setup, "GET", "/api/v2/user/me", &[], None).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "{}"));
    // Upstream errors as the SDK renders them.
    setup.sandbox.set_fault(Some(Fault::Respond {
        status: 404,
        content_type: "application/json".into(),
        body: r#"{"error":"wallet not found","name":"WalletNotFound","requestId":"fake-33"}"#
            .into(),
    }));
    let answer = send(&setup, "GET", "/api/v2/ofc/wallet/nope", &[], None).await;
    assert_eq!(answer.status, 404);
    assert_eq!(
        answer.body,
        format!(
            r#"{{"error":"wallet not found","name":"ApiResponseError","requestId":"fake-33","message":"wallet not found",{}}}"#,
            versions()
        )
    );
    // A body whose keys happen to be `status` and `body` is relayed as it is (§11.12).
    setup.sandbox.set_fault(Some(Fault::Respond {
        status: 200,
        content_type: "application/json".into(),
        body: r#"{"status":418,"body":{"x":1}}"#.into(),
    }));
    let answer = send(&setup, "GET", "/api/v2/user/me", &[], None).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, r#"{"status":418,"body":{"x":1}}"#)
    );
    // Without a token, BitGo's 401 comes back.
    setup.sandbox.set_fault(None);
    let answer = answer_of(client().get(format!("{}/api/v2/user/me", setup.signer.url))).await;
    assert_eq!(answer.status, 401);
}

async fn answer_of(request: reqwest::RequestBuilder) -> Answer {
    answer(request.send().await.unwrap()).await
}

#[tokio::test]
async fn non_api_paths_and_disableproxy() {
    let setup = proxied().await;
    let answer = send(&setup, "GET", "/foo", &[], None).await;
    assert_eq!(answer.status, 404);
    assert_eq!(
        answer.field("message"),
        "bitgo-express can only proxy BitGo API requests"
    );
    let disabled = ofc_signer_with(&setup, &["--disableproxy"]).await;
    // Routes 3–7 still proxy; 8–9 do not.
    let answer = answer_of(
        client()
            .get(format!("{}/api/v2/user/me", disabled.url))
            .header("authorization", format!("Bearer {TOKEN}")),
    )
    .await;
    assert_eq!(answer.status, 201);
    let answer =
        answer_of(client().get(format!("{}/api/network/v1/enterprises/E1/x", disabled.url))).await;
    assert_eq!(answer.status, 404);
    assert_eq!(
        answer.field("message"),
        "Cannot GET /api/network/v1/enterprises/E1/x"
    );
}

async fn ofc_signer_with(setup: &Setup, args: &[&str]) -> Signer {
    start_signer(
        &setup.sandbox.url(),
        args,
        Env::default(),
        std::sync::Arc::new(ofc_signer::upstream::client::SystemClock),
    )
    .await
}

#[tokio::test]
async fn a_twenty_mebibyte_body_is_forwarded_intact() {
    let setup = proxied().await;
    let prefix = r#"{"blob":""#;
    let suffix = r#""}"#;
    let body = format!(
        "{prefix}{}{suffix}",
        "x".repeat(20 * 1024 * 1024 - prefix.len() - suffix.len())
    );
    let answer = send(
        &setup,
        "POST",
        "/api/v2/ofc/big",
        &[("content-type", "application/json")],
        Some(&body),
    )
    .await;
    assert_eq!(answer.status, 201);
    assert_eq!(last(&setup).body.len(), 20 * 1024 * 1024);
}
