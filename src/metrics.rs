//! `GET /metrics`: what ofc-signer has done, in Prometheus's text format (0.0.4).
//!
//! Every series is a count, a duration or a level — never a token, passphrase, key or payload.
//! Wallet ids appear as a label of `ofc_signer_signatures_total`, for wallets that were really
//! signed for, and at most [`MAX_WALLET_LABELS`] of them (then `wallet="other"`).

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// How many distinct wallet ids label signatures before the rest are counted as `other`.
pub const MAX_WALLET_LABELS: usize = 1000;

/// Request latency buckets (seconds): signing takes well under a millisecond warm, a v2 key
/// derivation a quarter of a second, an upstream call anything up to the timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Why a request was refused (not a failure: the caller was not allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No or a wrong signer token / client certificate.
    Authentication,
    /// The wallet is not in `--allowed-wallets`.
    Wallet,
    /// An admin route asked from a non-loopback address with `--admin-loopback-only`.
    Admin,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::Authentication => "authentication",
            Refusal::Wallet => "wallet_not_allowed",
            Refusal::Admin => "admin_not_loopback",
        }
    }
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    in_flight: IntGauge,
    connections: IntGauge,
    signatures: IntCounterVec,
    wallet_labels: Mutex<HashSet<String>>,
    sign_failures: IntCounterVec,
    refusals: IntCounterVec,
    kdf_seconds: Histogram,
    key_cache: IntCounterVec,
    metadata_cache: IntCounterVec,
    unlocked_keys: IntGauge,
    upstream: IntCounterVec,
    upstream_seconds: Histogram,
    audit_records: IntCounter,
    audit_failures: IntCounter,
    audit_syncs: IntCounter,
    audit_sync_seconds: Histogram,
    // Totals for the health route.
    signatures_total: AtomicU64,
    failures_total: AtomicU64,
    refusals_total: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    metric
}

fn histogram(registry: &Registry, name: &str, help: &str) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    let metric = Histogram::with_opts(opts).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(metric.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    metric
}

impl Metrics {
    /// The metrics of an instance in `mode` (`normal`, `signer`, `forward`).
    pub fn new(mode: &str) -> Metrics {
        // The names and label sets are constants: registration cannot fail at runtime.
        let registry = Registry::new();
        let info = IntGaugeVec::new(
            Opts::new(
                "ofc_signer_info",
                "ofc-signer's version and mode (always 1).",
            ),
            &["version", "mode"],
        )
        .unwrap_or_else(|e| panic!("metric ofc_signer_info: {e}"));
        registry
            .register(Box::new(info.clone()))
            .unwrap_or_else(|e| panic!("metric ofc_signer_info: {e}"));
        info.with_label_values(&[env!("CARGO_PKG_VERSION"), mode])
            .set(1);
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "ofc_signer_request_duration_seconds",
                "Time from request to response, by route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .unwrap_or_else(|e| panic!("metric ofc_signer_request_duration_seconds: {e}"));
        registry
            .register(Box::new(request_seconds.clone()))
            .unwrap_or_else(|e| panic!("metric ofc_signer_request_duration_seconds: {e}"));
        Metrics {
            requests: counter_vec(
                &registry,
                "ofc_signer_requests_total",
                "HTTP requests answered, by route and status.",
                &["route", "status"],
            ),
            request_seconds,
            in_flight: gauge(
                &registry,
                "ofc_signer_requests_in_flight",
                "Requests being served now.",
            ),
            connections: gauge(
                &registry,
                "ofc_signer_open_connections",
                "Client connections open now.",
            ),
            signatures: counter_vec(
                &registry,
                "ofc_signer_signatures_total",
                "Signatures produced (and audited), by wallet and outcome (signed: the user key here; bitgo-signed: BitGo's key, remotely).",
                &["wallet", "outcome"],
            ),
            wallet_labels: Mutex::new(HashSet::new()),
            sign_failures: counter_vec(
                &registry,
                "ofc_signer_sign_failures_total",
                "signPayload requests that failed (not refusals), by status.",
                &["status"],
            ),
            refusals: counter_vec(
                &registry,
                "ofc_signer_refusals_total",
                "Requests refused before any work (not failures), by reason.",
                &["reason"],
            ),
            kdf_seconds: histogram(
                &registry,
                "ofc_signer_kdf_duration_seconds",
                "Key derivations (PBKDF2 / Argon2id decryptions of key envelopes) and their duration.",
            ),
            key_cache: counter_vec(
                &registry,
                "ofc_signer_key_cache_total",
                "Key lookups: hit (unlocked key, passphrase checked without a KDF) or miss (derived).",
                &["result"],
            ),
            metadata_cache: counter_vec(
                &registry,
                "ofc_signer_metadata_cache_total",
                "Wallet and keychain lookups: hit (cached for this token) or miss (fetched from BitGo).",
                &["result"],
            ),
            unlocked_keys: gauge(
                &registry,
                "ofc_signer_unlocked_keys",
                "Keys held unlocked in memory (normal mode's key cache).",
            ),
            upstream: counter_vec(
                &registry,
                "ofc_signer_upstream_requests_total",
                "Calls to BitGo by outcome: the status class, or timeout, transport, response_hmac, refused.",
                &["outcome"],
            ),
            upstream_seconds: histogram(
                &registry,
                "ofc_signer_upstream_request_duration_seconds",
                "Duration of calls to BitGo.",
            ),
            audit_records: counter(
                &registry,
                "ofc_signer_audit_records_total",
                "Records appended to the audit log.",
            ),
            audit_failures: counter(
                &registry,
                "ofc_signer_audit_failures_total",
                "Audit log appends that failed (the signature was withheld).",
            ),
            audit_syncs: counter(
                &registry,
                "ofc_signer_audit_syncs_total",
                "Times the audit log was made durable (fdatasync); records_total / syncs_total is the average group commit.",
            ),
            audit_sync_seconds: histogram(
                &registry,
                "ofc_signer_audit_sync_duration_seconds",
                "Write + fdatasync of one audit batch: every answered signature waited for one (the disk's flush latency).",
            ),
            registry,
            signatures_total: AtomicU64::new(0),
            failures_total: AtomicU64::new(0),
            refusals_total: AtomicU64::new(0),
        }
    }

    /// A request answered.
    pub fn request(&self, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .with_label_values(&[route, status_label(status)])
            .inc();
        self.request_seconds
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a request in flight until the guard drops.
    pub fn in_flight(&self) -> GaugeGuard {
        GaugeGuard::new(self.in_flight.clone())
    }

    /// Counts an open connection until the guard drops.
    pub fn connection(&self) -> GaugeGuard {
        GaugeGuard::new(self.connections.clone())
    }

    /// A signature produced for `wallet`.
    pub fn signature(&self, wallet: &str, outcome: &str) {
        self.signatures_total.fetch_add(1, Ordering::Relaxed);
        let wallet = {
            let mut seen = self.wallet_labels.lock().unwrap_or_else(|p| p.into_inner());
            if seen.contains(wallet) {
                wallet
            } else if seen.len() < MAX_WALLET_LABELS {
                seen.insert(wallet.to_string());
                wallet
            } else {
                "other"
            }
        };
        self.signatures.with_label_values(&[wallet, outcome]).inc();
    }

    /// A signing request that failed with `status`.
    pub fn sign_failure(&self, status: u16) {
        self.failures_total.fetch_add(1, Ordering::Relaxed);
        self.sign_failures
            .with_label_values(&[status_label(status)])
            .inc();
    }

    pub fn refusal(&self, reason: Refusal) {
        self.refusals_total.fetch_add(1, Ordering::Relaxed);
        self.refusals.with_label_values(&[reason.label()]).inc();
    }

    /// One audit batch took `elapsed` to write and make durable.
    pub fn audit_sync_time(&self, elapsed: Duration) {
        self.audit_sync_seconds.observe(elapsed.as_secs_f64());
    }

    /// One key derivation took `elapsed`.
    pub fn kdf_time(&self, elapsed: Duration) {
        self.kdf_seconds.observe(elapsed.as_secs_f64());
    }

    pub fn key_cache(&self, hit: bool) {
        self.key_cache
            .with_label_values(&[if hit { "hit" } else { "miss" }])
            .inc();
    }

    pub fn metadata_cache(&self, hit: bool) {
        self.metadata_cache
            .with_label_values(&[if hit { "hit" } else { "miss" }])
            .inc();
    }

    /// A call to BitGo ended with `outcome` after `elapsed`.
    pub fn upstream(&self, outcome: &str, elapsed: Duration) {
        self.upstream.with_label_values(&[outcome]).inc();
        self.upstream_seconds.observe(elapsed.as_secs_f64());
    }

    pub fn audit(&self, ok: bool) {
        if ok {
            self.audit_records.inc();
        } else {
            self.audit_failures.inc();
        }
    }

    /// (signatures, failures, refusals) so far, for the health route.
    pub fn totals(&self) -> (u64, u64, u64) {
        (
            self.signatures_total.load(Ordering::Relaxed),
            self.failures_total.load(Ordering::Relaxed),
            self.refusals_total.load(Ordering::Relaxed),
        )
    }

    /// How many key derivations ran.
    pub fn kdf_runs(&self) -> u64 {
        self.kdf_seconds.get_sample_count()
    }

    /// The text exposition, with the levels read now.
    pub fn render(&self, levels: Levels) -> String {
        self.unlocked_keys.set(levels.unlocked_keys as i64);
        // A counter kept by the audit log itself: catch up.
        let syncs = self.audit_syncs.get();
        self.audit_syncs
            .inc_by(levels.audit_syncs.saturating_sub(syncs));
        let mut out = Vec::with_capacity(8 * 1024);
        // Encoding into a Vec cannot fail on I/O; a malformed family would be a bug here.
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(%error, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// What other parts count, read when `/metrics` is rendered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Levels {
    /// Unlocked keys held in the key cache.
    pub unlocked_keys: usize,
    /// `fdatasync`s of the audit log so far ([`crate::store::audit::AuditLog::syncs`]).
    pub audit_syncs: u64,
}

/// Statuses labelled individually: a `4xx` class would lose the 401/403/409 distinctions that
/// matter here.
const KNOWN_STATUSES: [(u16, &str); 19] = [
    (200, "200"),
    (201, "201"),
    (204, "204"),
    (304, "304"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (405, "405"),
    (408, "408"),
    (409, "409"),
    (413, "413"),
    (415, "415"),
    (429, "429"),
    (500, "500"),
    (502, "502"),
    (503, "503"),
    (504, "504"),
    (511, "511"),
];

/// The status itself when known, else its class (the label set stays bounded).
fn status_label(status: u16) -> &'static str {
    if let Some((_, label)) = KNOWN_STATUSES.iter().find(|(known, _)| *known == status) {
        return label;
    }
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Decrements its gauge when dropped.
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
            .and_then(|line| line[series.len()..].trim().parse().ok())
    }

    #[test]
    fn exposition_counts_what_happened() {
        let metrics = Metrics::new("normal");
        metrics.request("sign_payload", 200, Duration::from_micros(300));
        metrics.request("sign_payload", 200, Duration::from_millis(3));
        metrics.request("sign_payload", 401, Duration::from_millis(1));
        metrics.signature("w1", "signed");
        metrics.signature("w1", "signed");
        metrics.sign_failure(401);
        metrics.refusal(Refusal::Authentication);
        metrics.key_cache(true);
        metrics.kdf_time(Duration::from_millis(2));
        metrics.audit_sync_time(Duration::from_micros(300));
        let text = metrics.render(Levels {
            unlocked_keys: 3,
            audit_syncs: 2,
        });
        assert_eq!(
            sample(
                &text,
                r#"ofc_signer_requests_total{route="sign_payload",status="200"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"ofc_signer_signatures_total{outcome="signed",wallet="w1"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"ofc_signer_request_duration_seconds_bucket{route="sign_payload",le="0.0005"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"ofc_signer_request_duration_seconds_count{route="sign_payload"}"#
            ),
            Some(3.0)
        );
        assert_eq!(
            sample(&text, r#"ofc_signer_sign_failures_total{status="401"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"ofc_signer_refusals_total{reason="authentication"}"#
            ),
            Some(1.0)
        );
        assert_eq!(sample(&text, "ofc_signer_unlocked_keys"), Some(3.0));
        assert_eq!(sample(&text, "ofc_signer_audit_syncs_total"), Some(2.0));
        assert_eq!(
            sample(
                &text,
                r#"ofc_signer_audit_sync_duration_seconds_bucket{le="0.00025"}"#
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"ofc_signer_audit_sync_duration_seconds_bucket{le="0.0005"}"#
            ),
            Some(1.0)
        );
        // The audit log's count catches up; a counter never goes back.
        let text = metrics.render(Levels {
            unlocked_keys: 0,
            audit_syncs: 5,
        });
        assert_eq!(sample(&text, "ofc_signer_audit_syncs_total"), Some(5.0));
        let text = metrics.render(Levels::default());
        assert_eq!(sample(&text, "ofc_signer_audit_syncs_total"), Some(5.0));
        assert_eq!(
            sample(&text, "ofc_signer_kdf_duration_seconds_count"),
            Some(1.0)
        );
        assert!(text.contains("# TYPE ofc_signer_requests_total counter"));
        assert_eq!(metrics.totals(), (2, 1, 1));
        assert_eq!(metrics.kdf_runs(), 1);
    }

    #[test]
    fn wallet_labels_are_bounded() {
        let metrics = Metrics::new("normal");
        for n in 0..MAX_WALLET_LABELS + 5 {
            metrics.signature(&format!("w{n}"), "signed");
        }
        let text = metrics.render(Levels::default());
        assert_eq!(
            sample(
                &text,
                r#"ofc_signer_signatures_total{outcome="signed",wallet="other"}"#
            ),
            Some(5.0)
        );
        // A wallet seen before keeps its own label.
        metrics.signature("w0", "signed");
        assert_eq!(
            sample(
                &metrics.render(Levels::default()),
                r#"ofc_signer_signatures_total{outcome="signed",wallet="w0"}"#
            ),
            Some(2.0)
        );
    }

    #[test]
    fn gauges_follow_guards() {
        let metrics = Metrics::new("signer");
        let first = metrics.in_flight();
        let second = metrics.in_flight();
        assert_eq!(
            sample(
                &metrics.render(Levels::default()),
                "ofc_signer_requests_in_flight"
            ),
            Some(2.0)
        );
        drop((first, second));
        assert_eq!(
            sample(
                &metrics.render(Levels::default()),
                "ofc_signer_requests_in_flight"
            ),
            Some(0.0)
        );
    }
}
