//! # ofc-signer
//!
//! A self-hosted, BitGo-Express-compatible signing proxy for OFC trading accounts.
//!
//! Data flows one way: **request → route → (upstream client | key source) → core → response**.
//!
//! | module | role |
//! |---|---|
//! | [`config`] | Express-compatible CLI flags and `BITGO_*` variables; ofc-signer's own options; startup checks |
//! | [`server`] | shared state, request pipeline, admin routes, accept loop, graceful shutdown |
//! | [`routes`] | one file per route family: [`routes::sign_payload`], [`routes::local`], [`routes::proxy`], [`routes::network`] |
//! | [`error`] | the one error type and the one renderer of Express's error body |
//! | [`auth`], [`tls`] | signer authentication (token, mutual TLS, wallet allowlist); rustls configurations |
//! | [`upstream`] | the BitGo API client: [`upstream::hmac`] (auth v2/v3), [`upstream::client`], [`upstream::metadata_cache`], forward mode's [`upstream::external_signer`] |
//! | [`keys`] | key envelopes ([`keys::envelope`]), extended keys ([`keys::xprv`]), passphrases, KDF pool, unlocked keys ([`keys::unlocked`]), signer key file ([`keys::keystore`]) |
//! | [`network_crypto`] | Go Network connection-key encryption (RSA-OAEP + AES-GCM) |
//! | [`store`] | durable state: idempotency store and hash-chained audit log |
//! | [`metrics`] | Prometheus counters and histograms for `GET /metrics` |
//! | [`log_writer`] | the log sink: lines written in batches by one thread |
//! | [`js_json`] | pure: V8-exact `JSON.parse` → `JSON.stringify` (payload canonicalisation) |
//! | [`message_sign`] | pure: Bitcoin signed-message digest and compact recoverable signature |
//! | [`tools`] | the subcommands (`fetch-keys`, `encrypt`, `decrypt`, `sign`, `verify`, `audit`, `sandbox`) |
//! | [`sandbox`] | an in-process fake BitGo API (with a Go Network) for `--demo`, tests and benchmarks |
//!
//! The core ([`js_json`], [`message_sign`], [`keys::envelope`], [`keys::xprv`],
//! [`upstream::hmac`]) does no I/O and knows nothing about HTTP; the edges know nothing about
//! cryptography.
//!
//! The `server` feature (on by default) is everything that needs the HTTP, TLS, storage, metrics
//! and command-line crates. Without it (`default-features = false`) the library is the core, the
//! key sources, [`error`]'s error type and the pure parts of [`routes`] (the request validation
//! and the proxy's route table): what the fuzz targets link, so they build without the server's
//! dependency tree.

#![forbid(unsafe_code)]

pub mod error;
pub mod js_json;
pub mod keys;
pub mod message_sign;
pub mod routes;
pub mod upstream;

#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod log_writer;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod network_crypto;
#[cfg(feature = "server")]
pub mod sandbox;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod tls;
#[cfg(feature = "server")]
pub mod tools;
