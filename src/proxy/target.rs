//! What a request is for, in canonical form: its host and path as [`crate::canonical`] reads
//! them, held for the request's life without copying in the common case (a canonical `Host`
//! header and path are only referred to).

use crate::canonical::{self, PathOptions};
use http::header::{HeaderValue, HOST};
use pingora_http::authority::{raw_target_authority, RawTargetAuthority};
use pingora_http::RequestHeader;
use std::borrow::Cow;

/// Where the canonical host is.
#[derive(Debug, Default)]
enum HostRef {
    /// No host (an HTTP/1.0 request without `Host`).
    #[default]
    None,
    /// The first `n` bytes of the `Host` header, kept (a reference to the request's buffer): it
    /// is read several times per request, each time a look-up in the header map otherwise.
    Header(HeaderValue, usize),
    /// The first `n` bytes of the target's authority.
    Authority(usize),
    /// Written anew (lower-cased, or an IPv6 address in its shortest form).
    Owned(Box<str>),
}

/// The request's canonical host and path.
#[derive(Debug, Default)]
pub struct Target {
    host: HostRef,
    /// The canonical path, when it differs from the request's.
    path: Option<String>,
    /// The `Host` sent upstream instead of the client's, when that must change: an
    /// absolute-form target's authority wins over `Host` (RFC 9112 section 3.2.2), and a host
    /// that was not canonical is sent canonical.
    pub upstream_host: Option<HeaderValue>,
    /// The HTTP/1 request target was in absolute form (`GET http://host/path`).
    pub absolute_form: bool,
}

/// Why a request has no canonical target: the detail for logs (the client gets `400`).
pub type Refused = &'static str;

impl Target {
    /// Read the canonical host and path of `req`.
    pub fn of(req: &RequestHeader, paths: &PathOptions) -> Result<Target, Refused> {
        let mut target = Target::default();
        let header = req.headers.get(HOST);
        if let Some(authority) = req.uri.authority() {
            // An HTTP/2 `:authority`: it wins over `Host`.
            let raw = authority.as_str();
            let host = canonical::host(raw).map_err(|e| e.describe())?;
            let rewrite =
                !host.as_written || header.is_some_and(|h| h.as_bytes() != raw.as_bytes());
            if rewrite {
                target.upstream_host = HeaderValue::from_str(&wire_form(&host)).ok();
            }
            target.host = match host.name {
                Cow::Borrowed(n) => HostRef::Authority(n.len()),
                Cow::Owned(n) => HostRef::Owned(n.into()),
            };
        } else if let RawTargetAuthority::Absolute { authority, .. } =
            raw_target_authority(req.raw_path())
        {
            // An HTTP/1 absolute-form target: its authority wins over `Host` (RFC 9112 section
            // 3.2.2), and the upstream gets it as `Host` with an origin-form target.
            target.absolute_form = true;
            let raw = std::str::from_utf8(authority)
                .map_err(|_| "the host is not a valid name or address")?;
            let host = canonical::host(raw).map_err(|e| e.describe())?;
            let wire = wire_form(&host);
            target.host = HostRef::Owned(host.name.into());
            if header.is_none_or(|h| h.as_bytes() != wire.as_bytes()) {
                target.upstream_host = HeaderValue::from_str(&wire).ok();
            }
        } else if let Some(value) = header {
            // `canonical::host` takes only ASCII names, digits and IPv6 addresses: text is enough.
            let raw = std::str::from_utf8(value.as_bytes())
                .map_err(|_| "the host is not a valid name or address")?;
            let host = canonical::host(raw).map_err(|e| e.describe())?;
            if !host.as_written {
                // `Admin.Example.:0080` goes upstream as `admin.example:80`.
                target.upstream_host = HeaderValue::from_str(&wire_form(&host)).ok();
            }
            target.host = match host.name {
                Cow::Borrowed(n) => HostRef::Header(value.clone(), n.len()),
                Cow::Owned(n) => HostRef::Owned(n.into()),
            };
        } else if req.version != http::Version::HTTP_10 {
            // RFC 9112 section 3.2: an HTTP/1.1 request must say which host it is for.
            return Err("the request names no host");
        }
        target.path = match canonical::path(req.uri.path(), paths) {
            Ok(Cow::Borrowed(_)) => None,
            Ok(Cow::Owned(p)) => Some(p),
            Err(e) => return Err(e.describe()),
        };
        Ok(target)
    }

    /// The canonical host, if the request has one.
    pub fn host<'a>(&'a self, req: &'a RequestHeader) -> Option<&'a str> {
        match &self.host {
            HostRef::None => None,
            // Checked by `canonical::host` (ASCII), so this only re-reads it as text.
            HostRef::Header(h, n) => std::str::from_utf8(h.as_bytes().get(..*n)?).ok(),
            HostRef::Authority(n) => req.uri.authority().map(|a| &a.as_str()[..*n]),
            HostRef::Owned(h) => Some(h),
        }
    }

    /// The host the request goes upstream with, as `X-Forwarded-Host` names it: the canonical
    /// `name[:port]`; `None` for a request without a host.
    pub fn forwarded_host(&self, req: &RequestHeader) -> Option<HeaderValue> {
        if let Some(h) = &self.upstream_host {
            return Some(h.clone());
        }
        // Otherwise the client's own spelling is the canonical one.
        match &self.host {
            HostRef::None | HostRef::Owned(_) => None,
            HostRef::Header(h, _) => Some(h.clone()),
            HostRef::Authority(_) => req
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
        }
    }

    /// Whether the request names a host at all (HTTP/1.0 may not).
    pub fn has_host(&self) -> bool {
        !matches!(self.host, HostRef::None)
    }

    /// The canonical path.
    pub fn path<'a>(&'a self, req: &'a RequestHeader) -> &'a str {
        self.path.as_deref().unwrap_or_else(|| req.uri.path())
    }

    /// Whether the canonical path differs from the one the client sent.
    pub fn path_changed(&self) -> bool {
        self.path.is_some()
    }

    /// The canonical host, and the host as the client sent it when that differs
    /// ([`Target::raw_host`]): both for the access log.
    pub fn hosts<'a>(&'a self, req: &'a RequestHeader) -> (Option<&'a str>, Option<&'a str>) {
        (self.host(req), self.raw_host(req))
    }

    /// The host as the client sent it (`Host`, or the target's authority), when it differs from
    /// the canonical one: for the access log.
    pub fn raw_host<'a>(&'a self, req: &'a RequestHeader) -> Option<&'a str> {
        let raw = match (&self.host, req.uri.authority()) {
            // Neither an authority nor an absolute-form target: the `Host` header kept.
            (HostRef::Header(h, _), _) => std::str::from_utf8(h.as_bytes()).ok()?,
            (_, Some(a)) => a.as_str(),
            (_, None) => match raw_target_authority(req.raw_path()) {
                RawTargetAuthority::Absolute { authority, .. } => {
                    std::str::from_utf8(authority).ok()?
                }
                _ => req.headers.get(HOST)?.to_str().ok()?,
            },
        };
        let canonical = match &self.host {
            HostRef::Header(_, n) | HostRef::Authority(n) => &raw[..(*n).min(raw.len())],
            _ => "",
        };
        (raw != canonical).then_some(raw)
    }
}

/// `name` or `name:port`, as sent in `Host`.
fn wire_form(host: &canonical::Host) -> String {
    match host.port {
        Some(p) => format!("{}:{p}", host.name),
        None => host.name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str, host: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        if let Some(h) = host {
            r.insert_header("host", h).unwrap();
        }
        r
    }

    fn of(r: &RequestHeader) -> Result<Target, Refused> {
        Target::of(r, &PathOptions::default())
    }

    #[test]
    fn canonical_requests_borrow() {
        let r = req("/api/x", Some("api.example.com"));
        let t = of(&r).unwrap();
        assert_eq!(t.host(&r), Some("api.example.com"));
        assert_eq!(t.path(&r), "/api/x");
        assert!(t.upstream_host.is_none() && !t.path_changed());
        assert_eq!(t.raw_host(&r), None);
        let r = req("/", Some("api.example.com:8080"));
        let t = of(&r).unwrap();
        assert_eq!(t.host(&r), Some("api.example.com"));
        assert!(t.upstream_host.is_none());
        assert_eq!(t.raw_host(&r), Some("api.example.com:8080"));
    }

    /// `hosts` answers what `host` and `raw_host` answer, for every way a request names its host.
    #[test]
    fn hosts_reads_both_at_once() {
        let mut cases = Vec::new();
        for host in [
            Some("api.example.com"),
            Some("api.example.com:8080"),
            Some("API.Example.com."),
            Some("[::0001]:80"),
            None,
        ] {
            cases.push(req("/x", host));
            cases.push(req("http://other.example:81/x", host));
        }
        let mut old = req("/x", None);
        old.set_version(http::Version::HTTP_10);
        cases.push(old);
        for r in &cases {
            let Ok(t) = of(r) else { continue };
            assert_eq!(t.hosts(r), (t.host(r), t.raw_host(r)), "{:?}", r.uri);
        }
    }

    #[test]
    fn non_canonical_spellings_go_upstream_canonical() {
        for (raw, wire) in [
            ("admin.example.:8080", "admin.example:8080"),
            ("admin.example:0080", "admin.example:80"),
            ("admin.example:", "admin.example"),
            ("admin.example.", "admin.example"),
            ("[::0001]:80", "[::1]:80"),
        ] {
            let r = req("/", Some(raw));
            let t = of(&r).unwrap();
            assert_eq!(t.upstream_host.as_ref().unwrap(), wire, "{raw}");
            assert_eq!(t.forwarded_host(&r).unwrap(), wire, "{raw}");
        }
        for raw in ["admin.example", "admin.example:8080", "127.0.0.1:0"] {
            let r = req("/", Some(raw));
            let t = of(&r).unwrap();
            assert!(t.upstream_host.is_none(), "{raw}");
            assert_eq!(t.forwarded_host(&r).unwrap(), raw);
        }
        let mut r = req("/", None);
        r.set_version(http::Version::HTTP_10);
        assert!(of(&r).unwrap().forwarded_host(&r).is_none());
    }

    #[test]
    fn hosts_are_canonical_upstream_too() {
        let r = req("//api//x", Some("API.Example.com.:8080"));
        let t = of(&r).unwrap();
        assert_eq!(t.host(&r), Some("api.example.com"));
        assert_eq!(t.upstream_host.as_ref().unwrap(), "api.example.com:8080");
        assert_eq!(t.path(&r), "/api/x");
        assert!(t.path_changed());
    }

    #[test]
    fn absolute_form_authority_wins() {
        let r = req("http://Admin.example//api/admin/x", None);
        let t = of(&r).unwrap();
        assert!(t.absolute_form);
        assert_eq!(t.host(&r), Some("admin.example"));
        assert_eq!(t.upstream_host.as_ref().unwrap(), "admin.example");
        assert_eq!(t.path(&r), "/api/admin/x");
        let r = req("http://admin.example/x", None);
        let t = of(&r).unwrap();
        assert_eq!(t.host(&r), Some("admin.example"));
        assert_eq!(t.upstream_host.as_ref().unwrap(), "admin.example");
        let r = req("http://admin.example:8080/x", Some("admin.example:8080"));
        assert!(of(&r).unwrap().upstream_host.is_none());
    }

    #[test]
    fn refusals() {
        assert!(of(&req("/", None)).is_err());
        assert!(of(&req("/", Some("admin.example:80:80"))).is_err());
        assert!(of(&req("/", Some(""))).is_err());
        assert!(of(&req("/a%2fb", Some("x"))).is_err());
        let mut r = req("/", None);
        r.set_version(http::Version::HTTP_10);
        let t = of(&r).unwrap();
        assert_eq!(t.host(&r), None);
    }
}
