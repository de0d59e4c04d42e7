//! `routes[].cors`: origins written as browsers send them, methods and header names that
//! exist, and no combination a browser would refuse or that would hand every site the user's
//! cookies.

use super::super::super::raw::RawCors;
use super::super::super::{Cors, OriginPattern};
use super::super::Validator;
use http::{HeaderName, Method};

/// Methods a preflight may ask for when the route does not say.
const DEFAULT_METHODS: [Method; 6] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

impl Validator<'_> {
    pub(super) fn cors(&mut self, base: &str, raw: RawCors) -> Option<Cors> {
        let place = format!("{base}.cors");
        let before = self.errors.len();
        let credentials = raw.allow_credentials.unwrap_or(false);
        let mut origins = Vec::new();
        if raw.allow_origins.is_empty() {
            self.error(
                format!("{place}.allow_origins"),
                "list at least one origin (\"https://app.example.com\", \"https://*.example.org\" or \"*\")",
            );
        }
        for (i, o) in raw.allow_origins.iter().enumerate() {
            match origin(o) {
                Ok(OriginPattern::Any) if credentials => self.error(
                    format!("{place}.allow_origins[{i}]"),
                    "\"*\" with allow_credentials would let every web site read answers made with its visitors' cookies; list the origins",
                ),
                Ok(p) => origins.push(p),
                Err(msg) => self.error(format!("{place}.allow_origins[{i}]"), msg),
            }
        }
        let mut methods = Vec::new();
        for (i, m) in raw.allow_methods.unwrap_or_default().iter().enumerate() {
            match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(method) if !m.is_empty() => methods.push(method),
                _ => self.error(
                    format!("{place}.allow_methods[{i}]"),
                    format!("\"{m}\" is not an HTTP method"),
                ),
            }
        }
        if methods.is_empty() {
            methods = DEFAULT_METHODS.to_vec();
        }
        let allow_headers = match raw.allow_headers {
            Some(list) if list.iter().any(|h| h == "*") => {
                if list.len() > 1 {
                    self.warn(
                        format!("{place}.allow_headers"),
                        "\"*\" already admits every header; the other names have no effect",
                    );
                }
                None
            }
            None => None,
            Some(list) => Some(self.header_names(&format!("{place}.allow_headers"), &list)),
        };
        let expose_headers = self.header_names(
            &format!("{place}.expose_headers"),
            &raw.expose_headers.unwrap_or_default(),
        );
        if self.errors.len() > before {
            return None;
        }
        Some(Cors {
            allow_origins: origins,
            allow_methods: methods,
            allow_headers,
            expose_headers,
            allow_credentials: credentials,
            max_age: raw.max_age.map(|d| d.0),
        })
    }

    /// Header names of a list at `place`, each bad one reported at its index.
    pub(super) fn header_names(&mut self, place: &str, list: &[String]) -> Vec<HeaderName> {
        let mut out = Vec::new();
        for (i, h) in list.iter().enumerate() {
            match HeaderName::from_bytes(h.as_bytes()) {
                Ok(name) => out.push(name),
                Err(_) => self.error(
                    format!("{place}[{i}]"),
                    format!("\"{h}\" is not a header name"),
                ),
            }
        }
        out
    }
}

/// An origin as browsers send it: `scheme://host[:port]`, nothing after; `*.` for subdomains.
fn origin(text: &str) -> Result<OriginPattern, String> {
    if text == "*" {
        return Ok(OriginPattern::Any);
    }
    let bad = || {
        format!("\"{text}\" is not an origin: write scheme://host[:port] with nothing after, as browsers send it (\"https://app.example.com\", \"https://*.example.org\")")
    };
    let lower = text.to_ascii_lowercase();
    let (scheme, rest) = lower.split_once("://").ok_or_else(bad)?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        || rest.is_empty()
        || rest.contains(['/', '?', '#', '@'])
    {
        return Err(bad());
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err() {
                return Err(bad());
            }
            (h, format!(":{p}"))
        }
        _ => (rest, String::new()),
    };
    let valid_name = |h: &str| {
        !h.is_empty()
            && h.split('.')
                .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    };
    if let Some(suffix) = host.strip_prefix("*.") {
        if !valid_name(suffix) || !suffix.contains('.') {
            return Err(format!(
                "\"{text}\": a wildcard origin needs a domain of at least two labels after \"*.\" (\"https://*.example.org\")"
            ));
        }
        return Ok(OriginPattern::Subdomain {
            scheme: scheme.to_string(),
            suffix: format!(".{suffix}"),
            port,
        });
    }
    let ipv6 = host.starts_with('[') && host.ends_with(']');
    if !ipv6 && !valid_name(host) {
        return Err(bad());
    }
    Ok(OriginPattern::Exact(lower))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_written_as_browsers_send_them() {
        assert_eq!(
            origin("https://App.Example.com"),
            Ok(OriginPattern::Exact("https://app.example.com".into()))
        );
        assert_eq!(
            origin("http://localhost:3000"),
            Ok(OriginPattern::Exact("http://localhost:3000".into()))
        );
        let sub = origin("https://*.example.org").unwrap();
        assert!(sub.admits("https://a.example.org"));
        assert!(sub.admits("https://a.b.example.org"));
        assert!(!sub.admits("https://example.org"));
        assert!(!sub.admits("http://a.example.org"));
        assert!(!sub.admits("https://a.example.org:8443"));
        assert!(!sub.admits("https://evil.com/.example.org"));
        assert!(!sub.admits("https://a.example.org.evil.com"));
        assert!(!sub.admits("https://x@a.example.org"));
        let port = origin("https://*.example.org:8443").unwrap();
        assert!(port.admits("https://a.example.org:8443"));
        assert!(!port.admits("https://a.example.org"));
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://",
            "https://app.example.com:x",
            "https://app.example.com:99999",
            "https://*.org",
            "https://a.*.example.org",
            "https://user@app.example.com",
        ] {
            assert!(origin(bad).is_err(), "{bad}");
        }
    }
}
