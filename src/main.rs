//! `ofc-signer`: parse the configuration, set up logging, run the server. Nothing else.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use ofc_signer::config::{Cli, Config, Env};
use ofc_signer::config::{LogFormat, Mode};
use ofc_signer::log_writer;
use ofc_signer::sandbox::{
    self, DEMO_ENTERPRISE_ID, DEMO_HMAC_TOKEN, DEMO_PASSPHRASE, DEMO_V2_WALLET_ID, DOCS_TOKEN,
    DOCS_WALLET_ID,
};
use ofc_signer::server::{Listener, Prepared};
use ofc_signer::upstream::client::SystemClock;

/// mimalloc: per-thread heaps without glibc's arena locks (requests free on one thread what
/// another allocated), and far faster than musl's allocator in the static container build.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    keep_secrets_out_of_core_dumps();
    let cli = Cli::parse();
    if cli.version {
        println!("ofc-signer {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if let Some(tool) = cli.tool {
        return ofc_signer::tools::run(tool);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fatal(&format!("cannot start the runtime: {error}")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fatal(&message),
    }
}

/// This process holds passphrases and decrypted keys: no core file may be written, and (Linux)
/// the process is not dumpable, which also keeps other processes of the same user from
/// attaching a debugger or reading its memory. Best effort: a refusal is not fatal.
fn keep_secrets_out_of_core_dumps() {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, setrlimit};
        let none = Rlimit {
            current: Some(0),
            maximum: Some(0),
        };
        if let Err(error) = setrlimit(Resource::Core, none) {
            eprintln!("warning: cannot disable core dumps: {error}");
        }
    }
    #[cfg(target_os = "linux")]
    if let Err(error) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        eprintln!("warning: cannot mark the process non-dumpable: {error}");
    }
}

/// Spec §11.6: fatal startup errors print `Fatal error: <message>` and exit non-zero.
fn fatal(message: &str) -> ExitCode {
    eprintln!("Fatal error: {message}");
    ExitCode::FAILURE
}

async fn run(cli: Cli) -> Result<(), String> {
    let mut env = Env::from_process();
    let demo = cli.demo;
    let mut config = Config::resolve(cli, &env).map_err(|e| e.0)?;
    // Log lines are written by a background thread; the guard flushes them at exit.
    let _log_writer = init_logging(&config)?;
    for warning in &config.warnings {
        eprintln!("{warning}");
    }

    // --demo: an embedded sandbox BitGo with the documentation's wallet.
    let demo_sandbox = if demo {
        let (sandbox, _xpub) = sandbox::start_demo().await?;
        config.environment.name = "custom".to_string();
        config.environment.base_url = sandbox.url();
        config.custom_root_uri = Some(sandbox.url());
        for wallet_id in [DOCS_WALLET_ID, DEMO_V2_WALLET_ID] {
            env.set(format!("WALLET_{wallet_id}_PASSPHRASE"), DEMO_PASSPHRASE);
        }
        config
            .trading_accounts
            .insert(DEMO_ENTERPRISE_ID.to_string(), DOCS_WALLET_ID.to_string());
        Some(sandbox)
    } else {
        None
    };
    config.check_supported().map_err(|e| e.0)?;
    warn_if_unauthenticated_signer(&config);

    // Everything that can fail is checked before anything listens (spec §7.3).
    let banner = config.banner();
    let log_location = config.logfile_absolute();
    let address = format!("{}:{}", config.bind, config.port);
    let prepared = Prepared::new(config, &env, Arc::new(SystemClock))?;
    let listener = Listener::bind(&prepared.state.config).await?;

    for line in banner {
        println!("{line}");
    }
    if let Some(path) = log_location {
        println!("Log location: {}", path.display());
    }
    if demo_sandbox.is_some() {
        print_demo_instructions(&address);
    }

    prepared
        .serve(
            listener,
            ofc_signer::server::shutdown_signal(),
            Duration::from_secs(30),
        )
        .await;
    drop(demo_sandbox);
    Ok(())
}

/// A signer reachable from other hosts with no authentication is an open signing oracle: say so.
fn warn_if_unauthenticated_signer(config: &Config) {
    let loopback = config.ipc.is_some()
        || config.bind == "localhost"
        || config
            .bind
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if matches!(config.mode, Mode::Signer { .. })
        && !loopback
        && !config.signer_auth.authenticates()
    {
        eprintln!("**********************************************************************");
        eprintln!(
            "WARNING: signer mode is listening on {} without authentication:",
            config.bind
        );
        eprintln!("anyone who can reach this port can obtain signatures from your keys.");
        eprintln!("Set --auth-token-file and/or --client-ca (with TLS), and --allowed-wallets.");
        eprintln!("**********************************************************************");
    }
}

fn print_demo_instructions(address: &str) {
    let host = address.replace("0.0.0.0", "localhost");
    println!();
    println!(
        "Demo sandbox: BitGo's documentation wallet {DOCS_WALLET_ID} is served by an embedded fake BitGo API."
    );
    println!("Sign a payload (the command from BitGo's documentation):");
    println!();
    println!("  curl -X POST http://{host}/api/v2/ofc/signPayload \\");
    println!("    -H \"Authorization: Bearer {DOCS_TOKEN}\" \\");
    println!("    -H \"Content-Type: application/json\" \\");
    println!(
        "    -d '{{\"walletId\": \"{DOCS_WALLET_ID}\", \"payload\": {{\"this\": {{\"is\": {{\"a\": \"payload\"}}}}}}}}'"
    );
    println!();
    println!(
        "The sandbox also accepts the HMAC token {DEMO_HMAC_TOKEN} and the passphrase \"{DEMO_PASSPHRASE}\" (demo values, not secrets)."
    );
}

fn init_logging(config: &Config) -> Result<log_writer::FlushGuard, String> {
    use tracing_subscriber::EnvFilter;
    let default = if config.debug_namespaces.is_empty() {
        "info"
    } else {
        "debug"
    };
    let filter =
        EnvFilter::try_from_env("OFC_SIGNER_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // One access line per request: formatted on the request's thread, written in batches by a
    // dedicated one (`log_writer`). Not lossy: when the writer falls behind, requests wait.
    let started = match &config.logfile {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
            log_writer::spawn(file).map(|(writer, guard)| (writer, guard, false))
        }
        None => log_writer::spawn(std::io::stderr()).map(|(writer, guard)| {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            (writer, guard, ansi)
        }),
    };
    let (writer, guard, ansi) =
        started.map_err(|e| format!("cannot start the log writer thread: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer);
    if config.operations.log_format == LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(guard)
}
