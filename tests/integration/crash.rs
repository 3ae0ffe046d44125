//! Crash safety of sign-and-forward with the real binary: `kill -9` after the signed settlement
//! was stored and sent but before BitGo answered; after a restart the retry re-sends the very same
//! bytes, BitGo ends up with exactly one settlement, and the audit chain verifies.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use ofc_signer::sandbox::{Fault, Sandbox};

const ENTERPRISE: &str = "c0c0c0c0c0c0c0c0c0c0c0c0";
const WALLET: &str = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1";
const PASSPHRASE: &str = "crash test passphrase";

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
    let sandbox = sandbox_with_trading_account(
        b"crash test trading account",
        ENTERPRISE,
        WALLET,
        PASSPHRASE,
    )
    .await;
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

/// Issue 6 item 5: clients submit settlements through sign-and-forward without pause while
/// ofc-signer is killed with SIGKILL at random moments and restarted on the same state directory
/// (`CRASH_KILLS` times, 6 by default). Each client retries its request until it gets an answer, as a
/// partner's client would. In the end every settlement exists exactly once upstream, no client
/// ever saw a conflict, and the audit chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_restart_loop_under_load_leaves_no_duplicate_settlement() {
    const CLIENTS: usize = 6;
    let kills = env_number("CRASH_KILLS", 6);
    let per_client = env_number("CRASH_SETTLEMENTS_PER_CLIENT", 10) as usize;
    let mut dice = Dice::seeded_from("CRASH_SEED");
    let seed = dice.seed;

    let sandbox = sandbox_with_trading_account(
        b"crash loop trading account",
        ENTERPRISE,
        WALLET,
        PASSPHRASE,
    )
    .await;
    // BitGo takes a little while to create a settlement, so kills also land while it is in flight.
    sandbox.set_fault(Some(Fault::On {
        path_suffix: "/partners/settlements".into(),
        fault: Box::new(Fault::Delay { ms: 15 }),
    }));
    let state_dir = tempfile::tempdir().unwrap();

    let port = free_port();
    let current = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(port));
    let mut child = spawn(port, &sandbox.url(), state_dir.path());
    wait_until_listening(port).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client_index| {
            let (current, stop) = (current.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut attempts, mut done) = (0usize, 0usize);
                // Submit until the killing is over, and at least `per_client` settlements.
                while done < per_client || !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let body = format!(
                        r#"{{"externalId":"loop-{client_index}-{done}","settlementAmounts":{{"a":{{"BTC":"{done}"}}}}}}"#
                    );
                    loop {
                        attempts += 1;
                        let port = current.load(std::sync::atomic::Ordering::SeqCst);
                        let sent = client()
                            .post(format!("http://127.0.0.1:{port}/api/network/v1/enterprises/{ENTERPRISE}/partners/settlements"))
                            .header("authorization", format!("Bearer {TOKEN}"))
                            .header("content-type", "application/json")
                            .timeout(Duration::from_secs(20))
                            .body(body.clone())
                            .send()
                            .await;
                        match sent {
                            Ok(response) if response.status().is_success() => break,
                            Ok(response) => {
                                let status = response.status().as_u16();
                                let text = response.text().await.unwrap_or_default();
                                assert!(
                                    status >= 500,
                                    "loop-{client_index}-{done}: {status} {text}"
                                );
                            }
                            Err(_) => {} // killed mid-request, or not listening yet
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    done += 1;
                }
                (done, attempts)
            })
        })
        .collect();

    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(50 + dice.below(650) as u64)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        let port = free_port();
        child = spawn(port, &sandbox.url(), state_dir.path());
        wait_until_listening(port).await;
        current.store(port, std::sync::atomic::Ordering::SeqCst);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);

    let (mut attempts, mut per_client_done) = (0, Vec::new());
    for client in clients {
        let (done, tries) = tokio::time::timeout(Duration::from_secs(120), client)
            .await
            .expect("the clients finished")
            .unwrap();
        per_client_done.push(done);
        attempts += tries;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let total: usize = per_client_done.iter().sum();
    println!("{total} settlements, {attempts} attempts, {kills} kills");
    assert!(
        kills == 0 || attempts > total,
        "no kill interrupted a request, so nothing was tested"
    );
    let settlements = sandbox.settlements();
    for (client_index, done) in per_client_done.iter().enumerate() {
        for n in 0..*done {
            let id = format!("loop-{client_index}-{n}");
            let created = settlements
                .iter()
                .filter(|s| s.get("externalId").and_then(|e| e.as_str()) == Some(id.as_str()))
                .count();
            assert_eq!(
                created, 1,
                "{id} exists exactly once upstream (seed {seed})"
            );
        }
    }
    assert_eq!(sandbox.create_count(), total, "seed {seed}");
    let report = ofc_signer::store::audit::verify(state_dir.path().join("audit.log"))
        .unwrap_or_else(|e| panic!("audit chain (seed {seed}): {e}"));
    assert!(report.records >= total as u64, "{report:?}");
}
