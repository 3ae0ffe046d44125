//! Crash safety of sign-and-forward with the real binary: `kill -9` after the signed settlement
//! was stored and sent but before BitGo answered; after a restart the retry re-sends the very same
//! bytes, BitGo ends up with exactly one settlement, and the audit chain verifies.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ofc_signer::keys::envelope::{self, EnvelopeVersion};
use ofc_signer::keys::xprv::{master_xprv_from_seed, xpub_from_xprv};
use ofc_signer::sandbox::{Fault, Sandbox};

const BINARY: &str = env!("CARGO_BIN_EXE_ofc-signer");
const ENTERPRISE: &str = "c0c0c0c0c0c0c0c0c0c0c0c0";
const WALLET: &str = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1";
const PASSPHRASE: &str = "crash test passphrase";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(port: u16, upstream: &str, state_dir: &std::path::Path) -> Child {
    Command::new(BINARY)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--env",
            "custom",
            "--customrooturi",
            upstream,
            "--disablessl",
            "--trading-account",
            &format!("{ENTERPRISE}={WALLET}"),
            "--state-dir",
            state_dir.to_str().unwrap(),
        ])
        .env(format!("WALLET_{WALLET}_PASSPHRASE"), PASSPHRASE)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_until_listening(port: u16) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ofc-signer did not start");
}

fn submissions(sandbox: &Sandbox) -> Vec<bytes::Bytes> {
    sandbox
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/partners/settlements"))
        .map(|r| r.body)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_between_store_write_and_upstream_reply_never_duplicates() {
    let sandbox = Sandbox::start().await.unwrap();
    sandbox.add_token(TOKEN);
    let xprv = master_xprv_from_seed(b"crash test trading account").unwrap();
    let encrypted = envelope::encrypt(PASSPHRASE, &xprv, EnvelopeVersion::V1, None).unwrap();
    sandbox.add_wallet(wallet_with(
        WALLET,
        &xpub_from_xprv(&xprv).unwrap(),
        &encrypted,
    ));
    sandbox.add_enterprise(ENTERPRISE, WALLET);
    let state_dir = tempfile::tempdir().unwrap();
    let body = r#"{"externalId":"crash-1","settlementAmounts":{"a":{"BTC":"10"}}}"#;

    for round in 0..3 {
        let external_id = format!("crash-{round}");
        let body = body.replace("crash-1", &external_id);
        let port = free_port();
        let mut child = spawn(port, &sandbox.url(), state_dir.path());
        wait_until_listening(port).await;
        let url = format!(
            "http://127.0.0.1:{port}/api/network/v1/enterprises/{ENTERPRISE}/partners/settlements"
        );

        // BitGo is slow to answer the submission; kill -9 once it has arrived there.
        sandbox.set_fault(Some(Fault::On {
            path_suffix: "/partners/settlements".into(),
            fault: Box::new(Fault::Delay { ms: 1500 }),
        }));
        let before = submissions(&sandbox).len();
        let request = tokio::spawn({
            let (url, body) = (url.clone(), body.clone());
            async move {
                client()
                    .post(url)
                    .header("authorization", format!("Bearer {TOKEN}"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
            }
        });
        let started = Instant::now();
        while submissions(&sandbox).len() == before {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the submission never arrived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            request.await.unwrap().is_err(),
            "the client saw the connection die"
        );
        let first = submissions(&sandbox).pop().unwrap();

        // Restart on the same state; the client retries.
        sandbox.set_fault(None);
        tokio::time::sleep(Duration::from_millis(1600)).await; // let the delayed request finish
        let port = free_port();
        let mut child = spawn(port, &sandbox.url(), state_dir.path());
        wait_until_listening(port).await;
        let url = url.replace(
            &url[..url.find("/api").unwrap()],
            &format!("http://127.0.0.1:{port}"),
        );
        let retried = post_json(&url, body.clone(), Some(TOKEN)).await;
        assert!(
            matches!(retried.status, 200 | 201),
            "round {round}: {} {}",
            retried.status,
            retried.body
        );
        let resent = submissions(&sandbox).pop().unwrap();
        assert_eq!(
            first, resent,
            "round {round}: the retry re-sent the same signed bytes"
        );
        let created = sandbox
            .settlements()
            .iter()
            .filter(|s| s.get("externalId").and_then(|e| e.as_str()) == Some(external_id.as_str()))
            .count();
        assert_eq!(created, 1, "round {round}: exactly one settlement");
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert_eq!(sandbox.create_count(), 3);
    let report = ofc_signer::store::audit::verify(state_dir.path().join("audit.log")).unwrap();
    assert!(report.records >= 3, "{report:?}");
}
