//! Authentication of ofc-signer's own clients (beyond Express, whose signer is an open signing
//! oracle): an optional bearer token compared in constant time, optional mutual TLS, and an
//! optional allowlist of wallet ids. Refusals are 401 / 403 with Express's error body.

use std::collections::BTreeSet;

use axum::http::{HeaderMap, StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::SignerAuth;
use crate::error::ApiError;

/// The header that carries the signer token in every mode.
pub const SIGNER_TOKEN_HEADER: &str = "x-signer-token";

/// What is known about a request's connection, attached to each of its requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectionInfo {
    /// The client presented a certificate that verified against the client CA.
    pub client_certificate: bool,
    /// The client is on this host: a loopback address or the Unix socket.
    pub loopback: bool,
}

/// The checks, prepared once.
#[derive(Default)]
pub struct ClientAuth {
    token_hash: Option<[u8; 32]>,
    require_client_certificate: bool,
    allowed_wallets: Option<BTreeSet<String>>,
    /// In signer mode `Authorization: Bearer <signer token>` is accepted too (callers of a signer
    /// send no BitGo token).
    accept_authorization_header: bool,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("token", &self.token_hash.map(|_| "[REDACTED]"))
            .field(
                "require_client_certificate",
                &self.require_client_certificate,
            )
            .field("allowed_wallets", &self.allowed_wallets)
            .finish()
    }
}

impl ClientAuth {
    pub fn new(config: &SignerAuth, signer_mode: bool) -> Self {
        ClientAuth {
            token_hash: config
                .token
                .as_ref()
                .map(|t| Sha256::digest(t.as_bytes()).into()),
            require_client_certificate: config.client_ca.is_some(),
            allowed_wallets: config.allowed_wallets.clone(),
            accept_authorization_header: signer_mode,
        }
    }

    /// Checks the request's credentials: 401 when a required one is missing or wrong.
    pub fn check_request(
        &self,
        headers: &HeaderMap,
        connection: ConnectionInfo,
    ) -> Result<(), ApiError> {
        if self.require_client_certificate && !connection.client_certificate {
            return Err(refusal(
                StatusCode::UNAUTHORIZED,
                "unauthorized: this signer requires a client certificate",
            ));
        }
        if let Some(expected) = &self.token_hash {
            let presented = self.presented_token(headers);
            let matches = presented
                .map(|token| bool::from(Sha256::digest(token).as_slice().ct_eq(expected)))
                .unwrap_or(false);
            if !matches {
                return Err(refusal(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized: this signer requires a valid signer token (X-Signer-Token)",
                ));
            }
        }
        Ok(())
    }

    fn presented_token<'a>(&self, headers: &'a HeaderMap) -> Option<&'a [u8]> {
        if let Some(token) = headers.get(SIGNER_TOKEN_HEADER) {
            return Some(token.as_bytes());
        }
        if self.accept_authorization_header {
            let value = headers.get(header::AUTHORIZATION)?.as_bytes();
            let (scheme, token) = value.split_at(value.iter().position(|&b| b == b' ')?);
            if scheme.eq_ignore_ascii_case(b"bearer") {
                return Some(&token[1..]);
            }
        }
        None
    }

    /// 403 when an allowlist is configured and `wallet_id` is not on it.
    pub fn check_wallet(&self, wallet_id: &str) -> Result<(), ApiError> {
        match &self.allowed_wallets {
            Some(allowed) if !allowed.contains(wallet_id) => Err(refusal(
                StatusCode::FORBIDDEN,
                format!("forbidden: walletId {wallet_id} is not allowed on this signer"),
            )),
            _ => Ok(()),
        }
    }
}

fn refusal(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError::api_response(status, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn tokens_and_allowlist() {
        let config = SignerAuth {
            token: Some(Zeroizing::new("s3cret".to_string())),
            client_ca: None,
            allowed_wallets: Some(["w1".to_string()].into_iter().collect()),
        };
        let auth = ClientAuth::new(&config, true);
        let none = ConnectionInfo::default();
        assert!(auth.check_request(&headers(&[]), none).is_err());
        assert!(
            auth.check_request(&headers(&[("x-signer-token", "wrong")]), none)
                .is_err()
        );
        assert!(
            auth.check_request(&headers(&[("x-signer-token", "s3cret")]), none)
                .is_ok()
        );
        assert!(
            auth.check_request(&headers(&[("authorization", "Bearer s3cret")]), none)
                .is_ok()
        );
        assert!(
            auth.check_request(&headers(&[("authorization", "Bearer s3cre")]), none)
                .is_err()
        );
        assert_eq!(
            auth.check_wallet("w2").unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        assert!(auth.check_wallet("w1").is_ok());
        // Outside signer mode, Authorization carries the BitGo token, not the signer token.
        let normal = ClientAuth::new(&config, false);
        assert!(
            normal
                .check_request(&headers(&[("authorization", "Bearer s3cret")]), none)
                .is_err()
        );
        assert!(!format!("{auth:?}").contains("s3cret"));
    }

    #[test]
    fn client_certificates() {
        let config = SignerAuth {
            client_ca: Some("ca.pem".into()),
            ..SignerAuth::default()
        };
        let auth = ClientAuth::new(&config, true);
        assert_eq!(
            auth.check_request(&HeaderMap::new(), ConnectionInfo::default())
                .unwrap_err()
                .status,
            StatusCode::UNAUTHORIZED
        );
        assert!(
            auth.check_request(
                &HeaderMap::new(),
                ConnectionInfo {
                    client_certificate: true,
                    loopback: false,
                }
            )
            .is_ok()
        );
    }
}
