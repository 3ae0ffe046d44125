//! Routing and request decoding, Express style (spec §0, §5.1).
//!
//! Express matches routes case-insensitively, tolerates a trailing slash and first collapses
//! every `//` in the URL; [`resolve`] does the same over a fixed table. Typed routes decode a JSON
//! body only when the request says it is JSON ([`read_typed_body`]); body-parser failures keep
//! their status codes (400 / 413 / 415) but get Express's JSON error body (spec §11.8).
//!
//! One file per route family: [`sign_payload`] (the OFC signing route), [`local`] (ping,
//! pingexpress, encrypt, decrypt), [`proxy`] (everything else under `/api`) and [`network`] (Go
//! Network). `request.rs` is what a request brings (route, body, token, id). Two parts are pure
//! and built without the `server` feature: [`validation`] (the typed routes' body checks) and
//! [`proxy_plan`] (the proxy's route table).

pub mod proxy_plan;
pub mod validation;

#[cfg(feature = "server")]
pub mod local;
#[cfg(feature = "server")]
pub mod network;
#[cfg(feature = "server")]
pub mod proxy;
#[cfg(feature = "server")]
mod request;
#[cfg(feature = "server")]
pub mod sign_payload;

#[cfg(feature = "server")]
pub use request::*;

/// Express's URL normalisation: every `//` becomes `/` in one left-to-right pass.
pub fn collapse_double_slashes(path: &str) -> String {
    path.replace("//", "/")
}
