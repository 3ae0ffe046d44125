//! Configuration exactly like BitGo Express (spec §7): the same command-line flags, the same
//! `BITGO_*` environment variables (and deprecated aliases), precedence CLI > environment >
//! default, https forcing (§7.2) and the startup checks of §7.3.
//!
//! The environment is read through [`Env`], a plain map, so tests inject one instead of mutating
//! the process environment. [`Env::from_process`] also loads a `.env` file from the working
//! directory without overriding real variables, as Express's `dotenv` does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use zeroize::Zeroizing;

use crate::upstream::hmac::AuthVersion;

/// Default request / upstream timeout (ms), as Express.
pub const DEFAULT_TIMEOUT_MS: u64 = 305_000;

/// The environment variables a process sees (process env + `.env`), as a map.
#[derive(Clone, Default)]
pub struct Env(HashMap<String, Zeroizing<String>>);

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Env({} variables)", self.0.len())
    }
}

impl Env {
    /// The real process environment plus a `.env` file in the working directory (variables
    /// already set win, as with `dotenv`).
    pub fn from_process() -> Self {
        let mut vars: HashMap<String, Zeroizing<String>> = std::env::vars_os()
            .filter_map(|(k, v)| {
                Some((k.into_string().ok()?, Zeroizing::new(v.into_string().ok()?)))
            })
            .collect();
        if let Ok(text) = std::fs::read_to_string(".env") {
            for (key, value) in parse_dotenv(&text) {
                vars.entry(key).or_insert(value);
            }
        }
        Env(vars)
    }

    /// An environment made of the given pairs (tests, embedding).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Env(pairs
            .into_iter()
            .map(|(k, v)| (k.into(), Zeroizing::new(v.into())))
            .collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.as_str())
    }

    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), Zeroizing::new(value.into()));
    }

    /// Express's `readEnvVar(name, ...aliases)`: the primary variable when non-empty, else the
    /// first deprecated alias that is defined (with a warning).
    fn read(&self, name: &str, aliases: &[&str], warnings: &mut Vec<String>) -> Option<String> {
        if let Some(value) = self.get(name).filter(|v| !v.is_empty()) {
            return Some(value.to_string());
        }
        for alias in aliases {
            if let Some(value) = self.get(alias) {
                warnings.push(format!(
                    "warning: using deprecated environment variable '{alias}'. Please use the '{name}' environment variable instead."
                ));
                return Some(value.to_string());
            }
        }
        None
    }

    /// The `WALLET_<walletId>_PASSPHRASE` entries, for the key source.
    pub fn wallet_passphrases(&self) -> HashMap<String, Zeroizing<String>> {
        self.0
            .iter()
            .filter_map(|(k, v)| {
                let id = k.strip_prefix("WALLET_")?.strip_suffix("_PASSPHRASE")?;
                Some((id.to_string(), v.clone()))
            })
            .collect()
    }
}

/// A minimal `.env` reader: `KEY=VALUE` lines, optional `export `, `#` comments, single or
/// double quotes (double quotes expand `\n`).
fn parse_dotenv(text: &str) -> Vec<(String, Zeroizing<String>)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            continue;
        }
        let value = value.trim();
        let value = if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            inner.replace("\\n", "\n")
        } else if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            inner.to_string()
        } else {
            value
                .split(" #")
                .next()
                .unwrap_or("")
                .trim_end()
                .to_string()
        };
        out.push((key.to_string(), Zeroizing::new(value)));
    }
    out
}

/// The command line, with Express's flag names. Flags that are absent stay `None` so the
/// environment can supply them.
#[derive(Parser, Debug, Default)]
#[command(
    name = "ofc-signer",
    about = "BitGo-Express-compatible OFC signing proxy",
    disable_version_flag = true
)]
pub struct Cli {
    /// Port to listen on (BITGO_PORT, default 3080).
    #[arg(short = 'p', long)]
    pub port: Option<u16>,
    /// Address to bind to (BITGO_BIND, default localhost).
    #[arg(short = 'b', long)]
    pub bind: Option<String>,
    /// Unix socket path instead of TCP (BITGO_IPC).
    #[arg(short = 'i', long)]
    pub ipc: Option<PathBuf>,
    /// BitGo environment: prod, test, dev, staging, custom, … (BITGO_ENV, default test).
    #[arg(short = 'e', long)]
    pub env: Option<String>,
    /// Enable debug logging.
    #[arg(short = 'd', long)]
    pub debug: bool,
    /// Debug namespaces (repeatable; BITGO_DEBUG_NAMESPACE, comma separated).
    #[arg(short = 'D', long = "debugnamespace")]
    pub debug_namespace: Vec<String>,
    /// TLS private key file (BITGO_KEYPATH).
    #[arg(short = 'k', long = "keypath")]
    pub key_path: Option<PathBuf>,
    /// TLS certificate file (BITGO_CRTPATH).
    #[arg(short = 'c', long = "crtpath")]
    pub crt_path: Option<PathBuf>,
    /// TLS private key, PEM content (BITGO_SSL_KEY).
    #[arg(long = "sslkey", allow_hyphen_values = true)]
    pub ssl_key: Option<String>,
    /// TLS certificate, PEM content (BITGO_SSL_CERT).
    #[arg(long = "sslcert", allow_hyphen_values = true)]
    pub ssl_cert: Option<String>,
    /// Custom BitGo root URI; switches the environment to `custom` (BITGO_CUSTOM_ROOT_URI).
    #[arg(short = 'u', long = "customrooturi")]
    pub custom_root_uri: Option<String>,
    /// Custom bitcoin network (BITGO_CUSTOM_BITCOIN_NETWORK).
    #[arg(short = 'n', long = "custombitcoinnetwork")]
    pub custom_bitcoin_network: Option<String>,
    /// Log file (BITGO_LOGFILE; default stdout/stderr).
    #[arg(short = 'l', long = "logfile")]
    pub logfile: Option<PathBuf>,
    /// Do not force https on the root URI / external signer URL (BITGO_DISABLE_SSL).
    #[arg(long = "disablessl")]
    pub disable_ssl: bool,
    /// Do not proxy other BitGo API routes (BITGO_DISABLE_PROXY).
    #[arg(long = "disableproxy")]
    pub disable_proxy: bool,
    /// Do not require NODE_ENV=production against prod (BITGO_DISABLE_ENV_CHECK; default on).
    #[arg(long = "disableenvcheck")]
    pub disable_env_check: bool,
    /// Request and upstream timeout in milliseconds (BITGO_TIMEOUT, default 305000).
    #[arg(short = 't', long)]
    pub timeout: Option<u64>,
    /// Upstream HMAC version, 2 or 3 (BITGO_AUTH_VERSION, default 2).
    #[arg(long = "authversion")]
    pub auth_version: Option<u8>,
    /// Forward signPayload to this external signer (BITGO_EXTERNAL_SIGNER_URL).
    #[arg(long = "externalSignerUrl")]
    pub external_signer_url: Option<String>,
    /// Run as an external signer from a key file (BITGO_SIGNER_MODE).
    #[arg(long = "signerMode")]
    pub signer_mode: bool,
    /// The signer-mode key file (BITGO_SIGNER_FILE_SYSTEM_PATH).
    #[arg(long = "signerFileSystemPath")]
    pub signer_file_system_path: Option<PathBuf>,
    /// Lightning signer key file (BITGO_LIGHTNING_SIGNER_FILE_SYSTEM_PATH).
    #[arg(long = "lightningSignerFileSystemPath")]
    pub lightning_signer_file_system_path: Option<PathBuf>,
    /// Keep-alive timeout in milliseconds (BITGO_KEEP_ALIVE_TIMEOUT).
    #[arg(long = "keepalivetimeout")]
    pub keep_alive_timeout: Option<u64>,
    /// Headers timeout in milliseconds (BITGO_HEADERS_TIMEOUT).
    #[arg(long = "headerstimeout")]
    pub headers_timeout: Option<u64>,
    /// Start an embedded sandbox BitGo API with a demo OFC wallet and sign against it.
    #[arg(long)]
    pub demo: bool,
    /// Signer authentication: clients must present this bearer token, read from a file
    /// (OFC_SIGNER_AUTH_TOKEN_FILE; or the token itself in OFC_SIGNER_AUTH_TOKEN).
    #[arg(long = "auth-token-file")]
    pub auth_token_file: Option<PathBuf>,
    /// Signer authentication: clients must present a TLS certificate issued by this CA (PEM file;
    /// OFC_SIGNER_CLIENT_CA). Needs TLS (--keypath/--crtpath).
    #[arg(long = "client-ca")]
    pub client_ca: Option<PathBuf>,
    /// Only these wallet ids may be signed for (comma separated; OFC_SIGNER_ALLOWED_WALLETS).
    #[arg(long = "allowed-wallets", value_delimiter = ',')]
    pub allowed_wallets: Vec<String>,
    /// Forward mode: the token to present to the external signer, read from a file
    /// (OFC_SIGNER_EXTERNAL_SIGNER_TOKEN_FILE; or the token itself in OFC_SIGNER_EXTERNAL_SIGNER_TOKEN).
    #[arg(long = "external-signer-token-file")]
    pub external_signer_token_file: Option<PathBuf>,
    /// Forward mode: a CA (PEM) to trust for the external signer's certificate, besides the
    /// public roots (OFC_SIGNER_EXTERNAL_SIGNER_CA).
    #[arg(long = "external-signer-ca")]
    pub external_signer_ca: Option<PathBuf>,
    /// Forward mode: client certificate (PEM) for mutual TLS with the external signer
    /// (OFC_SIGNER_EXTERNAL_SIGNER_CERT).
    #[arg(long = "external-signer-cert")]
    pub external_signer_cert: Option<PathBuf>,
    /// Forward mode: the private key (PEM) of --external-signer-cert (OFC_SIGNER_EXTERNAL_SIGNER_KEY).
    #[arg(long = "external-signer-key")]
    pub external_signer_key: Option<PathBuf>,
    /// Signer mode: how often the key file is checked for changes, in ms (default 1000).
    #[arg(long = "key-file-poll-ms")]
    pub key_file_poll_ms: Option<u64>,
    /// Where the audit log and the idempotency store live (OFC_SIGNER_STATE_DIR; default
    /// ./ofc-signer-state/port-<port>, or ipc-<socket name> with --ipc).
    #[arg(long = "state-dir")]
    pub state_dir: Option<PathBuf>,
    /// Sign-and-forward: the trading account (wallet id) that signs for an enterprise when the
    /// request names none, as <enterpriseId>=<walletId> (repeatable; OFC_SIGNER_TRADING_ACCOUNTS,
    /// comma separated).
    #[arg(long = "trading-account", value_name = "ENTERPRISE=WALLET")]
    pub trading_accounts: Vec<String>,
    /// Unlocked keys unused for this many seconds are dropped; 0 disables the key cache (every
    /// request derives its key, as Express does). OFC_SIGNER_KEY_CACHE_TTL; default 900.
    #[arg(long = "key-cache-ttl", value_name = "SECONDS")]
    pub key_cache_ttl: Option<u64>,
    /// At most this many unlocked keys are held (OFC_SIGNER_KEY_CACHE_SIZE; default 1024).
    #[arg(long = "key-cache-size")]
    pub key_cache_size: Option<usize>,
    /// Wallet and keychain documents are reused for this many seconds per access token
    /// (OFC_SIGNER_METADATA_CACHE_TTL; default 0: fetched for every request, as Express does,
    /// so a revoked token or an upstream change takes effect at once).
    #[arg(long = "metadata-cache-ttl", value_name = "SECONDS")]
    pub metadata_cache_ttl: Option<u64>,
    /// Under load, the audit log waits up to this many microseconds after a signature for the
    /// others it expects, so that one fsync makes them all durable; 0: sync at once
    /// (OFC_SIGNER_AUDIT_COMMIT_DELAY; default 1000).
    #[arg(long = "audit-commit-delay", value_name = "MICROSECONDS")]
    pub audit_commit_delay: Option<u64>,
    /// Log line format: text or json (OFC_SIGNER_LOG_FORMAT; default text).
    #[arg(long = "log-format", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Connections served at once; more wait to be accepted (OFC_SIGNER_MAX_CONNECTIONS;
    /// default 10000).
    #[arg(long = "max-connections")]
    pub max_connections: Option<usize>,
    /// Serve /metrics and the health routes to loopback clients only
    /// (OFC_SIGNER_ADMIN_LOOPBACK_ONLY).
    #[arg(long = "admin-loopback-only")]
    pub admin_loopback_only: bool,
    /// Print the version and exit.
    #[arg(short = 'v', long = "version")]
    pub version: bool,
    /// Key tooling instead of the server.
    #[command(subcommand)]
    pub tool: Option<crate::tools::Tool>,
}

/// A BitGo environment: the name the user gave and the root URL it resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub name: String,
    pub base_url: String,
}

/// The root URL of a named BitGo environment (spec §5.1), `None` for `custom` and unknown names.
pub fn environment_base_url(name: &str) -> Option<&'static str> {
    Some(match name {
        "prod" | "production" | "msProd" => "https://app.bitgo.com",
        "test" | "msTest" => "https://app.bitgo-test.com",
        "dev" | "branch" | "msDev" => "https://app.bitgo-dev.com",
        "staging" => "https://app.bitgo-staging.com",
        "local" => "https://localhost:3000",
        "localNonSecure" => "http://localhost:3000",
        "mock" => "https://bitgo.fakeurl",
        "adminProd" => "https://admin.bitgo.com",
        "adminTest" => "https://admin.bitgo-test.com",
        "adminDev" => "https://admin.bitgo-dev.com",
        "adminStaging" => "https://admin.bitgo-staging.com",
        _ => return None,
    })
}

/// Where signing requests are served from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Normal instance: wallet and keychain come from BitGo with the caller's token (spec §1.4).
    Normal,
    /// Forward signPayload to another signer (spec §1.3).
    ExternalSigner(ExternalSignerConfig),
    /// Serve from a local key file (spec §1.5).
    Signer {
        key_file: PathBuf,
        poll_interval: Duration,
    },
}

/// How to reach the external signer in forward mode.
#[derive(Clone, PartialEq, Eq)]
pub struct ExternalSignerConfig {
    pub url: String,
    /// Presented as `X-Signer-Token` (ofc-signer's signer authentication).
    pub token: Option<Zeroizing<String>>,
    /// An extra CA to trust (e.g. a development certificate).
    pub ca: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub client_identity: Option<(PathBuf, PathBuf)>,
}

impl std::fmt::Debug for ExternalSignerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalSignerConfig")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .field("ca", &self.ca)
            .field("client_identity", &self.client_identity)
            .finish()
    }
}

/// Optional authentication of ofc-signer's own clients (beyond Express).
#[derive(Clone, Default)]
pub struct SignerAuth {
    /// Required bearer token (`X-Signer-Token`, or `Authorization: Bearer` in signer mode).
    pub token: Option<Zeroizing<String>>,
    /// Required client-certificate CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// When set, only these wallet ids may be signed for.
    pub allowed_wallets: Option<std::collections::BTreeSet<String>>,
}

impl std::fmt::Debug for SignerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerAuth")
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .field("client_ca", &self.client_ca)
            .field("allowed_wallets", &self.allowed_wallets)
            .finish()
    }
}

impl SignerAuth {
    /// Whether any client authentication is configured.
    pub fn authenticates(&self) -> bool {
        self.token.is_some() || self.client_ca.is_some()
    }
}

/// Reads a secret token from a file (trailing newline removed); empty is an error.
fn read_token_file(path: &Path) -> Result<Zeroizing<String>, ConfigError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| fatal(format!("cannot read token file {}: {e}", path.display())))?,
    );
    let token = text.trim_end_matches(['\r', '\n']);
    if token.is_empty() {
        return Err(fatal(format!("token file {} is empty", path.display())));
    }
    Ok(Zeroizing::new(token.to_string()))
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub bind: String,
    pub ipc: Option<PathBuf>,
    pub environment: Environment,
    pub custom_root_uri: Option<String>,
    pub custom_bitcoin_network: Option<String>,
    pub tls: Option<TlsSource>,
    pub logfile: Option<PathBuf>,
    pub debug_namespaces: Vec<String>,
    pub disable_ssl: bool,
    pub disable_proxy: bool,
    pub timeout: Duration,
    pub auth_version: AuthVersion,
    pub mode: Mode,
    pub signer_auth: SignerAuth,
    /// The audit log and idempotency store directory.
    pub state_dir: PathBuf,
    /// Default trading account per enterprise for sign-and-forward.
    pub trading_accounts: std::collections::BTreeMap<String, String>,
    pub lightning_signer_file_system_path: Option<PathBuf>,
    pub keep_alive_timeout: Option<Duration>,
    pub headers_timeout: Option<Duration>,
    pub demo: bool,
    pub operations: Operations,
    /// Warnings to print at startup (deprecated variables, env switched to custom, …).
    pub warnings: Vec<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// ofc-signer's operational settings (none of them is Express's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operations {
    pub key_cache: crate::keys::unlocked::KeyCacheSettings,
    /// Wallet and keychain documents per access token (zero: off).
    pub metadata_cache_ttl: Duration,
    /// The longest the audit log waits to gather a batch for one fsync (zero: never).
    pub audit_commit_delay: Duration,
    pub log_format: LogFormat,
    pub max_connections: usize,
    pub admin_loopback_only: bool,
}

impl Default for Operations {
    fn default() -> Self {
        Operations {
            key_cache: Default::default(),
            metadata_cache_ttl: Duration::ZERO,
            audit_commit_delay: Duration::from_millis(1),
            log_format: LogFormat::Text,
            max_connections: 10_000,
            admin_loopback_only: false,
        }
    }
}

/// Where the TLS certificate and key come from.
#[derive(Clone)]
pub enum TlsSource {
    Files {
        key_path: PathBuf,
        crt_path: PathBuf,
    },
    Pem {
        key: Zeroizing<String>,
        cert: String,
    },
}

impl std::fmt::Debug for TlsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsSource::Files { key_path, crt_path } => f
                .debug_struct("Files")
                .field("key_path", key_path)
                .field("crt_path", crt_path)
                .finish(),
            TlsSource::Pem { .. } => f.write_str("Pem([REDACTED])"),
        }
    }
}

/// A configuration error: printed as `Fatal error: <message>` and the process exits non-zero
/// without listening (spec §11.6).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn fatal(message: impl Into<String>) -> ConfigError {
    ConfigError(message.into())
}

/// Express's boolean env rule: true for ANY non-empty value (even `false`).
fn env_flag(env: &Env, name: &str, aliases: &[&str], warnings: &mut Vec<String>) -> bool {
    env.read(name, aliases, warnings)
        .is_some_and(|v| !v.is_empty())
}

/// Express's numeric env rule (`Number(value)`): unparsable values are ignored.
fn env_number<T: std::str::FromStr>(
    env: &Env,
    name: &str,
    warnings: &mut Vec<String>,
) -> Option<T> {
    let raw = env.read(name, &[], warnings)?;
    match raw.trim().parse::<T>() {
        Ok(value) => Some(value),
        Err(_) => {
            warnings.push(format!("warning: ignoring {name}={raw:?}: not a number"));
            None
        }
    }
}

/// Replaces the scheme of `url` by `https://` (or prepends it) — Express's `forceSecureUrl`.
pub fn force_secure_url(url: &str) -> String {
    if let Some(index) = url.find("://") {
        let scheme = &url[..index];
        if !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return format!("https://{}", &url[index + 3..]);
        }
    }
    if let Some(rest) = url.strip_prefix("//") {
        return format!("https://{rest}");
    }
    format!("https://{url}")
}

impl Config {
    /// Resolves the command line against the environment and applies the startup checks of
    /// spec §7.3 that can fail before anything listens.
    pub fn resolve(cli: Cli, env: &Env) -> Result<Config, ConfigError> {
        let mut warnings = Vec::new();
        let w = &mut warnings;

        let port = cli
            .port
            .or_else(|| env_number(env, "BITGO_PORT", w))
            .unwrap_or(3080);
        let bind = cli
            .bind
            .or_else(|| env.read("BITGO_BIND", &[], w))
            .unwrap_or_else(|| "localhost".to_string());
        let ipc = cli
            .ipc
            .or_else(|| env.read("BITGO_IPC", &[], w).map(PathBuf::from));
        let mut env_name = cli
            .env
            .or_else(|| env.read("BITGO_ENV", &[], w))
            .unwrap_or_else(|| "test".to_string());
        let mut debug_namespaces = cli.debug_namespace;
        if debug_namespaces.is_empty()
            && let Some(list) = env.read("BITGO_DEBUG_NAMESPACE", &[], w)
        {
            debug_namespaces = list
                .split(',')
                .map(str::to_string)
                .filter(|s| !s.is_empty())
                .collect();
        }
        if cli.debug {
            debug_namespaces.push("bitgo:express".to_string());
        }
        let key_path = cli
            .key_path
            .or_else(|| env.read("BITGO_KEYPATH", &[], w).map(PathBuf::from));
        let crt_path = cli
            .crt_path
            .or_else(|| env.read("BITGO_CRTPATH", &[], w).map(PathBuf::from));
        let ssl_key = cli.ssl_key.or_else(|| env.read("BITGO_SSL_KEY", &[], w));
        let ssl_cert = cli.ssl_cert.or_else(|| env.read("BITGO_SSL_CERT", &[], w));
        let custom_root_uri = cli
            .custom_root_uri
            .or_else(|| env.read("BITGO_CUSTOM_ROOT_URI", &[], w));
        let custom_bitcoin_network = cli
            .custom_bitcoin_network
            .or_else(|| env.read("BITGO_CUSTOM_BITCOIN_NETWORK", &[], w));
        let logfile = cli
            .logfile
            .or_else(|| env.read("BITGO_LOGFILE", &[], w).map(PathBuf::from));
        let disable_ssl = cli.disable_ssl
            || env_flag(
                env,
                "BITGO_DISABLE_SSL",
                &["BITGO_DISABLESSL", "DISABLESSL", "DISABLE_SSL"],
                w,
            );
        let disable_proxy =
            cli.disable_proxy || env_flag(env, "BITGO_DISABLE_PROXY", &["DISABLE_PROXY"], w);
        // BG-9584: `disableEnvCheck` defaults to true and flag and variable can only set it to
        // true, so the NODE_ENV check only ever warns. Both are still accepted.
        let _ = cli.disable_env_check
            || env_flag(env, "BITGO_DISABLE_ENV_CHECK", &["DISABLE_ENV_CHECK"], w);
        let timeout_ms = cli
            .timeout
            .or_else(|| env_number(env, "BITGO_TIMEOUT", w))
            .unwrap_or(DEFAULT_TIMEOUT_MS);
        let auth_version = match cli
            .auth_version
            .or_else(|| env_number(env, "BITGO_AUTH_VERSION", w))
        {
            None | Some(2) => AuthVersion::V2,
            Some(3) => AuthVersion::V3,
            Some(other) => {
                return Err(fatal(format!(
                    "unsupported auth version {other}: ofc-signer signs upstream requests with HMAC v2 (default) or v3"
                )));
            }
        };
        let external_signer_url = cli
            .external_signer_url
            .or_else(|| env.read("BITGO_EXTERNAL_SIGNER_URL", &[], w));
        let signer_mode = cli.signer_mode || env_flag(env, "BITGO_SIGNER_MODE", &[], w);
        let signer_file_system_path = cli.signer_file_system_path.or_else(|| {
            env.read("BITGO_SIGNER_FILE_SYSTEM_PATH", &[], w)
                .map(PathBuf::from)
        });
        let lightning_signer_file_system_path =
            cli.lightning_signer_file_system_path.or_else(|| {
                env.read("BITGO_LIGHTNING_SIGNER_FILE_SYSTEM_PATH", &[], w)
                    .map(PathBuf::from)
            });
        let keep_alive_timeout = cli
            .keep_alive_timeout
            .or_else(|| env_number(env, "BITGO_KEEP_ALIVE_TIMEOUT", w))
            .map(Duration::from_millis);
        let headers_timeout = cli
            .headers_timeout
            .or_else(|| env_number(env, "BITGO_HEADERS_TIMEOUT", w))
            .map(Duration::from_millis);

        // §7.2: force https unless SSL is disabled.
        let custom_root_uri = custom_root_uri.map(|uri| {
            let uri = if disable_ssl {
                uri
            } else {
                force_secure_url(&uri)
            };
            uri.trim_end_matches('/').to_string()
        });
        let external_signer_url = external_signer_url.map(|url| {
            if disable_ssl {
                url
            } else {
                force_secure_url(&url)
            }
        });

        // §7.3 step 1: prod without NODE_ENV=production.
        let node_env = env.get("NODE_ENV").unwrap_or("");
        if env_name == "prod" && node_env != "production" {
            warnings.push(format!(
                "warning: unsafe NODE_ENV '{node_env}'. NODE_ENV must be set to 'production' when running against BitGo production environment."
            ));
        }
        // Step 2: TLS when serving prod on an external interface.
        let has_tls_files = key_path.is_some() && crt_path.is_some();
        let has_tls_pem = ssl_key.is_some() && ssl_cert.is_some();
        if ipc.is_none()
            && env_name == "prod"
            && bind != "localhost"
            && !disable_ssl
            && !has_tls_files
            && !has_tls_pem
        {
            return Err(fatal(
                "Must enable TLS when running against prod and listening on external interfaces!",
            ));
        }
        // Step 3: key and certificate come in pairs.
        if key_path.is_some() != crt_path.is_some() || ssl_key.is_some() != ssl_cert.is_some() {
            return Err(fatal(
                "Must provide both keypath and crtpath when running in TLS mode!",
            ));
        }
        // Step 4: a custom root URI or network implies the custom environment.
        if (custom_root_uri.is_some() || custom_bitcoin_network.is_some()) && env_name != "custom" {
            warnings.push(format!(
                "customRootUri or customBitcoinNetwork is set, but env is '{env_name}'. Setting env to 'custom'."
            ));
            env_name = "custom".to_string();
        }
        // Steps 5–7: signer options.
        if external_signer_url.is_some() && (signer_mode || signer_file_system_path.is_some()) {
            return Err(fatal(
                "signerMode or signerFileSystemPath is set, but externalSignerUrl is also set.",
            ));
        }
        if signer_mode != signer_file_system_path.is_some() {
            return Err(fatal(
                "signerMode and signerFileSystemPath must both be set in order to run in external signing mode.",
            ));
        }
        if signer_mode && lightning_signer_file_system_path.is_some() {
            return Err(fatal(
                "signerMode and lightningSignerFileSystemPath cannot be set at the same time.",
            ));
        }

        // The SDK constructor's checks, done once at startup instead of on every request.
        let base_url = if env_name == "custom" {
            custom_root_uri.clone().ok_or_else(|| {
                fatal("must use --customrooturi or set the BITGO_CUSTOM_ROOT_URI environment variable when using the custom environment")
            })?
        } else {
            environment_base_url(&env_name)
                .ok_or_else(|| fatal(format!("invalid environment {env_name}. Supported environments: prod, test, dev, latest")))?
                .to_string()
        };

        let w = &mut warnings;
        let mode = match (external_signer_url, signer_file_system_path) {
            (Some(url), _) => {
                let token = match cli.external_signer_token_file.or_else(|| {
                    env.read("OFC_SIGNER_EXTERNAL_SIGNER_TOKEN_FILE", &[], w)
                        .map(PathBuf::from)
                }) {
                    Some(path) => Some(read_token_file(&path)?),
                    None => env
                        .read("OFC_SIGNER_EXTERNAL_SIGNER_TOKEN", &[], w)
                        .map(Zeroizing::new),
                };
                let cert = cli.external_signer_cert.or_else(|| {
                    env.read("OFC_SIGNER_EXTERNAL_SIGNER_CERT", &[], w)
                        .map(PathBuf::from)
                });
                let key = cli.external_signer_key.or_else(|| {
                    env.read("OFC_SIGNER_EXTERNAL_SIGNER_KEY", &[], w)
                        .map(PathBuf::from)
                });
                let client_identity = match (cert, key) {
                    (Some(cert), Some(key)) => Some((cert, key)),
                    (None, None) => None,
                    _ => {
                        return Err(fatal(
                            "--external-signer-cert and --external-signer-key must be given together",
                        ));
                    }
                };
                Mode::ExternalSigner(ExternalSignerConfig {
                    url: url.trim_end_matches('/').to_string(),
                    token,
                    ca: cli.external_signer_ca.or_else(|| {
                        env.read("OFC_SIGNER_EXTERNAL_SIGNER_CA", &[], w)
                            .map(PathBuf::from)
                    }),
                    client_identity,
                })
            }
            (None, Some(key_file)) => Mode::Signer {
                key_file,
                poll_interval: Duration::from_millis(cli.key_file_poll_ms.unwrap_or(1000).max(10)),
            },
            (None, None) => Mode::Normal,
        };
        let auth_token = match cli.auth_token_file.or_else(|| {
            env.read("OFC_SIGNER_AUTH_TOKEN_FILE", &[], w)
                .map(PathBuf::from)
        }) {
            Some(path) => Some(read_token_file(&path)?),
            None => env
                .read("OFC_SIGNER_AUTH_TOKEN", &[], w)
                .map(Zeroizing::new),
        };
        let client_ca = cli
            .client_ca
            .or_else(|| env.read("OFC_SIGNER_CLIENT_CA", &[], w).map(PathBuf::from));
        let mut allowed_wallets: std::collections::BTreeSet<String> = cli
            .allowed_wallets
            .into_iter()
            .filter(|w| !w.is_empty())
            .collect();
        if allowed_wallets.is_empty()
            && let Some(list) = env.read("OFC_SIGNER_ALLOWED_WALLETS", &[], w)
        {
            allowed_wallets = list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
        }
        let state_dir = cli
            .state_dir
            .or_else(|| env.read("OFC_SIGNER_STATE_DIR", &[], w).map(PathBuf::from))
            .unwrap_or_else(|| crate::store::default_state_dir(port, ipc.as_deref()));
        let mut trading_account_specs = cli.trading_accounts;
        if trading_account_specs.is_empty()
            && let Some(list) = env.read("OFC_SIGNER_TRADING_ACCOUNTS", &[], w)
        {
            trading_account_specs = list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
        }
        let mut trading_accounts = std::collections::BTreeMap::new();
        for spec in trading_account_specs {
            match spec.split_once('=') {
                Some((enterprise, wallet)) if !enterprise.is_empty() && !wallet.is_empty() => {
                    trading_accounts.insert(enterprise.to_string(), wallet.to_string());
                }
                _ => {
                    return Err(fatal(format!(
                        "invalid --trading-account {spec:?}: expected <enterpriseId>=<walletId>"
                    )));
                }
            }
        }
        let defaults = Operations::default();
        let operations = Operations {
            key_cache: crate::keys::unlocked::KeyCacheSettings {
                idle_ttl: cli
                    .key_cache_ttl
                    .or_else(|| env_number(env, "OFC_SIGNER_KEY_CACHE_TTL", w))
                    .map_or(defaults.key_cache.idle_ttl, Duration::from_secs),
                capacity: cli
                    .key_cache_size
                    .or_else(|| env_number(env, "OFC_SIGNER_KEY_CACHE_SIZE", w))
                    .unwrap_or(defaults.key_cache.capacity),
            },
            metadata_cache_ttl: cli
                .metadata_cache_ttl
                .or_else(|| env_number(env, "OFC_SIGNER_METADATA_CACHE_TTL", w))
                .map_or(defaults.metadata_cache_ttl, Duration::from_secs),
            audit_commit_delay: cli
                .audit_commit_delay
                .or_else(|| env_number(env, "OFC_SIGNER_AUDIT_COMMIT_DELAY", w))
                .map_or(defaults.audit_commit_delay, Duration::from_micros),
            log_format: match cli.log_format {
                Some(format) => format,
                None => match env.read("OFC_SIGNER_LOG_FORMAT", &[], w).as_deref() {
                    None | Some("text") => LogFormat::Text,
                    Some("json") => LogFormat::Json,
                    Some(other) => {
                        return Err(fatal(format!(
                            "invalid OFC_SIGNER_LOG_FORMAT {other:?}: expected text or json"
                        )));
                    }
                },
            },
            max_connections: cli
                .max_connections
                .or_else(|| env_number(env, "OFC_SIGNER_MAX_CONNECTIONS", w))
                .unwrap_or(defaults.max_connections)
                .max(1),
            admin_loopback_only: cli.admin_loopback_only
                || env_flag(env, "OFC_SIGNER_ADMIN_LOOPBACK_ONLY", &[], w),
        };
        let signer_auth = SignerAuth {
            token: auth_token,
            client_ca,
            allowed_wallets: (!allowed_wallets.is_empty()).then_some(allowed_wallets),
        };
        let tls = if let (Some(key), Some(cert)) = (ssl_key, ssl_cert) {
            Some(TlsSource::Pem {
                key: Zeroizing::new(key),
                cert,
            })
        } else if let (Some(key_path), Some(crt_path)) = (key_path, crt_path) {
            Some(TlsSource::Files { key_path, crt_path })
        } else {
            None
        };

        Ok(Config {
            port,
            bind,
            ipc,
            environment: Environment {
                name: env_name,
                base_url,
            },
            custom_root_uri,
            custom_bitcoin_network,
            tls,
            logfile,
            debug_namespaces,
            disable_ssl,
            disable_proxy,
            timeout: Duration::from_millis(timeout_ms),
            auth_version,
            mode,
            signer_auth,
            state_dir,
            trading_accounts,
            lightning_signer_file_system_path,
            keep_alive_timeout,
            headers_timeout,
            demo: cli.demo,
            operations,
            warnings,
        })
    }

    /// Refuses options whose behaviour this build does not implement yet, rather than silently
    /// ignoring them.
    pub fn check_supported(&self) -> Result<(), ConfigError> {
        let unsupported = |what: &str| {
            Err(fatal(format!(
                "{what} is not supported by this version of ofc-signer yet"
            )))
        };
        if self.signer_auth.client_ca.is_some() && self.tls.is_none() {
            return Err(fatal(
                "--client-ca needs TLS: also give --keypath and --crtpath (or --sslkey and --sslcert)",
            ));
        }
        if self.lightning_signer_file_system_path.is_some() {
            return unsupported("--lightningSignerFileSystemPath");
        }
        Ok(())
    }

    /// `http[s]://<bind>[:<port>]`, the port omitted for 80 without TLS or 443 with TLS.
    pub fn base_uri(&self) -> String {
        let tls = self.tls.is_some();
        let scheme = if tls { "https" } else { "http" };
        let default_port = if tls { 443 } else { 80 };
        if self.port == default_port {
            format!("{scheme}://{}", self.bind)
        } else {
            format!("{scheme}://{}:{}", self.bind, self.port)
        }
    }

    /// The startup banner (spec §7.3), line by line.
    pub fn banner(&self) -> Vec<String> {
        let mut lines = vec![
            "BitGo-Express running".to_string(),
            format!("Environment: {}", self.environment.name),
        ];
        match &self.ipc {
            Some(path) => lines.push(format!("IPC path: {}", path.display())),
            None => lines.push(format!("Base URI: {}", self.base_uri())),
        }
        if let Some(uri) = &self.custom_root_uri {
            lines.push(format!("Custom root URI: {uri}"));
        }
        if let Some(network) = &self.custom_bitcoin_network {
            lines.push(format!("Custom bitcoin network: {network}"));
        }
        if matches!(self.mode, Mode::Signer { .. }) {
            lines.push("External signer mode: true".to_string());
        }
        if let Some(path) = &self.lightning_signer_file_system_path {
            lines.push(format!(
                "Lightning signer file system path: {}",
                path.display()
            ));
        }
        lines
    }

    /// The log file path made absolute, for the `Log location:` line.
    pub fn logfile_absolute(&self) -> Option<PathBuf> {
        self.logfile.as_ref().map(|path| absolute(path))
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("ofc-signer").chain(args.iter().copied()))
            .map_err(|e| ConfigError(e.to_string()))?;
        Config::resolve(cli, &Env::from_pairs(env.iter().copied()))
    }

    #[test]
    fn defaults_match_express() {
        let config = resolve(&[], &[]).unwrap();
        assert_eq!(config.port, 3080);
        assert_eq!(config.bind, "localhost");
        assert_eq!(config.environment.name, "test");
        assert_eq!(config.environment.base_url, "https://app.bitgo-test.com");
        assert_eq!(config.timeout, Duration::from_millis(305_000));
        assert_eq!(config.auth_version, AuthVersion::V2);
        assert_eq!(config.mode, Mode::Normal);
        assert_eq!(config.base_uri(), "http://localhost:3080");
    }

    #[test]
    fn audit_commit_delay_in_microseconds_from_flag_env_or_default() {
        let delay = |args: &[&str], env: &[(&str, &str)]| {
            resolve(args, env).unwrap().operations.audit_commit_delay
        };
        assert_eq!(delay(&[], &[]), Duration::from_millis(1));
        let env = [("OFC_SIGNER_AUDIT_COMMIT_DELAY", "0")];
        assert_eq!(delay(&[], &env), Duration::ZERO);
        assert_eq!(
            delay(&["--audit-commit-delay", "250"], &env),
            Duration::from_micros(250)
        );
    }

    #[test]
    fn cli_beats_env_beats_default() {
        let config = resolve(
            &["-p", "4000"],
            &[("BITGO_PORT", "5000"), ("BITGO_BIND", "0.0.0.0")],
        )
        .unwrap();
        assert_eq!(config.port, 4000);
        assert_eq!(config.bind, "0.0.0.0");
        let config = resolve(&[], &[("BITGO_PORT", "5000"), ("BITGO_BIND", "")]).unwrap();
        assert_eq!(config.port, 5000);
        assert_eq!(
            config.bind, "localhost",
            "an empty primary variable counts as unset"
        );
        let config = resolve(&["--timeout", "500"], &[("BITGO_TIMEOUT", "900")]).unwrap();
        assert_eq!(config.timeout, Duration::from_millis(500));
        let config = resolve(&[], &[("BITGO_PORT", "not-a-number")]).unwrap();
        assert_eq!(config.port, 3080);
    }

    #[test]
    fn boolean_env_is_true_for_any_non_empty_value_and_aliases_warn() {
        let config = resolve(&[], &[("BITGO_DISABLE_PROXY", "false")]).unwrap();
        assert!(config.disable_proxy);
        let config = resolve(&[], &[("DISABLESSL", "1")]).unwrap();
        assert!(config.disable_ssl);
        assert_eq!(
            config.warnings,
            vec![
                "warning: using deprecated environment variable 'DISABLESSL'. Please use the 'BITGO_DISABLE_SSL' environment variable instead."
            ]
        );
    }

    #[test]
    fn custom_root_uri_forces_https_and_custom_env() {
        let config = resolve(&["-u", "http://127.0.0.1:9000/"], &[]).unwrap();
        assert_eq!(config.environment.name, "custom");
        assert_eq!(config.environment.base_url, "https://127.0.0.1:9000");
        assert!(
            config
                .warnings
                .iter()
                .any(|w| w.contains("Setting env to 'custom'"))
        );
        let config = resolve(
            &[
                "-e",
                "custom",
                "-u",
                "http://127.0.0.1:9000",
                "--disablessl",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(config.environment.base_url, "http://127.0.0.1:9000");
        assert_eq!(force_secure_url("test.bitgo.com"), "https://test.bitgo.com");
        assert_eq!(force_secure_url("//x"), "https://x");
    }

    #[test]
    fn startup_checks() {
        let err = |args: &[&str], env: &[(&str, &str)]| resolve(args, env).unwrap_err().0;
        assert_eq!(
            err(&["-e", "prod", "-b", "0.0.0.0"], &[]),
            "Must enable TLS when running against prod and listening on external interfaces!"
        );
        assert_eq!(
            err(
                &["-e", "prod", "-b", "127.0.0.1"],
                &[("NODE_ENV", "production")]
            ),
            "Must enable TLS when running against prod and listening on external interfaces!"
        );
        assert!(
            resolve(&["-e", "prod"], &[]).is_ok(),
            "localhost needs no TLS"
        );
        assert!(
            resolve(&["-e", "production", "-b", "0.0.0.0"], &[]).is_ok(),
            "the alias bypasses the check"
        );
        assert_eq!(
            err(&["-k", "key.pem"], &[]),
            "Must provide both keypath and crtpath when running in TLS mode!"
        );
        assert_eq!(
            err(&["-e", "custom"], &[]),
            "must use --customrooturi or set the BITGO_CUSTOM_ROOT_URI environment variable when using the custom environment"
        );
        assert_eq!(
            err(&["-e", "nowhere"], &[]),
            "invalid environment nowhere. Supported environments: prod, test, dev, latest"
        );
        assert_eq!(
            err(&["--signerMode"], &[]),
            "signerMode and signerFileSystemPath must both be set in order to run in external signing mode."
        );
        assert_eq!(
            err(&["--externalSignerUrl", "http://x", "--signerMode"], &[]),
            "signerMode or signerFileSystemPath is set, but externalSignerUrl is also set."
        );
        assert!(err(&["--authversion", "4"], &[]).contains("unsupported auth version 4"));
        let config = resolve(&["-e", "prod"], &[("NODE_ENV", "development")]).unwrap();
        assert!(
            config
                .warnings
                .iter()
                .any(|w| w.contains("unsafe NODE_ENV 'development'"))
        );
    }

    #[test]
    fn banner_lines() {
        let config = resolve(
            &[
                "-b",
                "127.0.0.1",
                "-p",
                "4100",
                "-u",
                "http://up:1",
                "--disablessl",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            config.banner(),
            vec![
                "BitGo-Express running",
                "Environment: custom",
                "Base URI: http://127.0.0.1:4100",
                "Custom root URI: http://up:1",
            ]
        );
        let config = resolve(&["-p", "80"], &[]).unwrap();
        assert_eq!(config.base_uri(), "http://localhost");
    }

    #[test]
    fn dotenv_and_wallet_passphrases() {
        let parsed = parse_dotenv(
            "# c\nexport A=1\nWALLET_w1_PASSPHRASE=\"p q\\n\"\nB='x y' \nC=plain # comment\n",
        );
        let env = Env(parsed.into_iter().collect());
        assert_eq!(env.get("A"), Some("1"));
        assert_eq!(env.get("B"), Some("x y"));
        assert_eq!(env.get("C"), Some("plain"));
        assert_eq!(
            env.wallet_passphrases().get("w1").map(|p| p.as_str()),
            Some("p q\n")
        );
    }
}
