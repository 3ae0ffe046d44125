//! The integration tests, one module per area, built as one test binary (`cargo test --test
//! integration`; one area: `cargo test --test integration hostile::`). One binary links the
//! crate and its dependencies once instead of once per file.

mod common;

mod binary;
mod canonical_vs_node;
mod crash;
mod decrypt_vectors;
mod errors;
mod flows;
mod hmac_vectors;
mod hostile;
mod local_routes;
mod network;
mod operations;
mod proxy;
mod sandbox_network;
mod secret_hygiene;
mod sign_vectors;
mod signer_mode;
mod store;
mod tls_ipc;
mod tools;
mod upstream_faults;
