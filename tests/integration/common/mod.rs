//! Test harness: the SDK vectors, a sandbox BitGo, and ofc-signer itself, all on real sockets
//! (`127.0.0.1:0`).
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::Parser;
use ofc_signer::config::{Cli, Config, Env};
use ofc_signer::js_json::{self, JsValue};
use ofc_signer::sandbox::{Sandbox, SandboxWallet, keychain_document};
use ofc_signer::server::Prepared;
use ofc_signer::upstream::client::{Clock, SystemClock};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The SDK vectors (tests/vectors/sdk-vectors.json), parsed once.
pub fn vectors() -> &'static JsValue {
    static VECTORS: OnceLock<JsValue> = OnceLock::new();
    VECTORS.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/vectors/sdk-vectors.json"
        );
        let text = std::fs::read_to_string(path).expect("tests/vectors/sdk-vectors.json");
        js_json::parse(&text).expect("vectors are JSON")
    })
}

/// The entries of one vector kind.
pub fn kind(name: &str) -> &'static [JsValue] {
    vectors()
        .get(name)
        .and_then(JsValue::as_array)
        .expect("vector kind")
}

/// A string field of a vector.
pub fn text(v: &JsValue, key: &str) -> String {
    match v.get(key) {
        Some(JsValue::String(s)) => s.to_utf8_lossy().into_owned(),
        other => panic!("field {key} is not a string: {other:?}"),
    }
}

pub fn opt_text(v: &JsValue, key: &str) -> Option<String> {
    v.get(key)
        .and_then(JsValue::as_js_string)
        .map(|s| s.to_utf8_lossy().into_owned())
}

/// The key of `meta.keys` with this label.
pub fn key(label: &str) -> &'static JsValue {
    vectors()
        .get("meta")
        .and_then(|m| m.get("keys"))
        .and_then(JsValue::as_array)
        .and_then(|keys| {
            keys.iter()
                .find(|k| k.get("label").and_then(JsValue::as_str) == Some(label))
        })
        .expect("key label")
}

/// Which envelope of a vector key the sandbox serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeKind {
    V1,
    V2,
}

/// The envelope and passphrase of a sign vector's key: v1 is the vector's own `encryptedPrv`
/// with its `walletPassphrase`; v2 is the `encryptedPrvV2` of its `meta.keys` entry with that
/// key's passphrase.
pub fn sign_vector_key(vector: &JsValue, envelope: EnvelopeKind) -> (String, String) {
    match envelope {
        EnvelopeKind::V1 => (
            text(vector, "encryptedPrv"),
            text(vector, "walletPassphrase"),
        ),
        EnvelopeKind::V2 => {
            let key = key(&text(vector, "keyLabel"));
            (text(key, "encryptedPrvV2"), text(key, "walletPassphrase"))
        }
    }
}

/// A sandbox wallet whose user keychain holds `encrypted` (public key `xpub`).
pub fn wallet_with(wallet_id: &str, xpub: &str, encrypted: &str) -> SandboxWallet {
    let key_id = format!("key{}", &wallet_id[..wallet_id.len().min(21)]);
    SandboxWallet {
        id: wallet_id.to_string(),
        user_keychain: keychain_document(&key_id, xpub, encrypted),
        bitgo_signing_xprv: None,
        user_key_signing_required: None,
        enterprise: "e0000000000000000000000000000001".to_string(),
    }
}

/// A number from the environment variable `name`, else `default` (sizes of randomised tests).
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A seeded xorshift64* for randomised tests. The seed comes from the environment variable
/// named at creation when it is set, else from the clock, and is printed so that a failing run
/// can be replayed.
pub struct Dice {
    state: u64,
    pub seed: u64,
}

impl Dice {
    pub fn seeded_from(var: &str) -> Dice {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as u64;
        let seed = env_number(var, clock) | 1;
        println!("{var}={seed}");
        Dice { state: seed, seed }
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        (self.state.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1) as u64) as usize
    }
}

/// A port nothing listens on right now (for a spawned binary's `--port`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A sandbox that knows [`TOKEN`] and has a Go Network enterprise whose trading account's key
/// comes from the public `seed`, in a v1 envelope under `passphrase`.
pub async fn sandbox_with_trading_account(
    seed: &[u8],
    enterprise: &str,
    wallet_id: &str,
    passphrase: &str,
) -> Sandbox {
    use ofc_signer::keys::envelope::{self, EnvelopeVersion};
    use ofc_signer::keys::xprv::{master_xprv_from_seed, xpub_from_xprv};
    let sandbox = Sandbox::start().await.expect("sandbox");
    sandbox.add_token(TOKEN);
    let xprv = master_xprv_from_seed(seed).expect("seed");
    let encrypted =
        envelope::encrypt(passphrase, &xprv, EnvelopeVersion::V1, None).expect("envelope");
    sandbox.add_wallet(wallet_with(
        wallet_id,
        &xpub_from_xprv(&xprv).expect("xpub"),
        &encrypted,
    ));
    sandbox.add_enterprise(enterprise, wallet_id);
    sandbox
}

/// A running ofc-signer (in-process, real socket).
pub struct Signer {
    pub url: String,
    task: JoinHandle<()>,
}

impl Drop for Signer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts ofc-signer with Express-style `args` against `upstream_url` (`--env custom
/// --customrooturi <url> --disablessl` are added) and the given environment.
pub async fn start_signer(
    upstream_url: &str,
    args: &[&str],
    env: Env,
    clock: Arc<dyn Clock>,
) -> Signer {
    let mut argv = vec![
        "ofc-signer",
        "--env",
        "custom",
        "--customrooturi",
        upstream_url,
        "--disablessl",
    ];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("arguments");
    let config = Config::resolve(cli, &env).expect("config");
    start_configured(config, env, clock).await
}

/// Starts ofc-signer from a resolved configuration on `127.0.0.1:0` (`https://` when TLS is on).
pub async fn start_configured(config: Config, env: Env, clock: Arc<dyn Clock>) -> Signer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    start_on(listener, config, env, clock).await
}

/// Starts ofc-signer on an already bound listener. Unless the test chose a state directory, each
/// instance gets a fresh temporary one (its audit log and idempotency store).
pub async fn start_on(
    listener: TcpListener,
    mut config: Config,
    env: Env,
    clock: Arc<dyn Clock>,
) -> Signer {
    if config
        .state_dir
        .starts_with(ofc_signer::store::DEFAULT_STATE_DIR)
    {
        config.state_dir = tempfile::tempdir().expect("state dir").keep();
    }
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{}", listener.local_addr().expect("addr"));
    let prepared = Prepared::new(config, &env, clock).expect("startup");
    let task =
        tokio::spawn(prepared.serve(listener, std::future::pending(), Duration::from_secs(1)));
    Signer { url, task }
}

/// A sandbox plus a signer pointed at it.
pub struct Setup {
    pub sandbox: Sandbox,
    pub signer: Signer,
}

pub async fn setup(args: &[&str], env: Env) -> Setup {
    let sandbox = Sandbox::start().await.expect("sandbox");
    let signer = start_signer(&sandbox.url(), args, env, Arc::new(SystemClock)).await;
    Setup { sandbox, signer }
}

/// The ofc-signer binary Cargo built for these tests.
pub const BINARY: &str = env!("CARGO_BIN_EXE_ofc-signer");

/// An HMAC-capable token (67 characters, `v2x` prefix).
pub const TOKEN: &str = "v2x5e1c5c5c6b0e6e0a4d27c9f1f0b1e6f4f7f57d4f2e0d0c7b8a9e1f2a3b4c5d6e7";

pub fn client() -> reqwest::Client {
    ofc_signer::upstream::client::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

/// An HTTP answer as status + body text.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> JsValue {
        js_json::parse(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The keys of the JSON body object, in order.
    pub fn keys(&self) -> Vec<String> {
        object_keys(&self.json())
    }

    /// A string field of the JSON body.
    pub fn field(&self, key: &str) -> String {
        match self.json().get(key) {
            Some(JsValue::String(s)) => s.to_utf8_lossy().into_owned(),
            Some(other) => other.to_json(),
            None => panic!("no {key} in {}", self.body),
        }
    }
}

/// POSTs `body` (raw bytes) as JSON with an optional bearer token.
pub async fn post_json(url: &str, body: impl Into<reqwest::Body>, token: Option<&str>) -> Answer {
    let mut request = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    answer(request.send().await.expect("request")).await
}

pub async fn get(url: &str, token: Option<&str>) -> Answer {
    let mut request = client().get(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    answer(request.send().await.expect("request")).await
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = response.text().await.expect("body");
    Answer {
        status,
        content_type,
        body,
    }
}

/// The version fields every Express error body ends with.
pub fn versions() -> String {
    let v = ofc_signer::error::VERSION;
    format!(r#""bitgoJsVersion":"{v}","bitgoExpressVersion":"{v}""#)
}

/// The keys of a JSON object, in enumeration order.
pub fn object_keys(value: &JsValue) -> Vec<String> {
    value
        .as_object()
        .map(|o| o.keys().map(|k| k.to_utf8_lossy().into_owned()).collect())
        .unwrap_or_default()
}
