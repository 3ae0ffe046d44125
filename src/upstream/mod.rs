//! Everything that talks to BitGo: request authentication ([`hmac`]), the pooled client
//! ([`client`]), the short-lived wallet/keychain cache ([`metadata_cache`]), forward mode's
//! client ([`external_signer`]) and the SDK's rendering of upstream error texts ([`error_text`]).
pub mod error_text;
pub mod hmac;
pub mod metadata_cache;

#[cfg(feature = "server")]
pub mod client;
#[cfg(feature = "server")]
pub mod external_signer;
