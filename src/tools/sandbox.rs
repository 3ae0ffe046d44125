//! `ofc-signer sandbox`: the demo fake BitGo API on its own, for a sidecar setup, the load
//! script and anyone trying ofc-signer (or Express) without credentials.
//!
//! It serves BitGo's documentation wallet (v1 envelope) and a v2-envelope wallet, both with the
//! demo passphrase, the demo enterprise's Go Network, the documentation's placeholder token and
//! the demo HMAC token. Point ofc-signer at it with `--env custom --customrooturi <url>`.

use std::process::ExitCode;

use crate::sandbox::{
    DEMO_ENTERPRISE_ID, DEMO_HMAC_TOKEN, DEMO_PASSPHRASE, DEMO_V2_WALLET_ID, DOCS_TOKEN,
    DOCS_WALLET_ID, start_demo_on,
};
use crate::tools::ToolError;

#[derive(clap::Args, Debug)]
pub struct SandboxArgs {
    /// Port to listen on.
    #[arg(short = 'p', long, default_value_t = 3081)]
    pub port: u16,
    /// Address to bind to.
    #[arg(short = 'b', long, default_value = "127.0.0.1")]
    pub bind: String,
}

/// Runs the sandbox until SIGINT or SIGTERM.
pub fn run(args: SandboxArgs) -> Result<ExitCode, ToolError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ToolError::failure(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        let address = format!("{}:{}", args.bind, args.port);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|e| ToolError::failure(format!("listen {address}: {e}")))?;
        let (sandbox, _) = start_demo_on(listener).await.map_err(ToolError::failure)?;
        println!("sandbox BitGo API listening on {}", sandbox.url());
        println!("  wallets: {DOCS_WALLET_ID} (v1 envelope), {DEMO_V2_WALLET_ID} (v2 envelope)");
        println!("  passphrase: \"{DEMO_PASSPHRASE}\"; enterprise: {DEMO_ENTERPRISE_ID}");
        println!("  tokens: {DOCS_TOKEN} (legacy), {DEMO_HMAC_TOKEN} (HMAC)");
        println!(
            "  use it: ofc-signer --env custom --customrooturi {} --disablessl",
            sandbox.url()
        );
        crate::server::shutdown_signal().await;
        drop(sandbox);
        Ok(ExitCode::SUCCESS)
    })
}
