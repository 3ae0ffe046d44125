//! `ofc-signer healthcheck`: the container's health probe (the runtime image has no shell and
//! no curl). It asks the running server's readiness route and exits 0 when it is ready, 1 when
//! not (or unreachable).

use std::process::ExitCode;
use std::time::Duration;

use crate::tools::ToolError;

#[derive(clap::Args, Debug)]
pub struct HealthcheckArgs {
    /// The readiness URL to ask. Default: `http://127.0.0.1:<BITGO_PORT or 3080>/ofc-signer/ready`.
    /// An `https://` URL on a loopback host is asked without verifying the certificate (the
    /// probe sends nothing secret and the server's certificate names its public host).
    #[arg(long)]
    pub url: Option<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 3)]
    pub timeout: u64,
}

/// The URL the probe asks.
fn probe_url(args: &HealthcheckArgs, port_from_env: Option<String>) -> String {
    args.url.clone().unwrap_or_else(|| {
        let port = port_from_env
            .filter(|p| p.trim().parse::<u16>().is_ok())
            .unwrap_or_else(|| "3080".to_string());
        format!("http://127.0.0.1:{}/ofc-signer/ready", port.trim())
    })
}

fn is_loopback_host(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub fn run(args: HealthcheckArgs) -> Result<ExitCode, ToolError> {
    let url = probe_url(&args, std::env::var("BITGO_PORT").ok());
    let parsed =
        reqwest::Url::parse(&url).map_err(|e| ToolError::usage(format!("--url {url}: {e}")))?;
    crate::upstream::client::install_crypto_provider();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(args.timeout.max(1)))
        .danger_accept_invalid_certs(parsed.scheme() == "https" && is_loopback_host(&parsed))
        .build()
        .map_err(|e| ToolError::failure(format!("cannot build the client: {e}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ToolError::failure(format!("cannot start the runtime: {e}")))?;
    let status = runtime
        .block_on(async { client.get(parsed).send().await.map(|r| r.status()) })
        .map_err(|e| ToolError::failure(format!("{url}: {e}")))?;
    if status.is_success() {
        println!("ready");
        Ok(ExitCode::SUCCESS)
    } else {
        Err(ToolError::failure(format!("{url}: {status}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: Option<&str>) -> HealthcheckArgs {
        HealthcheckArgs {
            url: url.map(str::to_string),
            timeout: 3,
        }
    }

    #[test]
    fn default_url_follows_bitgo_port() {
        assert_eq!(
            probe_url(&args(None), None),
            "http://127.0.0.1:3080/ofc-signer/ready"
        );
        assert_eq!(
            probe_url(&args(None), Some("4000".into())),
            "http://127.0.0.1:4000/ofc-signer/ready"
        );
        assert_eq!(
            probe_url(&args(None), Some("not a port".into())),
            "http://127.0.0.1:3080/ofc-signer/ready"
        );
        assert_eq!(probe_url(&args(Some("http://x/y")), None), "http://x/y");
    }

    #[test]
    fn only_loopback_hosts_skip_certificate_checks() {
        for (url, loopback) in [
            ("https://localhost:3080/", true),
            ("https://127.0.0.1:3080/", true),
            ("https://[::1]:3080/", true),
            ("https://signer.example.com/", false),
            ("https://10.0.0.1/", false),
        ] {
            let parsed = reqwest::Url::parse(url).unwrap();
            assert_eq!(is_loopback_host(&parsed), loopback, "{url}");
        }
    }
}
