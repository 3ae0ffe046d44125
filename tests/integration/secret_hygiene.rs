//! Secret hygiene of the real binary: every route and error path is driven with known
//! passphrases, keys and tokens (debug logging on, JSON and text logs), then standard output,
//! standard error, the log file, the audit log, every answer and `/metrics` are searched for
//! them — raw, hex and base64: no hit. Also: core dumps are off for the process.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::common::*;
use base64::Engine;
use ofc_signer::js_json::{JsObject, JsValue};
use ofc_signer::keys::envelope::{self, EnvelopeVersion};
use ofc_signer::keys::xprv::{master_xprv_from_seed, xpub_from_xprv};
use ofc_signer::sandbox::Sandbox;

const WALLET: &str = "5f00000000000000000000000000ab1e";
const BODY_PASSPHRASE: &str = "hygiene body passphrase 7Qx";
const ENV_WALLET: &str = "5f00000000000000000000000000ab2e";
const ENV_PASSPHRASE: &str = "hygiene env passphrase 3Kv";
const WRONG_PASSPHRASE: &str = "hygiene wrong passphrase 9Zt";
const SIGNER_TOKEN: &str = "hygiene-signer-token-5Rw";
const WRONG_SIGNER_TOKEN: &str = "hygiene-wrong-signer-token-2Lp";

/// Every way a secret could be written down.
fn forms(secret: &str) -> Vec<String> {
    let bytes = secret.as_bytes();
    let mut forms = vec![
        secret.to_string(),
        hex::encode(bytes),
        base64::engine::general_purpose::STANDARD.encode(bytes),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
    ];
    forms.dedup();
    forms
}

struct Scan {
    secrets: Vec<(String, String)>,
    findings: Vec<String>,
}

impl Scan {
    fn new(secrets: &[(&str, &str)]) -> Self {
        let mut all = Vec::new();
        for (name, secret) in secrets {
            for form in forms(secret) {
                all.push((name.to_string(), form));
            }
        }
        Scan {
            secrets: all,
            findings: Vec::new(),
        }
    }

    fn check(&mut self, place: &str, text: &str) {
        for (name, form) in &self.secrets {
            if text.contains(form.as_str()) {
                self.findings.push(format!("{name} ({form}) in {place}"));
            }
        }
    }

    fn check_file(&mut self, place: &str, path: &Path) {
        let text = std::fs::read(path).unwrap_or_default();
        self.check(place, &String::from_utf8_lossy(&text));
    }
}

struct Process {
    child: Child,
    dir: tempfile::TempDir,
}

impl Process {
    fn start(args: &[&str], env: &[(&str, &str)], port: u16) -> Process {
        let dir = tempfile::tempdir().unwrap();
        let stdout = std::fs::File::create(dir.path().join("stdout")).unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
        let child = Command::new(BINARY)
            .current_dir(dir.path())
            .args(args)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--logfile", "ofc-signer.log", "--state-dir", "state"])
            .envs(env.iter().copied())
            .env("OFC_SIGNER_LOG", "trace")
            .env_remove("BITGO_ENV")
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "ofc-signer did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Process { child, dir }
    }

    /// Core dumps are off: the kernel's view of the running process.
    fn assert_no_core_dumps(&self) {
        let mut limits = String::new();
        std::fs::File::open(format!("/proc/{}/limits", self.child.id()))
            .unwrap()
            .read_to_string(&mut limits)
            .unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap();
        let fields: Vec<_> = line.split_whitespace().collect();
        assert_eq!(&fields[4..6], ["0", "0"], "{line}");
    }

    /// SIGTERM, wait, then scan everything the process wrote.
    fn stop_and_scan(mut self, scan: &mut Scan) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "still running");
            std::thread::sleep(Duration::from_millis(20));
        }
        for name in ["stdout", "stderr", "ofc-signer.log"] {
            scan.check_file(name, &self.dir.path().join(name));
        }
        for entry in walk(&self.dir.path().join("state")) {
            scan.check_file(&entry.display().to_string(), &entry);
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn body(pairs: &[(&str, JsValue)]) -> String {
    let mut object = JsObject::new();
    for (key, value) in pairs {
        object.insert(*key, value.clone());
    }
    JsValue::Object(object).to_json()
}

#[test]
fn no_secret_reaches_any_output() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let xprv = master_xprv_from_seed(b"secret hygiene test seed").unwrap();
    let xpub = xpub_from_xprv(&xprv).unwrap();
    let sandbox = runtime.block_on(Sandbox::start()).unwrap();
    sandbox.add_token(TOKEN);
    let v1 = envelope::encrypt(BODY_PASSPHRASE, &xprv, EnvelopeVersion::V1, None).unwrap();
    sandbox.add_wallet(wallet_with(WALLET, &xpub, &v1));
    let v2 = envelope::encrypt(ENV_PASSPHRASE, &xprv, EnvelopeVersion::V2, None).unwrap();
    sandbox.add_wallet(wallet_with(ENV_WALLET, &xpub, &v2));
    let mut scan = Scan::new(&[
        ("body passphrase", BODY_PASSPHRASE),
        ("env passphrase", ENV_PASSPHRASE),
        ("wrong passphrase", WRONG_PASSPHRASE),
        ("xprv", xprv.as_str()),
        ("access token", TOKEN),
        ("signer token", SIGNER_TOKEN),
        ("wrong signer token", WRONG_SIGNER_TOKEN),
    ]);

    // Normal mode against the sandbox: every route, success and failure.
    let port = free_port();
    let upstream = sandbox.url();
    let env_name = format!("WALLET_{ENV_WALLET}_PASSPHRASE");
    let normal = Process::start(
        &[
            "--env",
            "custom",
            "--customrooturi",
            &upstream,
            "--disablessl",
            "--log-format",
            "json",
        ],
        &[(env_name.as_str(), ENV_PASSPHRASE)],
        port,
    );
    normal.assert_no_core_dumps();
    let base = format!("http://127.0.0.1:{port}");
    let sign = format!("{base}/api/v2/ofc/signPayload");
    let payload = JsValue::from("hygiene payload");
    let requests: Vec<(String, String, Option<&str>)> = vec![
        // Signs with the body passphrase, the environment's, and a wrong one.
        (
            sign.clone(),
            body(&[
                ("walletId", WALLET.into()),
                ("payload", payload.clone()),
                ("walletPassphrase", BODY_PASSPHRASE.into()),
            ]),
            Some(TOKEN),
        ),
        (
            sign.clone(),
            body(&[
                ("walletId", ENV_WALLET.into()),
                ("payload", payload.clone()),
            ]),
            Some(TOKEN),
        ),
        (
            sign.clone(),
            body(&[
                ("walletId", WALLET.into()),
                ("payload", payload.clone()),
                ("walletPassphrase", WRONG_PASSPHRASE.into()),
            ]),
            Some(TOKEN),
        ),
        // Validation errors with secrets in the wrong places.
        (
            sign.clone(),
            body(&[
                ("walletId", WALLET.into()),
                ("walletPassphrase", BODY_PASSPHRASE.into()),
            ]),
            Some(TOKEN),
        ),
        (
            sign.clone(),
            body(&[
                ("walletId", JsValue::from(BODY_PASSPHRASE)),
                ("payload", payload.clone()),
                (
                    "walletPassphrase",
                    ofc_signer::js_json::parse(&format!(r#"{{"p":"{WRONG_PASSPHRASE}"}}"#))
                        .unwrap(),
                ),
            ]),
            Some(TOKEN),
        ),
        // Malformed JSON carrying a secret, and an unknown wallet.
        (
            sign.clone(),
            format!(r#"{{"walletPassphrase":"{BODY_PASSPHRASE}","#),
            Some(TOKEN),
        ),
        (
            sign.clone(),
            body(&[
                ("walletId", "5f00000000000000000000000000dead".into()),
                ("payload", payload.clone()),
                ("walletPassphrase", BODY_PASSPHRASE.into()),
            ]),
            Some(TOKEN),
        ),
        // Local routes: encrypt the xprv, decrypt with a wrong password.
        (
            format!("{base}/api/v2/encrypt"),
            body(&[
                ("input", xprv.as_str().into()),
                ("password", BODY_PASSPHRASE.into()),
            ]),
            Some(TOKEN),
        ),
        (
            format!("{base}/api/v2/decrypt"),
            body(&[
                ("input", v1.as_str().into()),
                ("password", WRONG_PASSPHRASE.into()),
            ]),
            Some(TOKEN),
        ),
        // The proxy with the token, and BitGo's ping.
        (
            format!("{base}/api/v2/ofc/wallet/{WALLET}?secret=no"),
            String::new(),
            Some(TOKEN),
        ),
    ];
    for (url, request_body, token) in &requests {
        let answer = runtime.block_on(post_json(url, request_body.clone(), *token));
        scan.check(&format!("answer of POST {url}"), &answer.body);
    }
    for path in [
        "/api/v2/ping",
        "/api/v2/pingexpress",
        "/metrics",
        "/ofc-signer/health",
        "/ofc-signer/ready",
    ] {
        let answer = runtime.block_on(get(&format!("{base}{path}"), Some(TOKEN)));
        scan.check(&format!("answer of GET {path}"), &answer.body);
    }
    normal.stop_and_scan(&mut scan);

    // Signer mode with signer authentication: refusals and signatures.
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        key_file.path(),
        body(&[
            (WALLET, v1.as_str().into()),
            (ENV_WALLET, v2.as_str().into()),
        ]),
    )
    .unwrap();
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), SIGNER_TOKEN).unwrap();
    let port = free_port();
    let signer = Process::start(
        &[
            "--signerMode",
            "--signerFileSystemPath",
            key_file.path().to_str().unwrap(),
            "--auth-token-file",
            token_file.path().to_str().unwrap(),
        ],
        &[(env_name.as_str(), ENV_PASSPHRASE)],
        port,
    );
    let sign = format!("http://127.0.0.1:{port}/api/v2/ofc/signPayload");
    let client = client();
    for (signer_token, passphrase) in [
        (None, Some(BODY_PASSPHRASE)),
        (Some(WRONG_SIGNER_TOKEN), Some(BODY_PASSPHRASE)),
        (Some(SIGNER_TOKEN), Some(BODY_PASSPHRASE)),
        (Some(SIGNER_TOKEN), Some(WRONG_PASSPHRASE)),
        (Some(SIGNER_TOKEN), None),
    ] {
        let mut pairs = vec![
            ("walletId", JsValue::from(WALLET)),
            ("payload", payload.clone()),
        ];
        if let Some(passphrase) = passphrase {
            pairs.push(("walletPassphrase", passphrase.into()));
        }
        let mut request = client
            .post(&sign)
            .header("content-type", "application/json")
            .body(body(&pairs));
        if let Some(token) = signer_token {
            request = request.header("x-signer-token", token);
        }
        let answer = runtime.block_on(async { answer(request.send().await.unwrap()).await });
        scan.check("signer-mode answer", &answer.body);
    }
    signer.stop_and_scan(&mut scan);

    assert!(scan.findings.is_empty(), "{:#?}", scan.findings);
}

#[test]
fn the_scan_finds_what_it_looks_for() {
    // The check itself can fail: each form of a secret is found.
    let mut scan = Scan::new(&[("s", "hygiene body passphrase 7Qx")]);
    scan.check("raw", "… hygiene body passphrase 7Qx …");
    scan.check("hex", &hex::encode("hygiene body passphrase 7Qx"));
    scan.check(
        "base64",
        &base64::engine::general_purpose::STANDARD.encode("hygiene body passphrase 7Qx"),
    );
    assert_eq!(scan.findings.len(), 3, "{:?}", scan.findings);
}
