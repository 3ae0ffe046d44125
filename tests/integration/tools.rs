//! The key-tooling subcommands through the real binary: `verify` and `sign` against every SDK
//! `sign` vector (and `sign` against the HTTP route, byte for byte), `encrypt`/`decrypt` round
//! trips and the SDK `decrypt` vectors, `fetch-keys` against the sandbox BitGo.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::*;
use ofc_signer::config::Env;
use ofc_signer::js_json::{self, JsObject, JsString, JsValue};
use ofc_signer::keys::envelope;
use ofc_signer::routes::sign_payload::response_body;
use ofc_signer::sandbox::{Sandbox, SandboxWallet};
use ofc_signer::upstream::client::SystemClock;
use ofc_signer::upstream::hmac::AccessToken;

// ------------------------------------------------------------------------------------------------
// Harness
// ------------------------------------------------------------------------------------------------

/// A directory under the system temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "ofc-signer-tools-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a run of the binary gave.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Neither output mentions `secret`.
    fn assert_never_shows(&self, secret: &str) {
        assert!(
            !self.stdout().contains(secret) && !self.stderr.contains(secret),
            "a secret was printed: {self:?}"
        );
    }
}

/// Runs `ofc-signer <args>` in `cwd` with exactly `env` (nothing inherited, so no stray
/// passphrase variable and no terminal prompt can interfere) and `stdin` as standard input.
fn ofc<A: AsRef<OsStr>>(args: &[A], env: &[(String, String)], stdin: &[u8], cwd: &Path) -> Run {
    let mut child = Command::new(BINARY)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ofc-signer");
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let output = child.wait_with_output().expect("run ofc-signer");
    let _ = writer.join();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `f` over `items` on four threads; the results in order.
fn parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(item) = items.get(i) else { break };
                        done.push((i, f(item)));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// The signed string of a sign vector as a JS string (a lone surrogate kept as such).
fn payload_js_string(vector: &JsValue) -> JsString {
    match vector.get("payloadString") {
        Some(JsValue::String(s)) => s.clone(),
        _ => match js_json::parse(&text(vector, "payloadRaw")) {
            Ok(JsValue::String(s)) => s,
            other => panic!(
                "payloadRaw of {} is not a string: {other:?}",
                text(vector, "id")
            ),
        },
    }
}

/// The exact bytes a sign vector's signature covers.
fn message_bytes(vector: &JsValue) -> Vec<u8> {
    match vector.get("payloadString") {
        Some(JsValue::String(s)) => s.to_utf8_lossy().into_owned().into_bytes(),
        _ => hex::decode(text(vector, "payloadUtf8Hex")).expect("payloadUtf8Hex"),
    }
}

fn flip_hex_byte(signature: &str, index: usize) -> String {
    let mut bytes = hex::decode(signature).expect("hex");
    bytes[index] ^= 0x01;
    hex::encode(bytes)
}

// ------------------------------------------------------------------------------------------------
// verify
// ------------------------------------------------------------------------------------------------

#[test]
fn verify_accepts_every_sign_vector_and_rejects_one_byte_changes() {
    let vectors = kind("sign");
    assert_eq!(vectors.len(), 62);
    let failures: Vec<String> = parallel(vectors, |vector| {
        let dir = TempDir::new("verify");
        let id = text(vector, "id");
        let signature = text(vector, "signature");
        let message = message_bytes(vector);
        let xpub = text(vector, "pub");
        let hex_key = text(key(&text(vector, "keyLabel")), "publicKeyHex");
        let payload_file = dir.write("payload", &message);
        let payload_file = payload_file.to_str().expect("path");
        let mut problems = Vec::new();
        let check = |what: &str, args: &[&str], stdin: &[u8], code: i32| {
            let run = ofc(args, &[], stdin, dir.path());
            let verdict_ok = if code == 0 {
                run.stdout() == "valid\n"
            } else {
                run.stdout().starts_with("invalid: ")
            };
            (run.code != code || !verdict_ok).then(|| format!("{id} {what}: {run:?}"))
        };
        for public_key in [xpub.as_str(), hex_key.as_str()] {
            let args = ["verify", "--pub", public_key, "--signature", &signature];
            // The exact bytes from a file work for every vector; the command-line form for those
            // whose string has no lone surrogate.
            problems.extend(check(
                "file",
                &[&args[..], &["--payload-file", payload_file]].concat(),
                b"",
                0,
            ));
            if let Some(JsValue::String(payload)) = vector.get("payloadString") {
                let payload = payload.to_utf8_lossy().into_owned();
                problems.extend(check(
                    "argument",
                    &[&args[..], &["--payload", payload.as_str()]].concat(),
                    b"",
                    0,
                ));
            }
        }
        // The route's response, as a counterparty receives it: from a file and on stdin.
        let response = response_body(
            &payload_js_string(vector),
            Some(&JsValue::from(signature.as_str())),
        );
        let response_file = dir.write("response.json", &response);
        let response_file = response_file.to_str().expect("path");
        problems.extend(check(
            "response",
            &["verify", "--pub", &xpub, "--response", response_file],
            b"",
            0,
        ));
        problems.extend(check(
            "response on stdin",
            &["verify", "--pub", &hex_key, "--response", "-"],
            response.as_bytes(),
            0,
        ));

        // One byte changed in the payload…
        let mut tampered = message.clone();
        match tampered.last_mut() {
            Some(last) => *last ^= 0x01,
            None => tampered.push(b'x'),
        }
        let tampered_file = dir.write("tampered", &tampered);
        problems.extend(check(
            "changed payload",
            &[
                "verify",
                "--pub",
                &xpub,
                "--signature",
                &signature,
                "--payload-file",
                tampered_file.to_str().expect("path"),
            ],
            b"",
            1,
        ));
        // …and in the signature (in r, and the header's recovery id).
        for index in [10, 0] {
            let changed = flip_hex_byte(&signature, index);
            problems.extend(check(
                "changed signature",
                &[
                    "verify",
                    "--pub",
                    &hex_key,
                    "--signature",
                    &changed,
                    "--payload-file",
                    payload_file,
                ],
                b"",
                1,
            ));
        }
        problems
    })
    .into_iter()
    .flatten()
    .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn verify_other_keys_and_usage_errors() {
    let dir = TempDir::new("verify-usage");
    let vector = &kind("sign")[0];
    let signature = text(vector, "signature");
    let payload = text(vector, "payloadString");
    // Another key's xpub: invalid (exit 1).
    let other = text(key("root1"), "pub");
    let run = ofc(
        &[
            "verify",
            "--pub",
            &other,
            "--signature",
            &signature,
            "--payload",
            &payload,
        ],
        &[],
        b"",
        dir.path(),
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout()
            .starts_with("invalid: signature was made by a different key (it recovers 03e49aa5"),
        "{run:?}"
    );
    // A payload file with an added newline: invalid, with a hint.
    let file = dir.write("payload-nl", format!("{payload}\n"));
    let run = ofc(
        &[
            "verify",
            "--pub",
            &text(vector, "pub"),
            "--signature",
            &signature,
            "--payload-file",
            file.to_str().unwrap(),
        ],
        &[],
        b"",
        dir.path(),
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout().contains("trailing line ending"), "{run:?}");
    // A truncated signature is an invalid signature, not a usage error.
    let run = ofc(
        &[
            "verify",
            "--pub",
            &other,
            "--signature",
            &signature[..128],
            "--payload",
            &payload,
        ],
        &[],
        b"",
        dir.path(),
    );
    assert_eq!(run.code, 1, "{run:?}");

    let xprv = text(key("root0"), "xprv");
    let not_json = dir.write("not-json", "nope");
    let usage: Vec<Vec<&str>> = vec![
        vec![
            "verify",
            "--pub",
            "nonsense",
            "--signature",
            &signature,
            "--payload",
            "x",
        ],
        vec![
            "verify",
            "--pub",
            &xprv,
            "--signature",
            &signature,
            "--payload",
            "x",
        ],
        vec!["verify", "--pub", &other, "--payload", "x"],
        vec!["verify", "--pub", &other, "--signature", &signature],
        vec![
            "verify",
            "--pub",
            &other,
            "--signature",
            &signature,
            "--payload",
            "x",
            "--payload-file",
            "-",
        ],
        vec![
            "verify",
            "--pub",
            &other,
            "--signature",
            &signature,
            "--payload-file",
            "/nonexistent/payload",
        ],
        vec![
            "verify",
            "--pub",
            &other,
            "--response",
            not_json.to_str().unwrap(),
        ],
        vec![
            "verify",
            "--pub",
            &other,
            "--signature",
            &signature,
            "--response",
            not_json.to_str().unwrap(),
        ],
    ];
    for args in usage {
        let run = ofc(&args, &[], b"", dir.path());
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "{args:?}: {run:?}");
    }
    // The private key given by mistake is not echoed.
    let run = ofc(
        &[
            "verify",
            "--pub",
            &xprv,
            "--signature",
            &signature,
            "--payload",
            "x",
        ],
        &[],
        b"",
        dir.path(),
    );
    run.assert_never_shows(&xprv);
}

// ------------------------------------------------------------------------------------------------
// sign
// ------------------------------------------------------------------------------------------------

/// A signer key file of every sign vector's own v1 envelope, and their passphrases.
fn vector_key_file(dir: &TempDir) -> (PathBuf, Vec<(String, String)>) {
    let mut file = JsObject::new();
    let mut env = Vec::new();
    for vector in kind("sign") {
        let wallet_id = text(vector, "walletId");
        let (encrypted, passphrase) = sign_vector_key(vector, EnvelopeKind::V1);
        file.insert(wallet_id.as_str(), encrypted);
        env.push((format!("WALLET_{wallet_id}_PASSPHRASE"), passphrase));
    }
    (dir.write("keys.json", JsValue::Object(file).to_json()), env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_reproduces_every_vector_byte_for_byte_like_the_route() {
    let dir = TempDir::new("sign");
    let (key_file, env) = vector_key_file(&dir);

    // The HTTP route, normal mode against the sandbox, same keys and passphrases.
    let sandbox = Sandbox::start().await.expect("sandbox");
    sandbox.add_token(TOKEN);
    for vector in kind("sign") {
        let (encrypted, _) = sign_vector_key(vector, EnvelopeKind::V1);
        sandbox.add_wallet(wallet_with(
            &text(vector, "walletId"),
            &text(vector, "pub"),
            &encrypted,
        ));
    }
    let signer = start_signer(
        &sandbox.url(),
        &[],
        Env::from_pairs(env.clone()),
        Arc::new(SystemClock),
    )
    .await;
    let url = format!("{}/api/v2/ofc/signPayload", signer.url);
    let mut route_bodies = Vec::new();
    for vector in kind("sign") {
        let answer = post_json(&url, text(vector, "rawBody"), Some(TOKEN)).await;
        assert_eq!(
            answer.status,
            200,
            "{}: {}",
            text(vector, "id"),
            answer.body
        );
        route_bodies.push(answer.body);
    }

    let cases: Vec<(&JsValue, String)> = kind("sign").iter().zip(route_bodies).collect();
    let dir_path = dir.path().to_path_buf();
    let failures: Vec<String> = tokio::task::spawn_blocking(move || {
        parallel(&cases, |(vector, route_body)| {
            let id = text(vector, "id");
            let wallet_id = text(vector, "walletId");
            let payload_file = dir_path.join(format!("payload-{id}.json"));
            std::fs::write(&payload_file, text(vector, "payloadRaw")).expect("payload file");
            let run = ofc(
                &[
                    OsStr::new("sign"),
                    OsStr::new("--key-file"),
                    key_file.as_os_str(),
                    OsStr::new("--wallet-id"),
                    OsStr::new(&wallet_id),
                    OsStr::new("--payload-file"),
                    payload_file.as_os_str(),
                ],
                &env,
                b"",
                &dir_path,
            );
            let expected = response_body(
                &payload_js_string(vector),
                Some(&JsValue::from(text(vector, "signature"))),
            );
            let mut problems = Vec::new();
            if run.code != 0 {
                problems.push(format!("{id}: {run:?}"));
            } else {
                if run.stdout != expected.as_bytes() {
                    problems.push(format!("{id}: {} != vector {expected}", run.stdout()));
                }
                if run.stdout != route_body.as_bytes() {
                    problems.push(format!("{id}: {} != route {route_body}", run.stdout()));
                }
            }
            problems
        })
        .into_iter()
        .flatten()
        .collect()
    })
    .await
    .expect("sign runs");
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn sign_payload_sources_passphrase_order_and_errors() {
    let dir = TempDir::new("sign-options");
    let (key_file, env) = vector_key_file(&dir);
    let key_file = key_file.to_str().unwrap();
    let vector = &kind("sign")[0];
    let wallet_id = text(vector, "walletId");
    let passphrase = text(vector, "walletPassphrase");
    let wallet_var = format!("WALLET_{wallet_id}_PASSPHRASE");
    let expected = response_body(
        &payload_js_string(vector),
        Some(&JsValue::from(text(vector, "signature"))),
    );
    let payload_raw = text(vector, "payloadRaw");
    let sign = |source: &[&str], env: &[(String, String)], stdin: &[u8]| {
        let args = [
            &["sign", "--key-file", key_file, "--wallet-id", &wallet_id][..],
            source,
        ]
        .concat();
        ofc(&args, env, stdin, dir.path())
    };

    // --payload, --payload-file - (stdin); the wallet's own variable.
    for run in [
        sign(&["--payload", &payload_raw], &env, b""),
        sign(&["--payload-file", "-"], &env, payload_raw.as_bytes()),
    ] {
        assert_eq!(run.code, 0, "{run:?}");
        assert_eq!(run.stdout(), expected);
        run.assert_never_shows(&passphrase);
    }
    // OFC_SIGNER_PASSPHRASE when the wallet has no variable (or an empty one)…
    let general = vars(&[("OFC_SIGNER_PASSPHRASE", &passphrase), (&wallet_var, "")]);
    let run = sign(&["--payload", &payload_raw], &general, b"");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout(), expected);
    // …and WALLET_<id>_PASSPHRASE before it.
    let both = vars(&[
        ("OFC_SIGNER_PASSPHRASE", "not the passphrase"),
        (&wallet_var, &passphrase),
    ]);
    let run = sign(&["--payload", &payload_raw], &both, b"");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout(), expected);

    // A wrong passphrase: the SDK's message, never the passphrase.
    let wrong = "a wrong passphrase ✗";
    let run = sign(
        &["--payload", &payload_raw],
        &vars(&[(&wallet_var, wrong)]),
        b"",
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stderr, "error: incorrect password\n");
    assert!(run.stdout.is_empty());
    run.assert_never_shows(wrong);
    // An unknown wallet, an invalid payload, a missing key file.
    let run = ofc(
        &[
            "sign",
            "--key-file",
            key_file,
            "--wallet-id",
            "nope",
            "--payload",
            "1",
        ],
        &env,
        b"",
        dir.path(),
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stderr,
        format!("error: Could not find a field for walletId: nope in {key_file}\n")
    );
    let run = sign(&["--payload", "{oops"], &env, b"");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .starts_with("error: the payload is not valid JSON: "),
        "{run:?}"
    );
    let run = ofc(
        &[
            "sign",
            "--key-file",
            "/nonexistent/keys.json",
            "--wallet-id",
            "w",
            "--payload",
            "1",
        ],
        &env,
        b"",
        dir.path(),
    );
    assert_eq!(run.code, 1, "{run:?}");
    // Exactly one payload source.
    let run = sign(&[], &env, b"");
    assert_eq!(run.code, 2, "{run:?}");
    let run = sign(&["--payload", "1", "--payload-file", "-"], &env, b"");
    assert_eq!(run.code, 2, "{run:?}");
}

// ------------------------------------------------------------------------------------------------
// encrypt / decrypt
// ------------------------------------------------------------------------------------------------

#[test]
fn encrypt_then_decrypt_round_trips_v1_and_v2() {
    let dir = TempDir::new("crypt");
    let passphrase = "round-trip passphrase 🐎 ünïcode";
    let env = vars(&[("OFC_SIGNER_PASSPHRASE", passphrase)]);
    let xprv = text(key("root2"), "xprv");
    let input = dir.write("xprv.txt", format!("{xprv}\n"));
    let input = input.to_str().unwrap();
    for (flags, prefix) in [
        (&["--v1"][..], "{\"iv\":"),
        (&[][..], "{\"v\":2,\"m\":65536,\"t\":3,\"p\":4,\"salt\":"),
        (&["--v1", "--adata", "my adata!"][..], "{\"iv\":"),
        (&["--adata", "my adata!"][..], "{\"v\":2,"),
    ] {
        // From a file (its trailing newline is not encrypted) and from standard input.
        for from_stdin in [false, true] {
            let mut args = vec!["encrypt"];
            args.extend_from_slice(flags);
            let run = if from_stdin {
                ofc(&args, &env, format!("{xprv}\n").as_bytes(), dir.path())
            } else {
                args.push(input);
                ofc(&args, &env, b"", dir.path())
            };
            assert_eq!(run.code, 0, "{flags:?}: {run:?}");
            let envelope_text = run.stdout();
            assert!(
                envelope_text.starts_with(prefix),
                "{flags:?}: {envelope_text}"
            );
            run.assert_never_shows(passphrase);
            run.assert_never_shows(&xprv);
            if flags.contains(&"--adata") {
                let adata = if flags.contains(&"--v1") {
                    "\"adata\":\"my%20adata%21\""
                } else {
                    "\"adata\":\"my adata!\""
                };
                assert!(envelope_text.contains(adata), "{envelope_text}");
            }
            // The library reads it back…
            assert_eq!(
                envelope::decrypt(passphrase, &envelope_text)
                    .unwrap()
                    .as_str(),
                xprv
            );
            // …and so does decrypt, from a file and from standard input.
            let file = dir.write("envelope.json", &envelope_text);
            for run in [
                ofc(&["decrypt", file.to_str().unwrap()], &env, b"", dir.path()),
                ofc(
                    &["decrypt", "-"],
                    &env,
                    envelope_text.as_bytes(),
                    dir.path(),
                ),
            ] {
                assert_eq!(run.code, 0, "{run:?}");
                assert_eq!(run.stdout(), xprv);
                run.assert_never_shows(passphrase);
            }
            // A wrong passphrase.
            let wrong = "wrong passphrase 🐎";
            let run = ofc(
                &["decrypt", file.to_str().unwrap()],
                &vars(&[("OFC_SIGNER_PASSPHRASE", wrong)]),
                b"",
                dir.path(),
            );
            assert_ne!(run.code, 0, "{run:?}");
            assert_eq!(run.stderr, "error: incorrect password\n");
            assert!(run.stdout.is_empty());
            run.assert_never_shows(wrong);
            run.assert_never_shows(&xprv);
        }
    }
    // The SDK's parameter messages.
    let run = ofc(&["encrypt"], &env, b"", dir.path());
    assert_eq!(run.code, 1);
    assert_eq!(run.stderr, "error: Missing parameter: input\n");
    let run = ofc(&["decrypt"], &env, b"not json", dir.path());
    assert_eq!(run.code, 1);
    assert_eq!(run.stderr, "error: decrypt: ciphertext is not valid JSON\n");
}

#[test]
fn decrypt_reads_the_sdk_vectors() {
    let dir = TempDir::new("decrypt-vectors");
    let mut cases = Vec::new();
    let mut skipped = Vec::new();
    for name in ["decrypt", "decrypt_wrong_password", "decrypt_invalid"] {
        for vector in kind(name) {
            let passphrase = text(vector, "passphrase");
            // A process environment cannot hold NUL, and an empty passphrase would prompt.
            if passphrase.contains('\0') || passphrase.is_empty() {
                skipped.push(text(vector, "id"));
                continue;
            }
            cases.push((name, vector));
        }
    }
    assert_eq!(
        skipped,
        [
            "v1-nul-inside",
            "v2-nul-inside",
            "v1-empty-password",
            "v2-empty-password"
        ]
    );
    assert_eq!(cases.len(), 37 + 8 + 13 - 4);
    let failures: Vec<String> = parallel(&cases, |(name, vector)| {
        let id = text(vector, "id");
        let passphrase = text(vector, "passphrase");
        let file = dir.write(&format!("{id}.json"), text(vector, "encryptedPrv"));
        let run = ofc(
            &[OsStr::new("decrypt"), file.as_os_str()],
            &vars(&[("OFC_SIGNER_PASSPHRASE", &passphrase)]),
            b"",
            dir.path(),
        );
        let ok = if *name == "decrypt" {
            run.code == 0 && run.stdout() == text(vector, "prv")
        } else {
            run.code == 1
                && run.stdout.is_empty()
                && run.stderr == format!("error: {}\n", text(vector, "sdkError"))
        };
        // Never the passphrase (unless the SDK's own message happens to contain it, e.g. `p`).
        let leaked = passphrase.len() > 3
            && (run.stdout().contains(&passphrase) || run.stderr.contains(&passphrase));
        (!ok || leaked).then(|| format!("{name}/{id}: {run:?}"))
    })
    .into_iter()
    .flatten()
    .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

// ------------------------------------------------------------------------------------------------
// fetch-keys
// ------------------------------------------------------------------------------------------------

/// A sandbox wallet whose user keychain has no `encryptedPrv`.
fn wallet_without_prv(wallet_id: &str, xpub: &str) -> SandboxWallet {
    let mut wallet = wallet_with(wallet_id, xpub, "");
    let mut keychain = JsObject::new();
    for field in ["id", "pub", "source", "type"] {
        if let Some(value) = wallet.user_keychain.get(field) {
            keychain.insert(field, value.clone());
        }
    }
    wallet.user_keychain = JsValue::Object(keychain);
    wallet
}

fn key_id(wallet_id: &str) -> String {
    format!("key{}", &wallet_id[..wallet_id.len().min(21)])
}

const W1: &str = "01f039aad587c2000745c68737300000";
const W2: &str = "02f039aad587c2000745c68737300000";
const W3: &str = "03f039aad587c2000745c68737300000";
const W4: &str = "04f039aad587c2000745c68737300000";
const W5: &str = "05f039aad587c2000745c68737300000";
const W6: &str = "06f039aad587c2000745c68737300000";
const W7: &str = "07f039aad587c2000745c68737300000";
const W3_PASSWORD: &str = "wallet three password ✓";
const W4_PASSWORD: &str = "wallet four password ✓";

/// The sandbox of the fetch-keys tests and the script's variables for it.
fn fetch_keys_setup(sandbox: &Sandbox, token: &str) -> Vec<(String, String)> {
    sandbox.add_token(TOKEN);
    let root = |label: &str, field: &str| text(key(label), field);
    sandbox.add_wallet(wallet_with(
        W1,
        &root("root0", "pub"),
        &root("root0", "encryptedPrv"),
    ));
    sandbox.add_wallet(wallet_with(
        W2,
        &root("root1", "pub"),
        &root("root1", "encryptedPrvV2"),
    ));
    sandbox.add_wallet(wallet_without_prv(W3, &root("root2", "pub")));
    sandbox.add_wallet(wallet_without_prv(W4, &root("root3", "pub")));
    sandbox.add_wallet(wallet_without_prv(W5, &root("root4", "pub")));
    sandbox.add_wallet(wallet_with(
        W6,
        &root("root4", "pub"),
        &root("root4", "encryptedPrv"),
    ));

    let secret = |password: &str, xprv: String, v1: bool| {
        let mut object = JsObject::new();
        object.insert("walletPassword", password);
        object.insert("secret", xprv);
        if v1 {
            object.insert("encryptionVersion", 1.0);
        }
        object
    };
    let mut w3 = secret(W3_PASSWORD, root("root2", "xprv"), false);
    w3.insert("walletId", W3);
    let mut w4 = secret(W4_PASSWORD, root("root3", "xprv"), true);
    w4.insert("walletId", W4);
    // W1 comes with credentials too, but has an encryptedPrv: BitGo's key wins.
    let mut w1 = secret("unused password", root("root1", "xprv"), false);
    w1.insert("walletId", W1);
    let mut wallet_ids = JsObject::new();
    wallet_ids.insert(
        "ofc",
        JsValue::Array(vec![
            JsValue::Object(w1),
            JsValue::Object(w3),
            JsValue::Object(w4),
            W6.into(),
        ]),
    );
    wallet_ids.insert("tbtc", JsValue::Array(vec![W2.into(), W5.into()]));
    let with_prv = |id: &str, envelope: String| {
        let mut object = JsObject::new();
        object.insert("walletId", id);
        object.insert("encryptedPrv", envelope);
        JsValue::Object(object)
    };
    let with_prv = JsValue::Array(vec![
        with_prv(W6, root("root2", "encryptedPrvV2")),
        with_prv(W7, root("root3", "encryptedPrv")),
    ]);
    vars(&[
        ("BITGO_EXTERNAL_SIGNER_ENV", "custom"),
        ("BITGO_CUSTOM_ROOT_URI", &sandbox.url()),
        ("BITGO_DISABLE_SSL", "1"),
        ("BITGO_EXTERNAL_SIGNER_ACCESS_TOKEN", token),
        (
            "BITGO_EXTERNAL_SIGNER_WALLET_IDS",
            &JsValue::Object(wallet_ids).to_json(),
        ),
        (
            "BITGO_EXTERNAL_SIGNER_WALLET_IDS_WITH_PRV",
            &with_prv.to_json(),
        ),
    ])
}

async fn ofc_async(args: Vec<String>, env: Vec<(String, String)>, cwd: PathBuf) -> Run {
    tokio::task::spawn_blocking(move || ofc(&args, &env, b"", &cwd))
        .await
        .expect("run")
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_keys_writes_the_signer_key_file() {
    let sandbox = Sandbox::start().await.expect("sandbox");
    let env = fetch_keys_setup(&sandbox, TOKEN);
    let dir = TempDir::new("fetch-keys");
    let run = ofc_async(vec!["fetch-keys".into()], env, dir.path().to_path_buf()).await;
    assert_eq!(run.code, 0, "{run:?}");

    // The default file in the working directory: mode 0600, tab-indented, a flat object.
    let path = dir.path().join("encryptedPrivKeys.json");
    assert_eq!(mode(&path), 0o600);
    let file = std::fs::read_to_string(&path).expect("key file");
    let parsed = js_json::parse(&file).expect("key file is JSON");
    let object = parsed.as_object().expect("a flat object");
    let entries: Vec<(String, String)> = object
        .iter()
        .map(|(k, v)| match v {
            JsValue::String(s) => (
                k.to_utf8_lossy().into_owned(),
                s.to_utf8_lossy().into_owned(),
            ),
            other => panic!("value of {k:?} is not a string: {other:?}"),
        })
        .collect();
    let ids: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    // Object.entries order: ofc's wallets, then tbtc's, then the WITH_PRV additions; W6 keeps
    // its place when overridden; W5 (no key, no credentials) is skipped.
    assert_eq!(ids, [W1, W3, W4, W6, W2, W7]);
    let mut expected_text = String::from("{");
    for (index, (id, envelope_text)) in entries.iter().enumerate() {
        if index > 0 {
            expected_text.push(',');
        }
        expected_text.push_str("\n\t");
        JsString::from(id.as_str()).write_json(&mut expected_text);
        expected_text.push_str(": ");
        JsString::from(envelope_text.as_str()).write_json(&mut expected_text);
    }
    expected_text.push_str("\n}");
    assert_eq!(file, expected_text, "JSON.stringify(keys, null, '\\t')");

    let value = |id: &str| {
        object
            .get(id)
            .and_then(JsValue::as_str)
            .unwrap()
            .to_string()
    };
    let root = |label: &str, field: &str| text(key(label), field);
    assert_eq!(value(W1), root("root0", "encryptedPrv"));
    assert_eq!(value(W2), root("root1", "encryptedPrvV2"));
    assert_eq!(value(W6), root("root2", "encryptedPrvV2"));
    assert_eq!(value(W7), root("root3", "encryptedPrv"));
    // Encrypted here: v2 by default, v1 on request, each readable with its walletPassword.
    let w3 = value(W3);
    assert!(
        w3.starts_with("{\"v\":2,\"m\":65536,\"t\":3,\"p\":4,"),
        "{w3}"
    );
    assert_eq!(
        envelope::decrypt(W3_PASSWORD, &w3).unwrap().as_str(),
        root("root2", "xprv")
    );
    let w4 = value(W4);
    assert!(
        w4.starts_with("{\"iv\":") && w4.contains("\"v\":1,"),
        "{w4}"
    );
    assert_eq!(
        envelope::decrypt(W4_PASSWORD, &w4).unwrap().as_str(),
        root("root3", "xprv")
    );

    // The summary and the warning; no secret anywhere.
    assert_eq!(
        run.stderr,
        format!(
            "warning: could not find a tbtc encrypted user private key for wallet id {W5}, skipping\n"
        )
    );
    let stdout = run.stdout();
    assert!(
        stdout.starts_with(
            "Wallet IDs and encrypted private keys saved to encryptedPrivKeys.json (6 written, 1 skipped; mode 0600)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("skipped  {W5}  tbtc")), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "written  {W3}  ofc  secret encrypted with walletPassword (v2 envelope)"
        )),
        "{stdout}"
    );
    for secret in [
        TOKEN.to_string(),
        W3_PASSWORD.to_string(),
        W4_PASSWORD.to_string(),
        "unused password".to_string(),
        root("root2", "xprv"),
        root("root3", "xprv"),
        root("root1", "xprv"),
        // Envelopes are not secret, but the summary has no business printing them.
        root("root0", "encryptedPrv"),
    ] {
        run.assert_never_shows(&secret);
    }

    // The wire: a wallet GET and a keychain GET per listed wallet, per coin, each carrying the
    // token's hash and an HMAC the sandbox verified (it answers 401 otherwise).
    let requests = sandbox.requests();
    let paths: Vec<String> = requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    let mut expected_paths = Vec::new();
    for (coin, id) in [
        ("ofc", W1),
        ("ofc", W3),
        ("ofc", W4),
        ("ofc", W6),
        ("tbtc", W2),
        ("tbtc", W5),
    ] {
        expected_paths.push(format!("GET /api/v2/{coin}/wallet/{id}"));
        expected_paths.push(format!("GET /api/v2/{coin}/key/{}", key_id(id)));
    }
    assert_eq!(paths, expected_paths);
    let token_hash = AccessToken::new(TOKEN).hash_hex();
    for request in &requests {
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(header("authorization"), format!("Bearer {token_hash}"));
        assert_eq!(header("bitgo-auth-version"), "2.0");
        assert_eq!(header("hmac").len(), 64, "{request:?}");
        assert!(!format!("{:?}", request.headers).contains(TOKEN));
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_keys_fails_whole_and_replaces_files_atomically() {
    use std::os::unix::fs::PermissionsExt;
    let sandbox = Sandbox::start().await.expect("sandbox");
    let dir = TempDir::new("fetch-keys-out");
    let out = dir.path().join("signer").join("keys.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, "previous").unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out_arg = out.to_str().unwrap().to_string();

    // A token BitGo does not know: the run fails and the old file stays as it was.
    let unknown = "v2x0000000000000000000000000000000000000000000000000000000000000000ab";
    let env = fetch_keys_setup(&sandbox, unknown);
    let run = ofc_async(
        vec!["fetch-keys".into(), "--out".into(), out_arg.clone()],
        env,
        dir.path().to_path_buf(),
    )
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stderr,
        format!("error: GET wallet of wallet {W1} (ofc) failed: unauthorized (status 401)\n")
    );
    run.assert_never_shows(unknown);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "previous");

    // The right token, with --customrooturi/--disablessl flags instead of variables: the file is
    // replaced, 0600 (not the old 0644), and no temporary file is left.
    let env: Vec<(String, String)> = fetch_keys_setup(&sandbox, TOKEN)
        .into_iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "BITGO_EXTERNAL_SIGNER_ENV" | "BITGO_CUSTOM_ROOT_URI" | "BITGO_DISABLE_SSL"
            )
        })
        .collect();
    let run = ofc_async(
        vec![
            "fetch-keys".into(),
            "--out".into(),
            out_arg.clone(),
            "--customrooturi".into(),
            sandbox.url(),
            "--disablessl".into(),
        ],
        env.clone(),
        dir.path().to_path_buf(),
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(mode(&out), 0o600);
    assert!(
        std::fs::read_to_string(&out)
            .unwrap()
            .starts_with("{\n\t\"")
    );
    let names: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["keys.json"]);
    // Without --disablessl the custom root is forced to https, which the plain-http sandbox
    // cannot answer: the run fails before writing.
    let run = ofc_async(
        vec![
            "fetch-keys".into(),
            "--out".into(),
            out_arg.clone(),
            "--customrooturi".into(),
            sandbox.url(),
        ],
        env,
        dir.path().to_path_buf(),
    )
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.starts_with("error: GET wallet of wallet"),
        "{run:?}"
    );

    // Configuration errors are usage errors, and never quote the variable.
    let broken = vars(&[(
        "BITGO_EXTERNAL_SIGNER_WALLET_IDS",
        r#"{"ofc":[{"walletId":"w","walletPassword":"hunter2 secret"#,
    )]);
    let run = ofc_async(vec!["fetch-keys".into()], broken, dir.path().to_path_buf()).await;
    assert_eq!(run.code, 2, "{run:?}");
    run.assert_never_shows("hunter2");
    let run = ofc_async(
        vec!["fetch-keys".into()],
        Vec::new(),
        dir.path().to_path_buf(),
    )
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("BITGO_EXTERNAL_SIGNER_WALLET_IDS"),
        "{run:?}"
    );
}
