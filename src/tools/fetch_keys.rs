//! `ofc-signer fetch-keys`: the signer-mode key file, as Express's `fetchEncryptedPrivKeys.ts`
//! writes it (spec §1.6).
//!
//! Configuration (environment, `.env` too, as the script's `dotenv/config`):
//! - `BITGO_EXTERNAL_SIGNER_ENV` (default `test`; `--env` overrides): a BitGo environment name,
//!   or `custom` with `BITGO_CUSTOM_ROOT_URI` / `--customrooturi` (forced to `https://` unless
//!   `--disablessl` / `BITGO_DISABLE_SSL`);
//! - `BITGO_EXTERNAL_SIGNER_ACCESS_TOKEN`;
//! - `BITGO_EXTERNAL_SIGNER_WALLET_IDS`: `{"<coin>": ["<walletId>" | {"walletId", "walletPassword",
//!   "secret", "encryptionVersion"?}, …], …}`;
//! - `BITGO_EXTERNAL_SIGNER_WALLET_IDS_WITH_PRV`: `[{"walletId", "encryptedPrv"}, …]`.
//!
//! For each wallet: `GET /api/v2/<coin>/wallet/<id>`, `GET /api/v2/<coin>/key/<keys[0]>` (HMAC v2
//! with the access token, answers HMAC-verified), take `encryptedPrv`; without one, encrypt
//! `secret` with `walletPassword` when they were given (v2 envelope, v1 for
//! `"encryptionVersion": 1`), else warn and skip. The `WITH_PRV` entries override. The file is
//! `JSON.stringify(keys, null, '\t')`, written atomically (temporary file + rename) with mode 0600
//! from the start.
//!
//! Deliberate differences from the script: any upstream error stops the run before anything is
//! written (the script throws too, but a half-written map is never an outcome here), and a run
//! that would write no key at all leaves an existing file alone and fails.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use zeroize::Zeroizing;

use crate::config::{Env, environment_base_url, force_secure_url};
use crate::js_json::{self, JsObject, JsValue};
use crate::keys::envelope::{self, EnvelopeVersion};
use crate::tools::ToolError;
use crate::upstream::client::{
    ClientSettings, SystemClock, UpstreamClient, UpstreamRequest, encode_path_segment,
};
use crate::upstream::hmac::{AccessToken, AuthVersion};

pub const ENV_VAR: &str = "BITGO_EXTERNAL_SIGNER_ENV";
pub const TOKEN_VAR: &str = "BITGO_EXTERNAL_SIGNER_ACCESS_TOKEN";
pub const WALLET_IDS_VAR: &str = "BITGO_EXTERNAL_SIGNER_WALLET_IDS";
pub const WITH_PRV_VAR: &str = "BITGO_EXTERNAL_SIGNER_WALLET_IDS_WITH_PRV";
/// The file name the script writes.
pub const DEFAULT_FILE_NAME: &str = "encryptedPrivKeys.json";
/// Timeout of each BitGo call.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// `ofc-signer fetch-keys [--out <PATH>] [--env <NAME>] [--customrooturi <URL>] [--disablessl]`
#[derive(clap::Args, Debug)]
pub struct FetchKeysArgs {
    /// Where to write the key file.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_FILE_NAME)]
    pub out: PathBuf,
    /// BitGo environment: test, prod, dev, staging, custom, … (default: BITGO_EXTERNAL_SIGNER_ENV,
    /// else test; custom when only --customrooturi is given).
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
    /// Root URI of the custom environment (default: BITGO_CUSTOM_ROOT_URI).
    #[arg(long = "customrooturi", value_name = "URL")]
    pub custom_root_uri: Option<String>,
    /// Allow a plain-http custom root URI (also BITGO_DISABLE_SSL).
    #[arg(long = "disablessl")]
    pub disable_ssl: bool,
}

// ------------------------------------------------------------------------------------------------
// Configuration (pure)
// ------------------------------------------------------------------------------------------------

/// `walletPassword` and `secret` of a wallet entry; zeroized on drop, never printed.
#[derive(Clone, Default)]
pub struct Credentials {
    pub wallet_password: Option<Zeroizing<String>>,
    pub secret: Option<Zeroizing<String>>,
    pub version: Option<EnvelopeVersion>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials([REDACTED])")
    }
}

impl Credentials {
    /// The envelope version: v1 only for `"encryptionVersion": 1` (the number), as the SDK's
    /// `encrypt` decides; everything else is v2.
    pub fn envelope_version(&self) -> EnvelopeVersion {
        self.version.unwrap_or(EnvelopeVersion::V2)
    }
}

/// One wallet of `BITGO_EXTERNAL_SIGNER_WALLET_IDS`.
#[derive(Debug, Clone)]
pub struct WalletRequest {
    pub coin: String,
    pub wallet_id: String,
    /// Present for the `{walletId, walletPassword, secret}` form.
    pub credentials: Option<Credentials>,
}

/// One entry of `BITGO_EXTERNAL_SIGNER_WALLET_IDS_WITH_PRV`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithPrv {
    pub wallet_id: String,
    pub encrypted_prv: String,
}

/// JSON of a variable; the error never quotes the text (it may hold passwords).
fn parse_variable(name: &str, text: &str) -> Result<JsValue, String> {
    js_json::parse(text).map_err(|e| {
        format!(
            "{name} is not valid JSON (error at byte {} of {})",
            e.position,
            text.len()
        )
    })
}

fn string_field(
    object: &JsObject,
    key: &str,
    context: &dyn Fn() -> String,
) -> Result<Option<String>, String> {
    match object.get(key) {
        None | Some(JsValue::Null) => Ok(None),
        Some(JsValue::String(s)) => Ok(Some(s.to_utf8_lossy().into_owned())),
        Some(other) => Err(format!(
            "{}: {key} must be a string, not {}",
            context(),
            other.type_of()
        )),
    }
}

/// Parses `BITGO_EXTERNAL_SIGNER_WALLET_IDS`, in the order `Object.entries` gives.
///
/// The parsed JSON tree is dropped right away; the passwords and secrets kept are in
/// [`Zeroizing`] (the variable itself stays in the process environment regardless).
pub fn parse_wallet_ids(text: &str) -> Result<Vec<WalletRequest>, String> {
    let value = parse_variable(WALLET_IDS_VAR, text)?;
    let coins = value.as_object().ok_or_else(|| {
        format!(
            "{WALLET_IDS_VAR} must be a JSON object {{\"<coin>\": [walletIds…]}}, not {}",
            value.type_of()
        )
    })?;
    let mut wallets = Vec::new();
    for (coin, entries) in coins.iter() {
        let coin = coin.to_utf8_lossy().into_owned();
        let entries = entries.as_array().ok_or_else(|| {
            format!("{WALLET_IDS_VAR}: the value of coin {coin:?} must be an array")
        })?;
        for (index, entry) in entries.iter().enumerate() {
            let context = || format!("{WALLET_IDS_VAR}: coin {coin:?}, entry {index}");
            let request = match entry {
                JsValue::String(id) => WalletRequest {
                    coin: coin.clone(),
                    wallet_id: id.to_utf8_lossy().into_owned(),
                    credentials: None,
                },
                JsValue::Object(object) => {
                    let wallet_id = string_field(object, "walletId", &context)?
                        .ok_or_else(|| format!("{}: walletId is missing", context()))?;
                    let version = match object.get("encryptionVersion") {
                        Some(JsValue::Number(n)) if *n == 1.0 => Some(EnvelopeVersion::V1),
                        Some(JsValue::Null) | None => None,
                        Some(_) => Some(EnvelopeVersion::V2),
                    };
                    WalletRequest {
                        coin: coin.clone(),
                        wallet_id,
                        credentials: Some(Credentials {
                            wallet_password: string_field(object, "walletPassword", &context)?
                                .map(Zeroizing::new),
                            secret: string_field(object, "secret", &context)?.map(Zeroizing::new),
                            version,
                        }),
                    }
                }
                other => {
                    return Err(format!(
                        "{}: expected a walletId string or an object, not {}",
                        context(),
                        other.type_of()
                    ));
                }
            };
            if request.wallet_id.is_empty() {
                return Err(format!("{}: empty walletId", context()));
            }
            wallets.push(request);
        }
    }
    Ok(wallets)
}

/// Parses `BITGO_EXTERNAL_SIGNER_WALLET_IDS_WITH_PRV`.
pub fn parse_with_prv(text: &str) -> Result<Vec<WithPrv>, String> {
    let value = parse_variable(WITH_PRV_VAR, text)?;
    let entries = value.as_array().ok_or_else(|| {
        format!(
            "{WITH_PRV_VAR} must be a JSON array [{{\"walletId\", \"encryptedPrv\"}}…], not {}",
            value.type_of()
        )
    })?;
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let context = || format!("{WITH_PRV_VAR}: entry {index}");
            let object = entry
                .as_object()
                .ok_or_else(|| format!("{}: expected an object", context()))?;
            let wallet_id = string_field(object, "walletId", &context)?
                .filter(|id| !id.is_empty())
                .ok_or_else(|| format!("{}: walletId is missing", context()))?;
            let encrypted_prv = string_field(object, "encryptedPrv", &context)?
                .filter(|prv| !prv.is_empty())
                .ok_or_else(|| format!("{}: encryptedPrv is missing", context()))?;
            Ok(WithPrv {
                wallet_id,
                encrypted_prv,
            })
        })
        .collect()
}

/// The BitGo root URL: `--env`, else `BITGO_EXTERNAL_SIGNER_ENV`, else `custom` when a root URI
/// was given on the command line, else `test`; `custom` takes `--customrooturi`, else
/// `BITGO_CUSTOM_ROOT_URI`, forced to https unless SSL is disabled.
pub fn resolve_base_url(
    env_flag: Option<&str>,
    env_var: Option<&str>,
    root_flag: Option<&str>,
    root_var: Option<&str>,
    disable_ssl: bool,
) -> Result<String, String> {
    let name = env_flag
        .or(env_var)
        .or(root_flag.map(|_| "custom"))
        .unwrap_or("test");
    if name == "custom" {
        let root = root_flag.or(root_var).filter(|r| !r.is_empty()).ok_or(
            "must use --customrooturi or set the BITGO_CUSTOM_ROOT_URI environment variable when using the custom environment",
        )?;
        let root = if disable_ssl {
            root.to_string()
        } else {
            force_secure_url(root)
        };
        return Ok(root.trim_end_matches('/').to_string());
    }
    if root_flag.is_some() {
        return Err(format!(
            "--customrooturi needs the custom environment, but the environment is {name}"
        ));
    }
    environment_base_url(name).map(str::to_string).ok_or_else(|| {
        format!(
            "invalid environment {name}. Supported environments: prod, test, dev, staging, custom, …"
        )
    })
}

// ------------------------------------------------------------------------------------------------
// Assembling the key file (pure)
// ------------------------------------------------------------------------------------------------

/// Where a key file entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The `encryptedPrv` of the wallet's user keychain.
    Keychain,
    /// `secret` encrypted here with `walletPassword`.
    EncryptedHere(EnvelopeVersion),
    /// `BITGO_EXTERNAL_SIGNER_WALLET_IDS_WITH_PRV`.
    WithPrv,
}

/// What `fetch-keys` will write and what it skipped.
#[derive(Debug, Default)]
pub struct KeyFilePlan {
    /// walletId → envelope, in JavaScript's property order.
    pub entries: JsObject,
    /// Where each written entry came from, and its coin.
    pub sources: HashMap<String, (Option<String>, Source)>,
    /// `(coin, walletId)` of the wallets that had no key and no credentials.
    pub skipped: Vec<(String, String)>,
}

impl KeyFilePlan {
    /// The skipped wallets that did not get an entry from elsewhere after all.
    pub fn still_missing(&self) -> impl Iterator<Item = &(String, String)> {
        self.skipped
            .iter()
            .filter(|(_, id)| !self.entries.contains_key(id))
    }
}

/// The script's loop after the fetches: each wallet's `encryptedPrv` (as fetched), else its
/// `secret` encrypted by `encrypt` when it came with credentials, else skipped; then the
/// `WITH_PRV` entries override.
pub fn assemble(
    fetched: Vec<(WalletRequest, Option<String>)>,
    with_prv: Vec<WithPrv>,
    mut encrypt: impl FnMut(&Credentials) -> Result<String, String>,
) -> Result<KeyFilePlan, String> {
    let mut plan = KeyFilePlan::default();
    for (wallet, encrypted_prv) in fetched {
        let (envelope, source) = match (encrypted_prv, &wallet.credentials) {
            (Some(encrypted_prv), _) => (encrypted_prv, Source::Keychain),
            (None, Some(credentials)) => {
                let envelope = encrypt(credentials).map_err(|e| {
                    format!(
                        "wallet {} ({}): cannot encrypt its secret: {e}",
                        wallet.wallet_id, wallet.coin
                    )
                })?;
                (
                    envelope,
                    Source::EncryptedHere(credentials.envelope_version()),
                )
            }
            (None, None) => {
                plan.skipped.push((wallet.coin, wallet.wallet_id));
                continue;
            }
        };
        plan.entries.insert(wallet.wallet_id.as_str(), envelope);
        plan.sources
            .insert(wallet.wallet_id, (Some(wallet.coin), source));
    }
    for entry in with_prv {
        plan.entries
            .insert(entry.wallet_id.as_str(), entry.encrypted_prv);
        plan.sources
            .insert(entry.wallet_id, (None, Source::WithPrv));
    }
    Ok(plan)
}

/// Encrypts a wallet's `secret` with its `walletPassword` (the SDK's messages for missing ones).
pub fn encrypt_credentials(credentials: &Credentials) -> Result<String, String> {
    let password = credentials
        .wallet_password
        .as_deref()
        .map(String::as_str)
        .unwrap_or("");
    let secret = credentials
        .secret
        .as_deref()
        .map(String::as_str)
        .unwrap_or("");
    envelope::encrypt(password, secret, credentials.envelope_version(), None)
        .map_err(|e| e.message().to_string())
}

/// `JSON.stringify(entries, null, '\t')` of a flat object of strings.
pub fn render_key_file(entries: &JsObject) -> String {
    if entries.is_empty() {
        return "{}".to_string();
    }
    let mut out = String::from("{");
    for (index, (key, value)) in entries.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str("\n\t");
        key.write_json(&mut out);
        out.push_str(": ");
        value.write_json(&mut out);
    }
    out.push_str("\n}");
    out
}

/// The summary printed after writing: file, count, and one line per wallet (ids, coins and
/// sources only: never a password, secret, token or envelope).
pub fn summary(plan: &KeyFilePlan, path: &Path) -> Vec<String> {
    let mut lines = vec![format!(
        "Wallet IDs and encrypted private keys saved to {} ({} written, {} skipped; mode 0600)",
        path.display(),
        plan.entries.len(),
        plan.still_missing().count()
    )];
    for id in plan.entries.keys() {
        let id = id.to_utf8_lossy();
        let (coin, source) = match plan.sources.get(id.as_ref()) {
            Some((coin, source)) => (coin.as_deref().unwrap_or("-"), *source),
            None => ("-", Source::WithPrv),
        };
        let source = match source {
            Source::Keychain => "user keychain encryptedPrv".to_string(),
            Source::EncryptedHere(EnvelopeVersion::V1) => {
                "secret encrypted with walletPassword (v1 envelope)".to_string()
            }
            Source::EncryptedHere(EnvelopeVersion::V2) => {
                "secret encrypted with walletPassword (v2 envelope)".to_string()
            }
            Source::WithPrv => WITH_PRV_VAR.to_string(),
        };
        lines.push(format!("  written  {id}  {coin}  {source}"));
    }
    for (coin, id) in plan.still_missing() {
        lines.push(format!(
            "  skipped  {id}  {coin}  no encryptedPrv and no credentials"
        ));
    }
    lines
}

// ------------------------------------------------------------------------------------------------
// The edges: BitGo, the file
// ------------------------------------------------------------------------------------------------

/// `GET /api/v2/<coin>/wallet/<id>`, then `GET /api/v2/<coin>/key/<keys[0]>`: the user keychain's
/// `encryptedPrv`, `None` when it has none.
pub async fn fetch_encrypted_prv(
    client: &UpstreamClient,
    token: &AccessToken,
    coin: &str,
    wallet_id: &str,
) -> Result<Option<String>, String> {
    let coin_segment = encode_path_segment(coin);
    let wallet_path = format!(
        "/api/v2/{coin_segment}/wallet/{}",
        encode_path_segment(wallet_id)
    );
    let failed = |what: &str, e: crate::error::ApiError| {
        format!(
            "{what} of wallet {wallet_id} ({coin}) failed: {} (status {})",
            e.message_text(),
            e.status.as_u16()
        )
    };
    let wallet = client
        .send(UpstreamRequest::new(Method::GET, &wallet_path).token(Some(token)))
        .await
        .map_err(|e| failed("GET wallet", e))?
        .json();
    let key_id = match wallet
        .get("keys")
        .and_then(JsValue::as_array)
        .and_then(|keys| keys.first())
    {
        Some(JsValue::String(id)) if !id.is_empty() => id.to_utf8_lossy().into_owned(),
        _ => return Err(format!("wallet {wallet_id} ({coin}) has no user key id")),
    };
    let key_path = format!(
        "/api/v2/{coin_segment}/key/{}",
        encode_path_segment(&key_id)
    );
    let keychain = client
        .send(UpstreamRequest::new(Method::GET, &key_path).token(Some(token)))
        .await
        .map_err(|e| failed("GET user keychain", e))?
        .json();
    Ok(match keychain.get("encryptedPrv") {
        Some(JsValue::String(envelope)) if !envelope.is_empty() => {
            Some(envelope.to_utf8_lossy().into_owned())
        }
        _ => None,
    })
}

/// Writes `contents` to `path` atomically: a temporary file in the same directory, created with
/// mode 0600 (never readable by others, not even briefly), synced, then renamed over `path`.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the output path has no file name",
        )
    })?;
    let mut temporary_name = OsString::from(".");
    temporary_name.push(file_name);
    temporary_name.push(format!(
        ".{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let temporary = directory.join(temporary_name);

    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary)?;
    let written = (|| {
        #[cfg(unix)]
        {
            // Exactly 0600 whatever the umask.
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written?;
    #[cfg(unix)]
    if let Ok(directory) = std::fs::File::open(directory) {
        let _ = directory.sync_all();
    }
    Ok(())
}

/// Reads a variable; empty counts as unset.
fn variable<'a>(env: &'a Env, name: &str) -> Option<&'a str> {
    env.get(name).filter(|v| !v.is_empty())
}

pub fn run(args: FetchKeysArgs) -> Result<ExitCode, ToolError> {
    let env = Env::from_process();
    let wallets = match variable(&env, WALLET_IDS_VAR) {
        Some(text) => parse_wallet_ids(text).map_err(ToolError::usage)?,
        None => Vec::new(),
    };
    let with_prv = match variable(&env, WITH_PRV_VAR) {
        Some(text) => parse_with_prv(text).map_err(ToolError::usage)?,
        None => Vec::new(),
    };
    if wallets.is_empty() && with_prv.is_empty() {
        return Err(ToolError::usage(format!(
            "no wallets: set {WALLET_IDS_VAR} (and/or {WITH_PRV_VAR})"
        )));
    }

    let fetched = if wallets.is_empty() {
        Vec::new()
    } else {
        let base_url = resolve_base_url(
            args.env.as_deref(),
            variable(&env, ENV_VAR),
            args.custom_root_uri.as_deref(),
            variable(&env, "BITGO_CUSTOM_ROOT_URI"),
            args.disable_ssl || variable(&env, "BITGO_DISABLE_SSL").is_some(),
        )
        .map_err(ToolError::usage)?;
        let token = variable(&env, TOKEN_VAR)
            .map(AccessToken::new)
            .ok_or_else(|| ToolError::usage(format!("{TOKEN_VAR} is not set")))?;
        let client = UpstreamClient::new(ClientSettings {
            base_url,
            auth_version: AuthVersion::V2,
            timeout: UPSTREAM_TIMEOUT,
            clock: Arc::new(SystemClock),
            proxy: variable(&env, "BITGO_USE_PROXY").map(str::to_string),
        })
        .map_err(ToolError::failure)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ToolError::failure(format!("cannot start the runtime: {e}")))?;
        runtime.block_on(async {
            let mut fetched = Vec::with_capacity(wallets.len());
            for wallet in wallets {
                let encrypted_prv =
                    fetch_encrypted_prv(&client, &token, &wallet.coin, &wallet.wallet_id)
                        .await
                        .map_err(ToolError::failure)?;
                fetched.push((wallet, encrypted_prv));
            }
            Ok::<_, ToolError>(fetched)
        })?
    };

    let plan = assemble(fetched, with_prv, encrypt_credentials).map_err(ToolError::failure)?;
    for (coin, id) in &plan.skipped {
        eprintln!(
            "warning: could not find a {coin} encrypted user private key for wallet id {id}, skipping"
        );
    }
    if plan.entries.is_empty() {
        return Err(ToolError::failure(format!(
            "no keys to write; {} left unchanged",
            args.out.display()
        )));
    }
    write_private_file(&args.out, render_key_file(&plan.entries).as_bytes())
        .map_err(|e| ToolError::failure(format!("cannot write {}: {e}", args.out.display())))?;
    for line in summary(&plan, &args.out) {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wallet_ids_both_forms_in_order() {
        let wallets = parse_wallet_ids(
            r#"{"tbtc":["a1", {"walletId":"a2","walletPassword":"pw","secret":"xprv1"}],
                "ofc":[{"walletId":"b1","walletPassword":"pw","secret":"s","encryptionVersion":1},
                       {"walletId":"b2","encryptionVersion":"1"}]}"#,
        )
        .unwrap();
        let ids: Vec<_> = wallets
            .iter()
            .map(|w| (w.coin.as_str(), w.wallet_id.as_str()))
            .collect();
        assert_eq!(
            ids,
            [("tbtc", "a1"), ("tbtc", "a2"), ("ofc", "b1"), ("ofc", "b2")]
        );
        assert!(wallets[0].credentials.is_none());
        let credentials = wallets[1].credentials.as_ref().unwrap();
        assert_eq!(credentials.wallet_password.as_deref().unwrap(), "pw");
        assert_eq!(credentials.envelope_version(), EnvelopeVersion::V2);
        let v1 = wallets[2].credentials.as_ref().unwrap();
        assert_eq!(v1.envelope_version(), EnvelopeVersion::V1);
        // Only the number 1 selects v1 (spec §3.1).
        let string_one = wallets[3].credentials.as_ref().unwrap();
        assert_eq!(string_one.envelope_version(), EnvelopeVersion::V2);
        assert!(string_one.secret.is_none());
        assert_eq!(format!("{credentials:?}"), "Credentials([REDACTED])");
    }

    #[test]
    fn configuration_errors_never_quote_the_text() {
        let error =
            parse_wallet_ids(r#"{"tbtc":[{"walletId":"a","walletPassword":"hunter2"#).unwrap_err();
        assert!(error.starts_with("BITGO_EXTERNAL_SIGNER_WALLET_IDS is not valid JSON"));
        assert!(!error.contains("hunter2"), "{error}");
        let error =
            parse_wallet_ids(r#"{"tbtc":[{"walletId":"a","walletPassword":7}]}"#).unwrap_err();
        assert_eq!(
            error,
            "BITGO_EXTERNAL_SIGNER_WALLET_IDS: coin \"tbtc\", entry 0: walletPassword must be a string, not number"
        );
        assert!(parse_wallet_ids(r#"["a"]"#).is_err());
        assert!(parse_wallet_ids(r#"{"tbtc":"a"}"#).is_err());
        assert!(parse_wallet_ids(r#"{"tbtc":[1]}"#).is_err());
        assert!(parse_wallet_ids(r#"{"tbtc":[{"secret":"x"}]}"#).is_err());
        assert!(parse_wallet_ids(r#"{"tbtc":[""]}"#).is_err());
        assert_eq!(parse_wallet_ids("{}").unwrap().len(), 0);
    }

    #[test]
    fn with_prv_entries() {
        let entries = parse_with_prv(r#"[{"walletId":"w","encryptedPrv":"{\"v\":2}"}]"#).unwrap();
        assert_eq!(
            entries,
            [WithPrv {
                wallet_id: "w".into(),
                encrypted_prv: r#"{"v":2}"#.into()
            }]
        );
        assert!(parse_with_prv(r#"[{"walletId":"w"}]"#).is_err());
        assert!(parse_with_prv(r#"{"walletId":"w","encryptedPrv":"x"}"#).is_err());
        assert!(parse_with_prv("[1]").is_err());
    }

    #[test]
    fn environments() {
        let url = |e, v, rf, rv, d| resolve_base_url(e, v, rf, rv, d);
        assert_eq!(
            url(None, None, None, None, false).unwrap(),
            "https://app.bitgo-test.com"
        );
        assert_eq!(
            url(None, Some("prod"), None, None, false).unwrap(),
            "https://app.bitgo.com"
        );
        assert_eq!(
            url(Some("staging"), Some("prod"), None, None, false).unwrap(),
            "https://app.bitgo-staging.com"
        );
        assert_eq!(
            url(None, None, Some("http://127.0.0.1:9/"), None, true).unwrap(),
            "http://127.0.0.1:9"
        );
        assert_eq!(
            url(None, Some("custom"), None, Some("http://h:1"), false).unwrap(),
            "https://h:1"
        );
        // BITGO_CUSTOM_ROOT_URI alone does not switch environments (the SDK reads it for custom).
        assert_eq!(
            url(None, None, None, Some("http://h:1"), false).unwrap(),
            "https://app.bitgo-test.com"
        );
        assert!(url(None, Some("custom"), None, None, false).is_err());
        assert!(url(None, Some("nope"), None, None, false).is_err());
        assert!(url(None, Some("prod"), Some("https://h"), None, false).is_err());
    }

    fn request(coin: &str, id: &str, credentials: Option<Credentials>) -> WalletRequest {
        WalletRequest {
            coin: coin.into(),
            wallet_id: id.into(),
            credentials,
        }
    }

    #[test]
    fn assembly_order_sources_overrides() {
        let credentials = Credentials {
            wallet_password: Some(Zeroizing::new("pw".into())),
            secret: Some(Zeroizing::new("s".into())),
            version: Some(EnvelopeVersion::V1),
        };
        let fetched = vec![
            (request("ofc", "b", None), Some("env-b".to_string())),
            (request("ofc", "a", Some(credentials.clone())), None),
            (request("tbtc", "c", None), None),
            (request("tbtc", "d", None), Some("env-d".to_string())),
            (request("ofc", "e", None), None),
            (request("ofc", "7", None), Some("env-7".to_string())),
        ];
        let with_prv = vec![
            WithPrv {
                wallet_id: "d".into(),
                encrypted_prv: "override-d".into(),
            },
            WithPrv {
                wallet_id: "e".into(),
                encrypted_prv: "given-e".into(),
            },
            WithPrv {
                wallet_id: "f".into(),
                encrypted_prv: "given-f".into(),
            },
        ];
        let plan = assemble(fetched, with_prv, |c| {
            Ok(format!(
                "encrypted-{}",
                c.secret.as_deref().unwrap().as_str()
            ))
        })
        .unwrap();
        // JavaScript property order: integer-like keys first, then insertion order; an
        // overridden key keeps its place.
        assert_eq!(
            render_key_file(&plan.entries),
            "{\n\t\"7\": \"env-7\",\n\t\"b\": \"env-b\",\n\t\"a\": \"encrypted-s\",\n\t\"d\": \"override-d\",\n\t\"e\": \"given-e\",\n\t\"f\": \"given-f\"\n}"
        );
        assert_eq!(
            plan.skipped,
            [("tbtc".into(), "c".into()), ("ofc".into(), "e".into())]
        );
        assert_eq!(
            plan.still_missing().collect::<Vec<_>>(),
            [&("tbtc".to_string(), "c".to_string())]
        );
        assert_eq!(
            plan.sources.get("a"),
            Some(&(
                Some("ofc".into()),
                Source::EncryptedHere(EnvelopeVersion::V1)
            ))
        );
        assert_eq!(plan.sources.get("d"), Some(&(None, Source::WithPrv)));
        let summary = summary(&plan, Path::new("k.json")).join("\n");
        assert!(summary.starts_with(
            "Wallet IDs and encrypted private keys saved to k.json (6 written, 1 skipped; mode 0600)"
        ));
        assert!(!summary.contains("encrypted-s") && !summary.contains("env-b"));

        let failing = assemble(
            vec![(request("ofc", "a", Some(Credentials::default())), None)],
            Vec::new(),
            encrypt_credentials,
        )
        .unwrap_err();
        assert_eq!(
            failing,
            "wallet a (ofc): cannot encrypt its secret: Missing parameter: input"
        );
    }

    #[test]
    fn rendering_escapes_like_json_stringify() {
        let mut entries = JsObject::new();
        entries.insert("w", r#"{"iv":"a/b","ct":"x"}"#);
        assert_eq!(
            render_key_file(&entries),
            "{\n\t\"w\": \"{\\\"iv\\\":\\\"a/b\\\",\\\"ct\\\":\\\"x\\\"}\"\n}"
        );
        assert_eq!(render_key_file(&JsObject::new()), "{}");
    }

    #[cfg(unix)]
    #[test]
    fn private_file_is_0600_and_replaces_atomically() {
        use std::os::unix::fs::PermissionsExt;
        let directory = std::env::temp_dir().join(format!(
            "ofc-signer-fetch-keys-unit-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("keys.json");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private_file(&path, b"{}").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary file left behind.
        assert_eq!(std::fs::read_dir(&directory).unwrap().count(), 1);
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
