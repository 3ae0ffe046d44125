//! An in-process fake of the BitGo API, for `--demo`, the tests and the benchmarks.
//!
//! It serves OFC wallets, keychains, BitGo-key signing (`tx/sign`) and ping, and it behaves
//! like BitGo where ofc-signer could get it wrong: every authenticated request must carry a
//! valid HMAC v2/v3 header set (or a known legacy bearer token), and every answer to an HMAC
//! request is itself HMAC-signed. It records what it received so tests can inspect the wire.
//!
//! It also serves BitGo's Go Network endpoints (partner settlements, client connections,
//! allocations, partners): see [`Sandbox::add_enterprise`] and [`Partner`].
//!
//! Nothing here is a real key: sandbox keys are derived at runtime from public seeds.

mod network;

pub use network::{DEFAULT_CUTOFF_AT, Partner, SETTLEMENT_PARTNER_ID};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::js_json::{self, JsObject, JsValue};
use crate::keys::envelope::{self, EnvelopeVersion};
use crate::keys::xprv::{SigningKey, master_xprv_from_seed, xpub_from_xprv};
use crate::message_sign::sign_message_hex;
use crate::upstream::client::{Clock, SystemClock};
use crate::upstream::hmac::{self, AccessToken, AuthVersion, subject_path};

/// The wallet id of BitGo's documentation (`bitgo-docs-curl.md`), served by `--demo`.
pub const DOCS_WALLET_ID: &str = "6407b22ec86799000706e578332735a3";
/// The documentation's placeholder access token (a legacy token: not 67 chars, no `v2x`).
pub const DOCS_TOKEN: &str = "v123xyz...";
/// The demo's HMAC-capable token (`v2x` + 64 hex; public, sandbox only).
pub const DEMO_HMAC_TOKEN: &str =
    "v2x0000000000000000000000000000000000000000000000000000000000000000de";
/// The demo enterprise, whose trading account is the documentation's wallet.
pub const DEMO_ENTERPRISE_ID: &str = "5f5ed0f3a5e4bd0007a49c6ee6af6a5b";
/// The demo wallet's passphrase (public, sandbox only).
pub const DEMO_PASSPHRASE: &str = "ofc-signer demo passphrase";
/// The public seed the demo wallet's key is derived from.
pub const DEMO_SEED: &str = "ofc-signer demo wallet - public seed, never a real key";
/// A second demo wallet whose key is in a v2 (Argon2id) envelope (same passphrase).
pub const DEMO_V2_WALLET_ID: &str = "6407b22ec86799000706e578332735b2";
/// The public seed of the v2 demo wallet's key.
pub const DEMO_V2_SEED: &str = "ofc-signer demo v2 wallet - public seed, never a real key";
/// How far a request's `Auth-Timestamp` may be from the sandbox clock.
const REQUEST_SKEW_MS: u64 = 5 * 60 * 1000;

/// A request as the sandbox received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query exactly as on the wire.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A fault the next matching responses should show (tests of error handling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer normally but with a wrong response HMAC.
    CorruptResponseHmac,
    /// Answer every request with this status, content type and body.
    Respond {
        status: u16,
        content_type: String,
        body: String,
    },
    /// Answer normally, after this many milliseconds.
    Delay { ms: u64 },
    /// The inner fault, only for requests whose path (without the query) ends with `path_suffix`.
    On {
        path_suffix: String,
        fault: Box<Fault>,
    },
}

impl Fault {
    /// The fault that applies to a request for `path`.
    fn for_path(self, path: &str) -> Option<Fault> {
        match self {
            Fault::On { path_suffix, fault } => {
                path.ends_with(path_suffix.as_str()).then_some(*fault)
            }
            other => Some(other),
        }
    }
}

/// A wallet the sandbox serves.
#[derive(Debug, Clone)]
pub struct SandboxWallet {
    pub id: String,
    /// The keychain returned for `keys[0]`: `{id, pub, encryptedPrv, source, type}`.
    pub user_keychain: JsValue,
    /// When set, the wallet has BitGo's key as `keys[1]` and `tx/sign` signs with it.
    pub bitgo_signing_xprv: Option<String>,
    /// `coinSpecific.userKeySigningRequired`, when set.
    pub user_key_signing_required: Option<bool>,
    pub enterprise: String,
}

#[derive(Default)]
struct Inner {
    wallets: HashMap<String, SandboxWallet>,
    keychains: HashMap<String, JsValue>,
    /// Raw tokens; HMAC tokens are looked up by their SHA-256.
    tokens: HashMap<String, AccessToken>,
    requests: Vec<RecordedRequest>,
    fault: Option<Fault>,
    network: network::Network,
}

struct Shared {
    inner: Mutex<Inner>,
    clock: Arc<dyn Clock>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running sandbox.
pub struct Sandbox {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How many requests the sandbox remembers.
const MAX_RECORDED: usize = 10_000;

impl Sandbox {
    /// Starts a sandbox on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<Sandbox> {
        Self::start_with_clock(Arc::new(SystemClock)).await
    }

    /// Starts a sandbox on `127.0.0.1:0` with an injected clock.
    pub async fn start_with_clock(clock: Arc<dyn Clock>) -> std::io::Result<Sandbox> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Self::start_on(listener, clock)
    }

    /// Starts a sandbox on an already bound listener.
    pub fn start_on(listener: TcpListener, clock: Arc<dyn Clock>) -> std::io::Result<Sandbox> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            clock,
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Sandbox { addr, shared, task })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Accepts `token` (HMAC-capable or legacy).
    pub fn add_token(&self, token: &str) {
        let token = AccessToken::new(token);
        let key = if token.is_legacy() {
            token.expose().to_string()
        } else {
            token.hash_hex()
        };
        self.shared.lock().tokens.insert(key, token);
    }

    /// Serves `wallet` and its user keychain (`keys[0]`).
    pub fn add_wallet(&self, wallet: SandboxWallet) {
        Self::insert_wallet(&self.shared, wallet);
    }

    fn insert_wallet(shared: &Shared, wallet: SandboxWallet) {
        let mut inner = shared.lock();
        if let Some(id) = wallet.user_keychain.get("id").and_then(JsValue::as_str) {
            inner
                .keychains
                .insert(id.to_string(), wallet.user_keychain.clone());
        }
        inner.wallets.insert(wallet.id.clone(), wallet);
    }

    /// Everything received so far (oldest first).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    pub fn set_fault(&self, fault: Option<Fault>) {
        self.shared.lock().fault = fault;
    }
}

/// A user keychain document as BitGo returns it.
pub fn keychain_document(id: &str, xpub: &str, encrypted_prv: &str) -> JsValue {
    let mut keychain = JsObject::new();
    keychain.insert("id", id);
    keychain.insert("pub", xpub);
    keychain.insert("encryptedPrv", encrypted_prv);
    keychain.insert("source", "user");
    keychain.insert("type", "independent");
    JsValue::Object(keychain)
}

/// A demo wallet: its key is derived at runtime from a public seed and encrypted (in a
/// `version` envelope) with `passphrase`. Returns the wallet and the key's `xpub`.
pub fn demo_wallet(
    wallet_id: &str,
    seed: &str,
    passphrase: &str,
    version: EnvelopeVersion,
) -> Result<(SandboxWallet, String), String> {
    let xprv = master_xprv_from_seed(seed.as_bytes()).map_err(|e| e.to_string())?;
    let xpub = xpub_from_xprv(&xprv).map_err(|e| e.to_string())?;
    let encrypted =
        envelope::encrypt(passphrase, &xprv, version, None).map_err(|e| e.message().to_string())?;
    let key_id =
        hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(format!("keychain:{wallet_id}"))[..12]);
    let wallet = SandboxWallet {
        id: wallet_id.to_string(),
        user_keychain: keychain_document(&key_id, &xpub, &encrypted),
        bitgo_signing_xprv: None,
        user_key_signing_required: None,
        enterprise: DEMO_ENTERPRISE_ID.to_string(),
    };
    Ok((wallet, xpub))
}

/// Starts the `--demo` sandbox on `127.0.0.1:0` (see [`start_demo_on`]).
pub async fn start_demo() -> Result<(Sandbox, String), String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("sandbox: {e}"))?;
    start_demo_on(listener).await
}

/// Starts the demo sandbox on `listener`: BitGo's documentation wallet (v1 envelope) with the
/// demo enterprise's Go Network, keyed from a public seed, reachable with the documentation's
/// placeholder token and with [`DEMO_HMAC_TOKEN`]. The v2 wallet [`DEMO_V2_WALLET_ID`] joins
/// a moment later (its Argon2id envelope takes a quarter of a second to make, which startup does
/// not wait for). Returns the sandbox and the documentation wallet's `xpub`.
pub async fn start_demo_on(listener: TcpListener) -> Result<(Sandbox, String), String> {
    let sandbox =
        Sandbox::start_on(listener, Arc::new(SystemClock)).map_err(|e| format!("sandbox: {e}"))?;
    let (wallet, xpub) = demo_wallet(
        DOCS_WALLET_ID,
        DEMO_SEED,
        DEMO_PASSPHRASE,
        EnvelopeVersion::V1,
    )?;
    sandbox.add_wallet(wallet);
    sandbox.add_enterprise(DEMO_ENTERPRISE_ID, DOCS_WALLET_ID);
    sandbox.add_token(DOCS_TOKEN);
    sandbox.add_token(DEMO_HMAC_TOKEN);
    let shared = Arc::downgrade(&sandbox.shared);
    tokio::task::spawn_blocking(move || {
        match demo_wallet(
            DEMO_V2_WALLET_ID,
            DEMO_V2_SEED,
            DEMO_PASSPHRASE,
            EnvelopeVersion::V2,
        ) {
            Ok((wallet, _)) => {
                if let Some(shared) = shared.upgrade() {
                    Sandbox::insert_wallet(&shared, wallet);
                }
            }
            Err(error) => tracing::warn!(%error, "sandbox: the v2 demo wallet is unavailable"),
        }
    });
    Ok((sandbox, xpub))
}

fn json(status: StatusCode, body: JsValue) -> Response {
    let mut response = (status, body.to_json()).into_response();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: &str, name: &str) -> Response {
    let mut body = JsObject::new();
    body.insert("error", message);
    body.insert("name", name);
    json(status, JsValue::Object(body))
}

/// Who made a request.
enum Caller {
    Anonymous,
    Legacy,
    Hmac {
        token: AccessToken,
        version: AuthVersion,
    },
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks the authentication headers like BitGo: a known legacy token, or hashed token +
/// timestamp + HMAC over the exact method/path/body.
fn authenticate(
    shared: &Shared,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Caller, Box<Response>> {
    let unauthorized =
        |message: &str| Box::new(error(StatusCode::UNAUTHORIZED, message, "Unauthorized"));
    let Some(bearer) = header(headers, "authorization").and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Ok(Caller::Anonymous);
    };
    let token = shared.lock().tokens.get(bearer).cloned();
    let Some(token) = token else {
        return Err(unauthorized("unauthorized"));
    };
    if token.is_legacy() {
        return Ok(Caller::Legacy);
    }
    let version = match header(headers, "bitgo-auth-version") {
        Some("2.0") => AuthVersion::V2,
        Some("3.0") => AuthVersion::V3,
        _ => return Err(unauthorized("missing or unsupported BitGo-Auth-Version")),
    };
    let timestamp = header(headers, "auth-timestamp").and_then(|t| t.parse::<u64>().ok());
    let Some(timestamp) = timestamp else {
        return Err(unauthorized("missing Auth-Timestamp"));
    };
    if shared.clock.now_ms().abs_diff(timestamp) > REQUEST_SKEW_MS {
        return Err(unauthorized("request timestamp outside the allowed window"));
    }
    let subject = hmac::request_subject(version, method, timestamp, &subject_path(path), body);
    if header(headers, "hmac") != Some(hmac::hmac_hex(&token, &subject).as_str()) {
        return Err(unauthorized("invalid HMAC"));
    }
    Ok(Caller::Hmac { token, version })
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let method = parts.method.as_str().to_string();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let fault = {
        let mut inner = shared.lock();
        if inner.requests.len() >= MAX_RECORDED {
            inner.requests.remove(0);
        }
        inner.requests.push(RecordedRequest {
            method: method.clone(),
            path: path.clone(),
            headers: parts.headers.clone(),
            body: body.clone(),
        });
        inner
            .fault
            .clone()
            .and_then(|fault| fault.for_path(parts.uri.path()))
    };
    if let Some(Fault::Delay { ms }) = &fault {
        tokio::time::sleep(std::time::Duration::from_millis(*ms)).await;
    }
    let caller = match authenticate(&shared, &method, &path, &parts.headers, &body) {
        Ok(caller) => caller,
        Err(response) => return *response,
    };
    let mut response = match &fault {
        Some(Fault::Respond {
            status,
            content_type,
            body,
        }) => {
            let mut response = (
                StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                body.clone(),
            )
                .into_response();
            if let Ok(value) = HeaderValue::from_str(content_type) {
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_TYPE, value);
            }
            response
        }
        _ => route(
            &shared,
            &caller,
            &method,
            parts.uri.path(),
            parts.uri.query(),
            &parts.headers,
            &body,
        ),
    };
    if let Caller::Hmac { token, version } = &caller {
        let status = response.status().as_u16();
        let (response_parts, response_body) = response.into_parts();
        let response_bytes = response_body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let timestamp = shared.clock.now_ms().to_string();
        let subject = hmac::response_subject(
            *version,
            &method,
            &timestamp,
            &subject_path(&path),
            status,
            &response_bytes,
        );
        let mut signature = hmac::hmac_hex(token, &subject);
        if fault == Some(Fault::CorruptResponseHmac) {
            signature.replace_range(0..1, if signature.starts_with('0') { "1" } else { "0" });
        }
        response = Response::from_parts(response_parts, axum::body::Body::from(response_bytes));
        if let (Ok(hmac), Ok(ts)) = (
            HeaderValue::from_str(&signature),
            HeaderValue::from_str(&timestamp),
        ) {
            response.headers_mut().insert("hmac", hmac);
            response.headers_mut().insert("timestamp", ts);
        }
    }
    response
}

fn route(
    shared: &Shared,
    caller: &Caller,
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("GET", ["api", "v1", "ping"]) => {
            let mut body = JsObject::new();
            body.insert("status", "service is ok!");
            body.insert("environment", "ofc-signer sandbox");
            json(StatusCode::OK, JsValue::Object(body))
        }
        _ if matches!(caller, Caller::Anonymous) => {
            error(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
        }
        // Wallets and keychains of any coin (`fetch-keys` reads them per coin).
        ("GET", ["api", "v2", _coin, "wallet", id]) => {
            let inner = shared.lock();
            match inner.wallets.get(&percent_decode(id)) {
                Some(wallet) => json(StatusCode::OK, wallet_document(wallet)),
                None => error(StatusCode::NOT_FOUND, "wallet not found", "WalletNotFound"),
            }
        }
        ("GET", ["api", "v2", _coin, "key", id]) => {
            let inner = shared.lock();
            match inner.keychains.get(&percent_decode(id)) {
                Some(keychain) => json(StatusCode::OK, keychain.clone()),
                None => error(
                    StatusCode::NOT_FOUND,
                    "keychain not found",
                    "KeychainNotFound",
                ),
            }
        }
        ("POST", ["api", "v2", "ofc", "wallet", id, "tx", "sign"]) => {
            let xprv = shared
                .lock()
                .wallets
                .get(&percent_decode(id))
                .map(|w| w.bitgo_signing_xprv.clone());
            let payload = std::str::from_utf8(body)
                .ok()
                .and_then(|text| js_json::parse(text).ok())
                .and_then(|value| {
                    value
                        .get("payload")
                        .and_then(JsValue::as_js_string)
                        .cloned()
                });
            match (xprv, payload) {
                (None, _) => error(StatusCode::NOT_FOUND, "wallet not found", "WalletNotFound"),
                (Some(None), _) => error(
                    StatusCode::BAD_REQUEST,
                    "wallet does not support BitGo signing",
                    "InvalidWallet",
                ),
                (_, None) => error(
                    StatusCode::BAD_REQUEST,
                    "payload must be a string",
                    "InvalidRequest",
                ),
                (Some(Some(xprv)), Some(payload)) => match SigningKey::from_xprv(&xprv) {
                    Ok(key) => {
                        let mut out = JsObject::new();
                        out.insert(
                            "signature",
                            sign_message_hex(&key, payload.to_utf8_lossy().as_bytes()),
                        );
                        json(StatusCode::OK, JsValue::Object(out))
                    }
                    Err(_) => error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "bad sandbox key",
                        "Error",
                    ),
                },
            }
        }
        (_, ["api", "network", ..]) => {
            network::route(shared, method, &segments, query, headers, body)
        }
        _ => error(StatusCode::NOT_FOUND, "not found", "NotFound"),
    }
}

fn wallet_document(wallet: &SandboxWallet) -> JsValue {
    let mut document = JsObject::new();
    document.insert("id", wallet.id.as_str());
    document.insert("coin", "ofc");
    document.insert("label", "Trading Account");
    document.insert("enterprise", wallet.enterprise.as_str());
    let mut keys = vec![JsValue::from(
        wallet
            .user_keychain
            .get("id")
            .and_then(JsValue::as_str)
            .unwrap_or_default(),
    )];
    if wallet.bitgo_signing_xprv.is_some() {
        keys.push(JsValue::from(format!("{}-bitgo", wallet.id)));
    }
    document.insert("keys", JsValue::Array(keys));
    document.insert("m", 1.0);
    document.insert("n", 1.0);
    document.insert("type", "custodial");
    let mut coin_specific = JsObject::new();
    if let Some(required) = wallet.user_key_signing_required {
        coin_specific.insert("userKeySigningRequired", required);
    }
    document.insert("coinSpecific", JsValue::Object(coin_specific));
    JsValue::Object(document)
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = segment.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
