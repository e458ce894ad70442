//! What keeps web pages from driving a server on the user's own machine: the `Host` check
//! against DNS rebinding, the `Origin` check on state-changing requests, and the CORS headers
//! for the origins that are allowed. The body's content type is checked where it is read
//! ([`body`](super::body)).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};

use super::error::ApiError;
use super::ServerError;

/// Which hosts and origins a request may name.
#[derive(Debug)]
pub(crate) struct Guard {
    /// `None`: any host.
    hosts: Option<Vec<String>>,
    /// `None`: any origin.
    origins: Option<Vec<String>>,
}

impl Guard {
    pub fn new(hosts: &[String], origins: &[String]) -> Guard {
        let list = |v: &[String], trim: fn(&str) -> String| {
            (!v.iter().any(|h| h == "*")).then(|| v.iter().map(|h| trim(h)).collect())
        };
        Guard {
            hosts: list(hosts, |h| h.trim().trim_end_matches('.').to_ascii_lowercase()),
            origins: list(origins, |o| o.trim().trim_end_matches('/').to_ascii_lowercase()),
        }
    }

    /// A loopback name, or one allowed. `host` is the `Host` header: name or address, and port.
    fn host_allowed(&self, host: &str) -> bool {
        let Some(allowed) = &self.hosts else { return true };
        let name = host_name(host).to_ascii_lowercase();
        let name = name.trim_end_matches('.');
        is_loopback(name) || allowed.iter().any(|a| a == name)
    }

    /// Allowed, or the server's own origin (same host and port as `Host`).
    fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        let Some(allowed) = &self.origins else { return true };
        if allowed.contains(&origin) {
            return true;
        }
        let authority = origin.split_once("://").map(|(_, a)| a);
        matches!((authority, host), (Some(a), Some(h)) if a == h.to_ascii_lowercase())
    }
}

/// The name part of a `Host` header: `name:port`, `[v6]:port` or either without port.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(n, _)| n)
}

fn is_loopback(name: &str) -> bool {
    name == "localhost"
        || name.ends_with(".localhost")
        || name == "::1"
        || name.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// Refuses, before anything else runs, a request for a host this server does not answer for
/// and a state-changing request from a web page of another origin.
pub(crate) async fn middleware(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers.get(header::HOST).map(|h| h.to_str().unwrap_or("\u{fffd}"));
    if let Some(host) = host {
        if !guard.host_allowed(host) {
            return ApiError::wrong_host(host).into_response();
        }
    }
    let reads_only = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if let (false, Some(origin)) = (reads_only, headers.get(header::ORIGIN)) {
        let origin = origin.to_str().unwrap_or("\u{fffd}");
        if !guard.origin_allowed(origin, host) {
            return ApiError::wrong_origin(origin).into_response();
        }
    }
    next.run(req).await
}

/// CORS for the allowed origins: any request header (the official SDKs send their own
/// `x-stainless-*` ones), and `Retry-After` readable by the page.
pub(crate) fn cors(origins: &[String]) -> Result<Option<CorsLayer>, ServerError> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|o| HeaderValue::from_str(o.trim_end_matches('/')).map_err(|_| ServerError::Origin(o.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(values)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers(ExposeHeaders::list([header::RETRY_AFTER])),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_pass_and_others_need_allowing() {
        let g = Guard::new(&[], &[]);
        for ok in ["localhost:8080", "127.0.0.1:8080", "[::1]:8080", "127.1.2.3", "app.localhost:3000", "LOCALHOST"] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        for bad in ["attacker.example", "attacker.example:8080", "127.0.0.1.evil.example", "[::2]:80", "0.0.0.0:8080"] {
            assert!(!g.host_allowed(bad), "{bad}");
        }
        let g = Guard::new(&["myhost.lan".into()], &[]);
        assert!(g.host_allowed("MyHost.lan:8080"));
        assert!(!Guard::new(&[], &[]).host_allowed("myhost.lan"));
        assert!(Guard::new(&["*".into()], &[]).host_allowed("anything"));
    }

    #[test]
    fn origins_pass_when_listed_or_same_as_the_host() {
        let g = Guard::new(&[], &["http://localhost:3000".into()]);
        assert!(g.origin_allowed("http://localhost:3000", Some("localhost:8080")));
        assert!(g.origin_allowed("http://localhost:8080", Some("localhost:8080")));
        assert!(!g.origin_allowed("http://evil.example", Some("localhost:8080")));
        assert!(!g.origin_allowed("null", Some("localhost:8080")));
        assert!(Guard::new(&[], &["*".into()]).origin_allowed("http://evil.example", None));
    }
}
