//! BitGo request/response authentication (spec §4): token classification, HMAC v2/v3 subjects,
//! request headers and response verification, as `@bitgo/sdk-hmac` and `BitGoAPI` do them.
//!
//! Pure: the caller supplies the timestamp / verification time.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// Which HMAC scheme signs upstream requests (spec §11.4: 2 by default, 3 on request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthVersion {
    V2,
    V3,
}

impl AuthVersion {
    /// The `BitGo-Auth-Version` header value.
    pub fn header_value(self) -> &'static str {
        match self {
            AuthVersion::V2 => "2.0",
            AuthVersion::V3 => "3.0",
        }
    }
}

/// A caller's BitGo access token. Zeroized on drop; `Debug` never prints it.
#[derive(Clone)]
pub struct AccessToken(Zeroizing<String>);

impl AccessToken {
    pub fn new(token: impl Into<String>) -> Self {
        AccessToken(Zeroizing::new(token.into()))
    }

    /// The raw token, for HMAC keys and legacy bearer headers only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A "legacy" token is sent as a plain bearer token without HMAC (spec §4.1): its length is
    /// not 67 (in UTF-16 code units, as JavaScript counts) and it does not start with `v2x`.
    pub fn is_legacy(&self) -> bool {
        self.0.encode_utf16().count() != 67 && !self.0.starts_with("v2x")
    }

    /// Lowercase hex SHA-256 of the token: what `Authorization: Bearer` carries for HMAC tokens.
    pub fn hash_hex(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken([REDACTED])")
    }
}

/// Normalises an SDK method name: `del` is `DELETE`, everything upper case.
pub fn method_name(method: &str) -> String {
    if method.eq_ignore_ascii_case("del") {
        "DELETE".to_string()
    } else {
        method.to_ascii_uppercase()
    }
}

/// Characters legacy `url.parse` percent-escapes in the path and query (its `autoEscapeChars`).
fn auto_escape(c: char) -> Option<&'static str> {
    Some(match c {
        '\t' => "%09",
        '\n' => "%0A",
        '\r' => "%0D",
        ' ' => "%20",
        '"' => "%22",
        '\'' => "%27",
        '<' => "%3C",
        '>' => "%3E",
        '\\' => "%5C",
        '^' => "%5E",
        '`' => "%60",
        '{' => "%7B",
        '|' => "%7C",
        '}' => "%7D",
        _ => return None,
    })
}

/// The request path `P` of the HMAC subject for `url` (absolute or path-only), computed like
/// legacy Node `url.parse(url)`: fragment dropped, `autoEscapeChars` percent-escaped (non-ASCII
/// left alone), `pathname + search` when the query is non-empty, else `pathname`; an absolute URL
/// with no path has pathname `/`.
pub fn subject_path(url: &str) -> String {
    let url = url.trim();
    let rest = match url.find("://") {
        Some(scheme_end)
            if url[..scheme_end]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            let after = &url[scheme_end + 3..];
            let host_end = after.find(['/', '?', '#']).unwrap_or(after.len());
            let rest = &after[host_end..];
            if rest.is_empty() || rest.starts_with('?') || rest.starts_with('#') {
                // `url.parse` gives an absolute URL without a path the pathname "/".
                return escape_path_and_query(&format!("/{rest}"));
            }
            rest
        }
        _ => url,
    };
    escape_path_and_query(rest)
}

fn escape_path_and_query(rest: &str) -> String {
    let without_fragment = rest.split('#').next().unwrap_or("");
    let (pathname, query) = match without_fragment.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (without_fragment, None),
    };
    let mut out = String::with_capacity(without_fragment.len() + 8);
    push_escaped(&mut out, pathname);
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        out.push('?');
        push_escaped(&mut out, query);
    }
    out
}

fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match auto_escape(c) {
            Some(escaped) => out.push_str(escaped),
            None => out.push(c),
        }
    }
}

/// The request subject that is HMACed (spec §4.3).
/// v2: `<ts>|<P>|<B>`; v3: `<METHOD>|<ts>|3.0|<P>|<B>`.
pub fn request_subject(
    version: AuthVersion,
    method: &str,
    timestamp_ms: u64,
    path: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut subject = Vec::with_capacity(path.len() + body.len() + 32);
    if version == AuthVersion::V3 {
        subject.extend_from_slice(method_name(method).as_bytes());
        subject.push(b'|');
    }
    subject.extend_from_slice(timestamp_ms.to_string().as_bytes());
    subject.push(b'|');
    if version == AuthVersion::V3 {
        subject.extend_from_slice(b"3.0|");
    }
    subject.extend_from_slice(path.as_bytes());
    subject.push(b'|');
    subject.extend_from_slice(body);
    subject
}

/// The response subject (spec §4.3). `timestamp` is the response header verbatim (`""` if absent).
/// v2: `<ts>|<P>|<status>|<T>`; v3: `<METHOD>|<ts>|<P>|<status>|<T>`.
pub fn response_subject(
    version: AuthVersion,
    method: &str,
    timestamp: &str,
    path: &str,
    status: u16,
    body: &[u8],
) -> Vec<u8> {
    let mut subject = Vec::with_capacity(path.len() + body.len() + 40);
    if version == AuthVersion::V3 {
        subject.extend_from_slice(method_name(method).as_bytes());
        subject.push(b'|');
    }
    subject.extend_from_slice(timestamp.as_bytes());
    subject.push(b'|');
    subject.extend_from_slice(path.as_bytes());
    subject.push(b'|');
    subject.extend_from_slice(status.to_string().as_bytes());
    subject.push(b'|');
    subject.extend_from_slice(body);
    subject
}

/// Lowercase hex HMAC-SHA256 of `subject` keyed with the raw token bytes.
pub fn hmac_hex(token: &AccessToken, subject: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(token.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC-SHA256 takes keys of any length"));
    mac.update(subject);
    hex::encode(mac.finalize().into_bytes())
}

/// The authentication headers of one upstream request, in the order the SDK sets them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthHeaders(pub Vec<(&'static str, String)>);

/// Authentication headers for a request (spec §4.2): none but `BitGo-Auth-Version` without a token,
/// a plain bearer token for legacy tokens, else timestamp, hashed token and HMAC.
pub fn request_headers(
    version: AuthVersion,
    token: Option<&AccessToken>,
    method: &str,
    path: &str,
    body: &[u8],
    timestamp_ms: u64,
) -> AuthHeaders {
    let mut headers = Vec::with_capacity(4);
    match token {
        Some(token) if token.is_legacy() => {
            headers.push(("Authorization", format!("Bearer {}", token.expose())));
        }
        Some(token) => {
            let subject = request_subject(version, method, timestamp_ms, path, body);
            headers.push(("BitGo-Auth-Version", version.header_value().to_string()));
            headers.push(("Auth-Timestamp", timestamp_ms.to_string()));
            headers.push(("Authorization", format!("Bearer {}", token.hash_hex())));
            headers.push(("HMAC", hmac_hex(token, &subject)));
        }
        None => headers.push(("BitGo-Auth-Version", version.header_value().to_string())),
    }
    AuthHeaders(headers)
}

/// Why a 2xx upstream response was not accepted (spec §4.4, §11.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseCheckError {
    /// `invalid response HMAC` — the detail fields of the 511 body (never any part of the token).
    InvalidHmac {
        expected_hmac: String,
        received_hmac: Option<String>,
        hmac_input: String,
    },
    /// `server response outside response validity time window` (v3 only).
    OutsideWindow {
        timestamp: Option<String>,
        verification_time: u64,
    },
}

/// The response input of [`verify_response`].
pub struct SignedResponse<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub body: &'a [u8],
    /// The `timestamp` response header, verbatim.
    pub timestamp: Option<&'a str>,
    /// The `hmac` response header, verbatim.
    pub hmac: Option<&'a str>,
}

/// How far back (ms) a v3 response timestamp may lie.
const V3_WINDOW_BACK_MS: f64 = 5.0 * 60.0 * 1000.0;
/// How far ahead (ms) a v3 response timestamp may lie.
const V3_WINDOW_AHEAD_MS: f64 = 60.0 * 1000.0;

/// Verifies a 2xx response to an HMAC-signed request: the HMAC first, then (v3 only) the
/// validity window `now − 5 min ≤ timestamp ≤ now + 1 min`. The HMAC comparison is exact string
/// equality (case-sensitive, as the SDK does), done in constant time.
pub fn verify_response(
    version: AuthVersion,
    token: &AccessToken,
    response: &SignedResponse<'_>,
    now_ms: u64,
) -> Result<(), ResponseCheckError> {
    let timestamp = response.timestamp.unwrap_or("");
    let subject = response_subject(
        version,
        response.method,
        timestamp,
        response.path,
        response.status,
        response.body,
    );
    let expected = hmac_hex(token, &subject);
    let received = response.hmac.unwrap_or("");
    let matches = response.hmac.is_some()
        && expected.len() == received.len()
        && bool::from(expected.as_bytes().ct_eq(received.as_bytes()));
    if !matches {
        return Err(ResponseCheckError::InvalidHmac {
            expected_hmac: expected,
            received_hmac: response.hmac.map(str::to_string),
            hmac_input: String::from_utf8_lossy(&subject).into_owned(),
        });
    }
    if version == AuthVersion::V3 {
        // JavaScript compares `new Date(Number(timestamp))`-style numbers; a non-numeric
        // timestamp is NaN and fails the window.
        let in_window = timestamp
            .trim()
            .parse::<f64>()
            .map(|ts| {
                let now = now_ms as f64;
                ts >= now - V3_WINDOW_BACK_MS && ts <= now + V3_WINDOW_AHEAD_MS
            })
            .unwrap_or(false);
        if !in_window {
            return Err(ResponseCheckError::OutsideWindow {
                timestamp: response.timestamp.map(str::to_string),
                verification_time: now_ms,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_known_answers() {
        let token = AccessToken::new("test-token");
        assert_eq!(
            token.hash_hex(),
            "4c5dc9b7708905f77f5e5d16316b5dfb425e68cb326dcd55a860e90a7707031e"
        );
        let v3 = request_subject(
            AuthVersion::V3,
            "post",
            1672531200000,
            "/api/test",
            b"request-body",
        );
        assert_eq!(
            hmac_hex(&token, &v3),
            "56b7c2bb722ebfa55600a0201af42ad5cd926340d9df5735005d91db452386d1"
        );
        let v2 = request_subject(
            AuthVersion::V2,
            "post",
            1672531200000,
            "/api/test",
            b"request-body",
        );
        assert_eq!(
            hmac_hex(&token, &v2),
            "16205c7959e6feb680f07642e4cfa61547e3a6656114c712ad1940fc294b9fcc"
        );
        let v3_response = response_subject(
            AuthVersion::V3,
            "post",
            "1672531200000",
            "/api/test",
            200,
            b"response-body",
        );
        assert_eq!(
            hmac_hex(&token, &v3_response),
            "a16c08b1fa8bff1e2e58d1831855e1745361f78bd6eb6e18b5b7ee17ae0a3bb7"
        );
        let v2_response = response_subject(
            AuthVersion::V2,
            "get",
            "1672531200000",
            "/api/test",
            200,
            b"response-body",
        );
        assert_eq!(
            hmac_hex(&token, &v2_response),
            "b588c3ad19297828aeedaeda0f8f7b20c6b355b20b3d6f9bd98fb41bc1cb56b2"
        );
    }

    #[test]
    fn token_classification() {
        assert!(AccessToken::new("v123xyz...").is_legacy());
        assert!(AccessToken::new("a".repeat(40)).is_legacy());
        assert!(!AccessToken::new("v2xabc").is_legacy());
        assert!(!AccessToken::new("x".repeat(67)).is_legacy());
        assert_eq!(
            format!("{:?}", AccessToken::new("v2xsecret")),
            "AccessToken([REDACTED])"
        );
    }

    #[test]
    fn subject_paths_follow_legacy_url_parse() {
        assert_eq!(subject_path("https://h.example"), "/");
        assert_eq!(subject_path("https://h.example?x=1"), "/?x=1");
        assert_eq!(subject_path("https://h.example/a/b?"), "/a/b");
        assert_eq!(subject_path("https://h.example/a?b=1#frag"), "/a?b=1");
        assert_eq!(subject_path("/relative/x?y=2"), "/relative/x?y=2");
        assert_eq!(
            subject_path("https://h/api/v2/{x}/a b'c?q=d e&u=é"),
            "/api/v2/%7Bx%7D/a%20b%27c?q=d%20e&u=é"
        );
        assert_eq!(
            subject_path("http://h:3000/a/%2F/../b?x=%zz"),
            "/a/%2F/../b?x=%zz"
        );
    }
}
