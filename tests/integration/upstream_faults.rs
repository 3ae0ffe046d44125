//! Upstream faults (issue 6 item 4): every way BitGo can fail on the wire — refused, reset in
//! the middle of an answer, closed without one, a truncated body, silence beyond the timeout, a
//! 5xx page, a 2xx that is not JSON, a wrong response HMAC, redirect loops — against each kind of
//! upstream call: the wallet GET of signPayload, a proxied GET, a proxied POST, and the settlement
//! POST (and the signing-payload POST before it) of sign-and-forward.
//!
//! Between ofc-signer and the sandbox BitGo sits a fault-injecting proxy working on raw TCP: it
//! relays requests to the sandbox unchanged, except those for the path under test, which get the
//! fault. Every case must end in a defined Express-shaped error within the configured timeout,
//! and no request that is not idempotent (a POST) may reach the proxy twice.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use ofc_signer::config::Env;
use ofc_signer::sandbox::Sandbox;
use ofc_signer::upstream::client::SystemClock;
use ofc_signer::upstream::hmac::{
    AccessToken, AuthVersion, hmac_hex, response_subject, subject_path,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WALLET: &str = "fa000000000000000000000000000001";
const ENTERPRISE: &str = "fe0000000000000000000001";
const PASSPHRASE: &str = "fault matrix passphrase";
/// The signer's `--timeout` (inbound request and upstream calls).
const TIMEOUT_MS: u64 = 2000;
/// A case that has not answered by then hangs.
const HANG_BOUND: Duration = Duration::from_millis(TIMEOUT_MS + 8000);

/// What the proxy does to a request for the path under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Status line, headers and part of the body, then a TCP reset.
    ResetMidAnswer,
    /// The request is read, then the connection is closed with no answer.
    CloseWithoutAnswer,
    /// Headers promise 64 bytes of body, 10 come, then the connection closes.
    TruncatedBody,
    /// The request is read and never answered.
    Silence,
    /// `502` with an HTML page.
    BadGatewayPage,
    /// `200` with a correctly signed body that is not JSON.
    SignedNotJson,
    /// `200` JSON whose response HMAC is wrong.
    WrongHmac,
    /// `307` back to the very same URL (a POST stays a POST).
    Redirect307ToItself,
    /// `302` between two URLs forever.
    Redirect302Cycle,
}

const FAULTS: [Fault; 9] = [
    Fault::ResetMidAnswer,
    Fault::CloseWithoutAnswer,
    Fault::TruncatedBody,
    Fault::Silence,
    Fault::BadGatewayPage,
    Fault::SignedNotJson,
    Fault::WrongHmac,
    Fault::Redirect307ToItself,
    Fault::Redirect302Cycle,
];

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
}

#[derive(Default)]
struct ProxyState {
    /// The fault and the path (without query) it applies to.
    rule: Option<(Fault, String)>,
    seen: Vec<Seen>,
}

struct FaultProxy {
    port: u16,
    state: Arc<Mutex<ProxyState>>,
}

impl FaultProxy {
    async fn start(sandbox: std::net::SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, sandbox, port, shared.clone()));
            }
        });
        FaultProxy { port, state }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set(&self, rule: Option<(Fault, &str)>) {
        let mut state = self.state.lock().unwrap();
        state.rule = rule.map(|(fault, path)| (fault, path.to_string()));
        state.seen.clear();
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
}

/// Reads one request (head and `Content-Length` body); `None` when the peer went away first.
async fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = buffer[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((head, body))
}

/// A `200` answer to `method target` carrying `body`, signed as BitGo signs (auth v2) unless
/// `wrong_hmac`.
fn signed_200(
    method: &str,
    target: &str,
    content_type: &str,
    body: &str,
    wrong_hmac: bool,
) -> Vec<u8> {
    let timestamp = "1700000000000";
    let subject = response_subject(
        AuthVersion::V2,
        method,
        timestamp,
        &subject_path(target),
        200,
        body.as_bytes(),
    );
    let mut hmac = hmac_hex(&AccessToken::new(TOKEN), &subject);
    if wrong_hmac {
        hmac = hmac.chars().rev().collect();
    }
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nhmac: {hmac}\r\ntimestamp: {timestamp}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn serve(
    mut stream: TcpStream,
    sandbox: std::net::SocketAddr,
    port: u16,
    state: Arc<Mutex<ProxyState>>,
) {
    // One request per connection: every answer says `connection: close`.
    let Some((head, body)) = read_request(&mut stream).await else {
        return;
    };
    let mut request_line = head.lines().next().unwrap_or("").split(' ');
    let method = request_line.next().unwrap_or("").to_string();
    let target = request_line.next().unwrap_or("").to_string();
    let path = target.split('?').next().unwrap_or("").to_string();
    let fault = {
        let mut state = state.lock().unwrap();
        state.seen.push(Seen {
            method: method.clone(),
            target: target.clone(),
        });
        state
            .rule
            .as_ref()
            .and_then(|(fault, suffix)| path.ends_with(suffix.as_str()).then_some(*fault))
    };
    let partial = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 64\r\n\r\n{\"id\":\"12";
    match fault {
        None => {
            // Relay to the sandbox, asking it to close after answering.
            let mut up = TcpStream::connect(sandbox).await.unwrap();
            let mut relayed: String = head
                .trim_end()
                .lines()
                .filter(|line| !line.to_ascii_lowercase().starts_with("connection:"))
                .map(|line| format!("{line}\r\n"))
                .collect();
            relayed.push_str("connection: close\r\n\r\n");
            up.write_all(relayed.as_bytes()).await.unwrap();
            up.write_all(&body).await.unwrap();
            let mut answer = Vec::new();
            let _ = up.read_to_end(&mut answer).await;
            let _ = stream.write_all(&answer).await;
        }
        Some(Fault::ResetMidAnswer) => {
            let _ = stream.write_all(partial).await;
            let _ = stream.flush().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            // SO_LINGER 0: closing sends RST instead of FIN.
            let _ = stream.set_zero_linger();
        }
        Some(Fault::CloseWithoutAnswer) => {}
        Some(Fault::TruncatedBody) => {
            let _ = stream.write_all(partial).await;
            let _ = stream.shutdown().await;
        }
        Some(Fault::Silence) => {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Some(Fault::BadGatewayPage) => {
            let page =
                "<html><head><title>502</title></head><body><h1>Bad gateway</h1></body></html>";
            let answer = format!(
                "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
        Some(Fault::SignedNotJson) => {
            let answer = signed_200(
                &method,
                &target,
                "text/html",
                "<html>maintenance</html>",
                false,
            );
            let _ = stream.write_all(&answer).await;
        }
        Some(Fault::WrongHmac) => {
            let answer = signed_200(&method, &target, "application/json", "{}", true);
            let _ = stream.write_all(&answer).await;
        }
        Some(Fault::Redirect307ToItself) => {
            let answer = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{port}{target}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
        Some(Fault::Redirect302Cycle) => {
            let next = if target.contains("hop=1") {
                target.replace("hop=1", "hop=2")
            } else if target.contains("hop=2") {
                target.replace("hop=2", "hop=1")
            } else if target.contains('?') {
                format!("{target}&hop=1")
            } else {
                format!("{target}?hop=1")
            };
            let answer = format!(
                "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{port}{next}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    }
}

/// The upstream call a case breaks, and the client request that makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// signPayload's `GET /api/v2/ofc/wallet/<id>`.
    SignPayloadWalletGet,
    /// A proxied `GET`.
    ProxiedGet,
    /// A proxied `POST`.
    ProxiedPost,
    /// Sign-and-forward: BitGo's signing-payload `POST …/partners/settlements-signing`.
    SettlementSigningPost,
    /// Sign-and-forward: the settlement `POST` itself.
    SettlementPost,
}

const CALLS: [Call; 5] = [
    Call::SignPayloadWalletGet,
    Call::ProxiedGet,
    Call::ProxiedPost,
    Call::SettlementSigningPost,
    Call::SettlementPost,
];

impl Call {
    /// The upstream path suffix the fault applies to.
    fn upstream_path(self) -> String {
        match self {
            Call::SignPayloadWalletGet => format!("/api/v2/ofc/wallet/{WALLET}"),
            Call::ProxiedGet => "/api/v2/ofc/wallets/faulty".into(),
            Call::ProxiedPost => "/api/v2/ofc/wallets/faulty/notes".into(),
            Call::SettlementSigningPost => "/partners/settlements-signing".into(),
            Call::SettlementPost => "/partners/settlements".into(),
        }
    }

    async fn send(self, signer: &Signer, case: usize) -> reqwest::Result<reqwest::Response> {
        let client = client();
        let request = match self {
            Call::SignPayloadWalletGet => client
                .post(format!("{}/api/v2/ofc/signPayload", signer.url))
                .body(format!(
                    r#"{{"walletId":"{WALLET}","walletPassphrase":"{PASSPHRASE}","payload":{{"case":{case}}}}}"#
                )),
            Call::ProxiedGet => client.get(format!("{}{}", signer.url, self.upstream_path())),
            Call::ProxiedPost => client
                .post(format!("{}{}", signer.url, self.upstream_path()))
                .body(format!(r#"{{"case":{case}}}"#)),
            Call::SettlementSigningPost | Call::SettlementPost => client
                .post(format!(
                    "{}/api/network/v1/enterprises/{ENTERPRISE}/partners/settlements",
                    signer.url
                ))
                .body(format!(
                    r#"{{"externalId":"fault-{case}","settlementAmounts":{{"a":{{"BTC":"1"}}}}}}"#
                )),
        };
        request
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .send()
            .await
    }
}

/// What a case must answer: the status, and the `code` of a transport failure.
fn expected(fault: Fault, call: Call) -> (u16, Option<&'static str>) {
    match fault {
        Fault::ResetMidAnswer | Fault::CloseWithoutAnswer | Fault::TruncatedBody => {
            (500, Some("ECONNRESET"))
        }
        // ofc-signer's own request timeout answers first (Express's connect-timeout).
        Fault::Silence => (503, None),
        Fault::BadGatewayPage => (502, None),
        Fault::SignedNotJson => match call {
            // A proxied answer is relayed as it is (spec §11.12).
            Call::ProxiedGet | Call::ProxiedPost | Call::SettlementPost => (200, None),
            // signPayload needs the wallet's fields and sign-and-forward BitGo's payload string.
            Call::SignPayloadWalletGet => (500, None),
            Call::SettlementSigningPost => (500, None),
        },
        Fault::WrongHmac => (511, None),
        // The redirect's own 3xx is the answer once the chain stops (superagent).
        Fault::Redirect307ToItself => (307, None),
        Fault::Redirect302Cycle => (302, None),
    }
}

struct World {
    sandbox: Sandbox,
    proxy: FaultProxy,
    signer: Signer,
}

async fn world() -> World {
    let sandbox =
        sandbox_with_trading_account(b"upstream fault matrix", ENTERPRISE, WALLET, PASSPHRASE)
            .await;
    let sandbox_addr = sandbox.url().trim_start_matches("http://").parse().unwrap();
    let proxy = FaultProxy::start(sandbox_addr).await;
    let env = Env::from_pairs([(format!("WALLET_{WALLET}_PASSPHRASE"), PASSPHRASE)]);
    let trading = format!("{ENTERPRISE}={WALLET}");
    let timeout = TIMEOUT_MS.to_string();
    let signer = start_signer(
        &proxy.url(),
        &["--timeout", &timeout, "--trading-account", &trading],
        env,
        Arc::new(SystemClock),
    )
    .await;
    World {
        sandbox,
        proxy,
        signer,
    }
}

/// The Express error body (spec §0.3): a JSON object with `message`, `name` and the versions.
fn assert_express_error(case: &str, body: &str) {
    let value = ofc_signer::js_json::parse(body)
        .unwrap_or_else(|e| panic!("{case}: error body is not JSON ({e}): {body}"));
    for key in ["message", "name", "bitgoJsVersion", "bitgoExpressVersion"] {
        assert!(value.get(key).is_some(), "{case}: no {key} in {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upstream_fault_ends_in_a_defined_error_and_no_post_goes_twice() {
    let world = world().await;
    let mut case = 0;
    let mut table = Vec::new();
    for call in CALLS {
        for fault in FAULTS {
            case += 1;
            let name = format!("{call:?} × {fault:?}");
            world.proxy.set(Some((fault, &call.upstream_path())));
            let creates_before = world.sandbox.create_count();
            let started = Instant::now();
            let response = tokio::time::timeout(HANG_BOUND, call.send(&world.signer, case))
                .await
                .unwrap_or_else(|_| panic!("{name}: no answer within {HANG_BOUND:?}"))
                .unwrap_or_else(|e| panic!("{name}: the connection to ofc-signer failed: {e}"));
            let elapsed = started.elapsed();
            let answer = answer(response).await;
            table.push(format!("{name}: {} in {elapsed:?}", answer.status));

            let (status, code) = expected(fault, call);
            assert_eq!(answer.status, status, "{name}: {}", answer.body);
            // A proxied 3xx is relayed like a 2xx (spec §5.2); every other non-2xx is an error.
            let relayed = status < 400 && matches!(call, Call::ProxiedGet | Call::ProxiedPost);
            if status >= 300 && !relayed {
                assert_express_error(&name, &answer.body);
            }
            if let Some(code) = code {
                assert_eq!(answer.field("code"), code, "{name}");
            }
            assert!(!answer.body.contains(TOKEN), "{name}: the token came back");
            assert!(
                !answer.body.contains(PASSPHRASE),
                "{name}: the passphrase came back"
            );

            // Nothing that is not idempotent went up twice (a 302 turns a POST into a GET).
            let seen = world.proxy.seen();
            let posts: Vec<&Seen> = seen.iter().filter(|s| s.method == "POST").collect();
            for post in &posts {
                let times = posts.iter().filter(|p| p.target == post.target).count();
                assert_eq!(
                    times, 1,
                    "{name}: POST {} went up {times} times",
                    post.target
                );
            }
            let faulted_posts = posts
                .iter()
                .filter(|p| {
                    p.target
                        .split('?')
                        .next()
                        .unwrap()
                        .ends_with(&call.upstream_path())
                })
                .count();
            if call != Call::SignPayloadWalletGet && call != Call::ProxiedGet {
                assert_eq!(
                    faulted_posts, 1,
                    "{name}: the POST under test went up once: {seen:?}"
                );
            }
            assert!(
                world.sandbox.create_count() <= creates_before + 1,
                "{name}: more than one settlement created"
            );
        }
    }
    println!("{}", table.join("\n"));

    // After all that, the connection pool is healthy: a normal signPayload works.
    world.proxy.set(None);
    let answer = answer(
        Call::SignPayloadWalletGet
            .send(&world.signer, 0)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test]
async fn a_refused_connection_is_500_econnrefused_for_every_call() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let env = Env::from_pairs([(format!("WALLET_{WALLET}_PASSPHRASE"), PASSPHRASE)]);
    let trading = format!("{ENTERPRISE}={WALLET}");
    let timeout = TIMEOUT_MS.to_string();
    let signer = start_signer(
        &format!("http://127.0.0.1:{port}"),
        &["--timeout", &timeout, "--trading-account", &trading],
        env,
        Arc::new(SystemClock),
    )
    .await;
    for (case, call) in CALLS.into_iter().enumerate() {
        let response = tokio::time::timeout(HANG_BOUND, call.send(&signer, case))
            .await
            .unwrap_or_else(|_| panic!("{call:?}: no answer"))
            .unwrap();
        let answer = answer(response).await;
        assert_eq!(answer.status, 500, "{call:?}: {}", answer.body);
        assert_eq!(answer.field("code"), "ECONNREFUSED", "{call:?}");
        assert!(
            answer
                .field("message")
                .contains(&format!("connect ECONNREFUSED 127.0.0.1:{port}")),
            "{call:?}: {}",
            answer.body
        );
    }
}
