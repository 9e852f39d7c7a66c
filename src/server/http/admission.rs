//! Refusals before anything of the request is read: a `Host` this listener does not serve
//! (403, DNS rebinding), a foreign `Origin` (403), a token in the query string (401). They
//! apply to every route that acts; rmcp's own Host check stays behind this one.

use super::{Exchange, HttpState, Step};
use crate::denial::Denial;
use crate::request::clean;

/// What this listener admits: names it answers to, and origins allowed to send requests.
pub(super) struct Admission {
    /// `host[:port]` authorities, parsed once: see [`Admission::host_allowed`].
    hosts: Vec<(String, Option<u16>)>,
    /// The configured origins and this listener's own (the console calls the API from its
    /// own origin), each as scheme, host and port: all three must match.
    origins: Vec<Origin>,
}

/// An origin as compared: scheme and host lowercased, the port always given.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// `scheme://host[:port]` (a browser's `Origin`, or a configured one), nothing more.
    fn parse(text: &str) -> Option<Self> {
        let (scheme, rest) = text.trim().split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let (host, port) = authority(rest.trim_end_matches('/'))?;
        Some(Self {
            scheme,
            host,
            port: port.unwrap_or(default),
        })
    }
}

impl Admission {
    /// `hosts`: the names this listener answers to (`host[:port]`); `own` the listener's own
    /// origins (its scheme, its names, its port, and the public URL's).
    pub(super) fn new(allowed_origins: &[String], hosts: &[String], own: &[String]) -> Self {
        Self {
            hosts: hosts.iter().filter_map(|h| authority(h)).collect(),
            origins: allowed_origins.iter().chain(own).filter_map(|o| Origin::parse(o)).collect(),
        }
    }

    /// Whether this listener answers to `host` (a `Host` header): DNS-rebinding defence.
    /// Compared as rmcp compares it (case-insensitive name, IPv6 brackets ignored, and the
    /// port only where the allowed entry names one), so both routes agree.
    fn host_allowed(&self, host: Option<&str>) -> bool {
        let Some((name, port)) = host.and_then(authority) else {
            return false;
        };
        self.hosts
            .iter()
            .any(|(a_name, a_port)| *a_name == name && a_port.is_none_or(|p| port == Some(p)))
    }

    fn check(&self, headers: &http::HeaderMap, query: Option<&str>) -> Option<Denial> {
        let host = headers.get(http::header::HOST).and_then(|v| v.to_str().ok());
        if !self.host_allowed(host) {
            return Some(Denial::HostNotServed {
                host: clean(host.unwrap_or(""), 128),
            });
        }
        if let Some(origin) = headers.get("origin").and_then(|v| v.to_str().ok())
            && !Origin::parse(origin).is_some_and(|o| self.origins.contains(&o))
        {
            return Some(Denial::OriginNotAllowed {
                origin: clean(origin, 128),
            });
        }
        token_in_query(query).then_some(Denial::TokenInQuery)
    }
}

pub(super) async fn admit(st: &HttpState, ex: &Exchange) -> Step {
    match st.admission.check(&ex.parts.headers, ex.parts.uri.query()) {
        None => Ok(()),
        // Nobody is authenticated yet: the record names no principal and no tool.
        Some(denial) => {
            let rec = denial.record(&ex.rt.env().name, &ex.ctx);
            Err(st.refuse_unauthenticated(&ex.peer, &denial, rec).await)
        }
    }
}

/// A `host[:port]` authority, its name lowercased and without IPv6 brackets.
fn authority(s: &str) -> Option<(String, Option<u16>)> {
    let a = http::uri::Authority::try_from(s.trim()).ok()?;
    let name = a.host().trim_matches(['[', ']']).to_ascii_lowercase();
    (!name.is_empty()).then_some((name, a.port_u16()))
}

/// Query parameters that carry a token: refused wherever they appear (RFC 6750 §2.3 is a
/// leak into logs and history).
fn token_in_query(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|kv| {
            let k = kv.split('=').next().unwrap_or("").to_ascii_lowercase();
            matches!(
                k.as_str(),
                "access_token" | "token" | "id_token" | "bearer" | "authorization" | "jwt"
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_tokens_are_spotted() {
        assert!(token_in_query(Some("access_token=abc")));
        assert!(token_in_query(Some("a=1&Token=x")));
        assert!(!token_in_query(Some("tokens_used=1")));
        assert!(!token_in_query(None));
    }

    #[test]
    fn origins_match_in_scheme_host_and_port() {
        let a = Admission::new(
            &["https://console.example".into()],
            &["127.0.0.1:8477".into()],
            &["http://127.0.0.1:8477".into(), "http://localhost:8477".into()],
        );
        let mut h = http::HeaderMap::new();
        h.insert(http::header::HOST, "127.0.0.1:8477".parse().unwrap());
        for (origin, ok) in [
            ("http://127.0.0.1:8477", true),
            ("HTTP://LOCALHOST:8477", true),
            ("https://console.example:443", true),
            ("https://console.example", true),
            ("http://localhost", false),
            ("http://127.0.0.1", false),
            ("https://127.0.0.1:8477", false),
            ("http://127.0.0.1:8478", false),
            ("http://console.example", false),
            ("null", false),
            ("http://127.0.0.1:8477/path", false),
        ] {
            h.insert("origin", origin.parse().unwrap());
            assert_eq!(a.check(&h, None).is_none(), ok, "{origin}");
        }
    }

    #[test]
    fn hosts_and_origins_are_compared_as_authorities() {
        let a = Admission::new(
            &["https://console.example".into()],
            &["127.0.0.1:8477".into(), "localhost".into()],
            &["http://127.0.0.1:8477".into()],
        );
        let mut h = http::HeaderMap::new();
        h.insert(http::header::HOST, "127.0.0.1:8477".parse().unwrap());
        assert!(a.check(&h, None).is_none());
        h.insert("origin", "https://console.example".parse().unwrap());
        assert!(a.check(&h, None).is_none());
        h.insert("origin", "https://evil.example".parse().unwrap());
        assert!(matches!(a.check(&h, None), Some(Denial::OriginNotAllowed { .. })));
        h.remove("origin");
        h.insert(http::header::HOST, "LOCALHOST:9999".parse().unwrap());
        assert!(a.check(&h, None).is_none(), "an entry without a port allows any port");
        h.insert(http::header::HOST, "127.0.0.1:9999".parse().unwrap());
        assert!(matches!(a.check(&h, None), Some(Denial::HostNotServed { .. })));
        h.insert(http::header::HOST, "127.0.0.1:8477".parse().unwrap());
        assert!(matches!(a.check(&h, Some("jwt=x")), Some(Denial::TokenInQuery)));
    }
}
