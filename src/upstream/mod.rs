//! Everything that talks to BitGo: request authentication ([`hmac`]), the pooled client
//! ([`client`]) and the SDK's rendering of upstream error texts ([`error_text`]).
pub mod client;
pub mod error_text;
pub mod external_signer;
pub mod hmac;
