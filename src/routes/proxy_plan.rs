//! Express's proxy route table (spec §5.1): which BitGo URL a request that no local route
//! answers goes to, in Express's match order. Pure: `routes::proxy` sends.

use http::Method;

use crate::routes;

/// Which Express route matched (spec §5.1 numbering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyRoute {
    /// Routes 3, 5, 6: the URL is rebuilt from the decoded path remainder.
    Rebuilt,
    /// Route 7: `POST /api/network/v1/enterprises/:eid/clients/connections`.
    Connections,
    /// Route 8: `/api/:ns/v1|v2/enterprises/:eid/*`, forwarded as received with `enterprise-id`.
    Enterprise,
    /// Route 9: any other `/api…` or `/oauth/token…` URL, forwarded as received.
    Original,
}

/// Where a proxied request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPlan {
    pub route: ProxyRoute,
    /// Path and query of the upstream URL.
    pub upstream_path: String,
    pub enterprise_id: Option<String>,
}

/// Why a request is not proxied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotProxied {
    /// 404 `bitgo-express can only proxy BitGo API requests`.
    NotApi,
    /// `--disableproxy` and no explicit route: Express's default 404 (`Cannot GET /x`).
    Disabled,
}

/// Percent-decodes once (Express decodes route parameters once); invalid sequences stay.
fn decode_once(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A decoded path remainder made safe to put back in a URL path: `?` and `#` (which would change
/// the URL's structure) are re-escaped; the rest is escaped by the client like any path.
fn reencode_structural(decoded: &str) -> String {
    decoded.replace('?', "%3F").replace('#', "%23")
}

/// Matches `prefix` case-insensitively at the start of `path` and returns the remainder.
fn strip_prefix_ci<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let head = path.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &path[prefix.len()..])
}

/// The enterprise id of `/api/:ns/v1|v2/enterprises/:eid/…` (route 8's pattern), if it matches.
fn enterprise_route(path: &str) -> Option<String> {
    let mut segments = path.strip_prefix('/')?.split('/');
    let api = segments.next()?;
    let _namespace = segments.next().filter(|s| !s.is_empty())?;
    let version = segments.next()?;
    let enterprises = segments.next()?;
    let enterprise_id = segments.next().filter(|s| !s.is_empty())?;
    // `/*` needs at least the slash after the id.
    segments.next()?;
    (api.eq_ignore_ascii_case("api")
        && (version.eq_ignore_ascii_case("v1") || version.eq_ignore_ascii_case("v2"))
        && enterprises.eq_ignore_ascii_case("enterprises"))
    .then(|| decode_once(enterprise_id))
}

/// Route 7's pattern: `POST /api/network/v1/enterprises/:eid/clients/connections[/]`.
fn connections_route(method: &Method, path: &str) -> Option<String> {
    if method != Method::POST {
        return None;
    }
    let rest = strip_prefix_ci(path, "/api/network/v1/enterprises/")?;
    let (enterprise_id, tail) = rest.split_once('/')?;
    let tail = tail.strip_suffix('/').unwrap_or(tail);
    (!enterprise_id.is_empty() && tail.eq_ignore_ascii_case("clients/connections"))
        .then(|| decode_once(enterprise_id))
}

/// The route table in Express's match order (spec §5.1), for a request that is not a local route.
/// `original` is the request target as received (path and query).
pub fn plan(method: &Method, original: &str, disable_proxy: bool) -> Result<ProxyPlan, NotProxied> {
    // Express collapses `//` in req.url before routing; originalUrl stays raw. The query is
    // forwarded byte for byte as received (spec §11.12), so only the path is collapsed.
    let (raw_path, query) = match original.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (original, None),
    };
    let url = routes::collapse_double_slashes(raw_path);
    let path = url.as_str();
    let search = query
        .filter(|q| !q.is_empty())
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let rebuilt = |prefix: &str, rest: &str| ProxyPlan {
        route: ProxyRoute::Rebuilt,
        upstream_path: format!(
            "{prefix}{}{search}",
            reencode_structural(&decode_once(rest))
        ),
        enterprise_id: None,
    };
    // Route 3: /api/v1/*
    if let Some(rest) = strip_prefix_ci(path, "/api/v1/") {
        return Ok(rebuilt("/api/v1/", rest));
    }
    // Route 5: /api/v2/user/*
    if let Some(rest) = strip_prefix_ci(path, "/api/v2/user/") {
        return Ok(rebuilt("/api/v2/user/", rest));
    }
    // Route 6: /api/v2/:coin/*
    if let Some(rest) = strip_prefix_ci(path, "/api/v2/")
        && let Some((coin, rest)) = rest.split_once('/')
        && !coin.is_empty()
    {
        return Ok(rebuilt(&format!("/api/v2/{}/", decode_once(coin)), rest));
    }
    // Route 7: connections (also when the proxy is disabled).
    if let Some(enterprise_id) = connections_route(method, path) {
        return Ok(ProxyPlan {
            route: ProxyRoute::Connections,
            upstream_path: original.to_string(),
            enterprise_id: Some(enterprise_id),
        });
    }
    if disable_proxy {
        return Err(NotProxied::Disabled);
    }
    // Route 8: enterprise routes, with the `enterprise-id` header.
    if let Some(enterprise_id) = enterprise_route(path) {
        return Ok(ProxyPlan {
            route: ProxyRoute::Enterprise,
            upstream_path: original.to_string(),
            enterprise_id: Some(enterprise_id),
        });
    }
    // Route 9: `^/api` on originalUrl (case-sensitive) or `^/oauth/token` on url.
    if original.starts_with("/api") || url.starts_with("/oauth/token") {
        return Ok(ProxyPlan {
            route: ProxyRoute::Original,
            upstream_path: original.to_string(),
            enterprise_id: None,
        });
    }
    Err(NotProxied::NotApi)
}

/// Whether the path of `upstream_path` has a `.` or `..` segment once percent-decoded (once or
/// twice) with `%2F` and `\` read as separators, as some servers read them: such a path could
/// climb out of `/api/` there. No BitGo route has one; they are refused like the plain dot
/// segments the upstream client refuses (URL normalisation would change the signed path).
pub fn hides_dot_segment(upstream_path: &str) -> bool {
    let path = upstream_path.split(['?', '#']).next().unwrap_or("");
    let once = decode_once(path);
    let twice = decode_once(&once);
    [path, &once, &twice].iter().any(|path| {
        path.split(['/', '\\'])
            .any(|segment| segment == "." || segment == "..")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(method: Method, url: &str) -> Result<ProxyPlan, NotProxied> {
        plan(&method, url, false)
    }

    fn path(method: Method, url: &str) -> String {
        planned(method, url).unwrap().upstream_path
    }

    #[test]
    fn routes_3_5_6_rebuild_the_url_like_express() {
        // Observed by the spec (§5.1), except that the query is kept as received (§11.12).
        assert_eq!(
            path(Method::GET, "/api/v2/user//me?x=a//b"),
            "/api/v2/user/me?x=a//b"
        );
        assert_eq!(
            path(Method::GET, "/api/v2/user/a%2Fb?x=%20&y=%2F"),
            "/api/v2/user/a/b?x=%20&y=%2F"
        );
        assert_eq!(
            path(Method::GET, "/API/V2/USER/me?Q=1"),
            "/api/v2/user/me?Q=1"
        );
        assert_eq!(
            path(Method::GET, "/api/v2/ofc/foo%2Fbar?x=1"),
            "/api/v2/ofc/foo/bar?x=1"
        );
        assert_eq!(
            path(Method::GET, "/api/v2/ofc/wallet/x/"),
            "/api/v2/ofc/wallet/x/"
        );
        assert_eq!(
            path(Method::GET, "/api/v1/wallet/abc?limit=5"),
            "/api/v1/wallet/abc?limit=5"
        );
        // A decoded `?` must not become a query.
        assert_eq!(
            path(Method::GET, "/api/v2/user/a%3Fb"),
            "/api/v2/user/a%3Fb"
        );
        assert_eq!(
            planned(Method::GET, "/api/v2/ofc/x").unwrap().route,
            ProxyRoute::Rebuilt
        );
    }

    #[test]
    fn enterprise_and_original_routes_keep_the_url_as_received() {
        let plan = planned(Method::GET, "/api/foo/v2/enterprises/E2/x%2Fy?z=1").unwrap();
        assert_eq!(plan.route, ProxyRoute::Enterprise);
        assert_eq!(plan.upstream_path, "/api/foo/v2/enterprises/E2/x%2Fy?z=1");
        assert_eq!(plan.enterprise_id.as_deref(), Some("E2"));
        let plan = planned(Method::GET, "/api/network/v1/foo//bar?q=1//2").unwrap();
        assert_eq!(plan.route, ProxyRoute::Original);
        assert_eq!(plan.upstream_path, "/api/network/v1/foo//bar?q=1//2");
        let plan = planned(
            Method::POST,
            "/api/network/v1/enterprises/E1/partners/settlements?dryRun=true&b=2",
        )
        .unwrap();
        assert_eq!(plan.route, ProxyRoute::Enterprise);
        assert_eq!(
            plan.upstream_path,
            "/api/network/v1/enterprises/E1/partners/settlements?dryRun=true&b=2"
        );
        assert_eq!(
            planned(Method::GET, "/oauth/token?a=1").unwrap().route,
            ProxyRoute::Original
        );
    }

    #[test]
    fn connections_and_refusals() {
        let connections = planned(
            Method::POST,
            "/api/network/v1/enterprises/E9/clients/connections",
        )
        .unwrap();
        assert_eq!(connections.route, ProxyRoute::Connections);
        assert_eq!(connections.enterprise_id.as_deref(), Some("E9"));
        assert_eq!(
            planned(Method::GET, "/API/network/v1/x"),
            Err(NotProxied::NotApi)
        );
        assert_eq!(planned(Method::GET, "/foo"), Err(NotProxied::NotApi));
        // --disableproxy keeps routes 3–7 and drops 8–9.
        assert!(plan_disabled("/api/v2/user/me").is_ok());
        assert!(
            plan(
                &Method::POST,
                "/api/network/v1/enterprises/E9/clients/connections",
                true
            )
            .is_ok()
        );
        assert_eq!(
            plan_disabled("/api/network/v1/enterprises/E1/x"),
            Err(NotProxied::Disabled)
        );
        assert_eq!(plan_disabled("/api/foo"), Err(NotProxied::Disabled));
    }

    #[test]
    fn hidden_dot_segments_are_found() {
        for path in [
            "/api/../admin",
            "/api%2F..%2Fadmin",
            "/api/network/v1/x%2F..%2F..%2Fadmin?q=1",
            "/api/v2/ofc/..\\..\\admin",
            "/api/v2/ofc/%252e%252e/admin",
            "/api/v2/ofc/wallet/w%2F.",
        ] {
            assert!(hides_dot_segment(path), "{path}");
        }
        for path in [
            "/api/v2/ofc/wallet/w",
            "/api/v2/ofc/wallet/w?next=/../../admin",
            "/api/v2/ofc/wallet/a..b/...",
            "/api/v2/ofc/wallet/%2e%2ex",
        ] {
            assert!(!hides_dot_segment(path), "{path}");
        }
    }

    fn plan_disabled(url: &str) -> Result<ProxyPlan, NotProxied> {
        plan(&Method::GET, url, true)
    }
}
