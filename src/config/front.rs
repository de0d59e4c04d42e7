//! Validation of the front-door settings: how slowly a client may send a request, how request
//! paths are normalised, and, per listener, which proxies are believed, whether connections
//! start with a PROXY protocol header and how many connections one address may hold.

use super::raw::{
    RawEscapedSlashes, RawForwardedHeader, RawListener, RawPathNormalization, RawSemicolons,
};
use super::{units, ForwardedHeader, Validator};
use crate::canonical::{EscapedSlashes, PathOptions};
use serde_yaml::Value;
use std::time::Duration;

/// How slowly a client may send a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// A request head must arrive within this, from its first byte (from the connect, for a
    /// connection's first request).
    pub header: Duration,
    /// The longest wait for more request body bytes.
    pub body: Duration,
    /// After `body`'s allowance, a body must arrive at least this fast on average (bytes per
    /// second); 0 turns the check off.
    pub body_min_rate: u64,
    /// The longest a write of the response to the client may wait (a client that stops
    /// reading).
    pub send: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            header: Duration::from_secs(10),
            body: Duration::from_secs(30),
            body_min_rate: 500,
            send: Duration::from_secs(60),
        }
    }
}

/// A listener's front-door settings, validated.
pub(super) struct ListenerFront {
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub forwarded_header: ForwardedHeader,
    pub proxy_protocol: bool,
    pub max_connections_per_ip: Option<u32>,
}

impl Validator {
    fn timeout(&mut self, key: &str, value: Option<Value>, default: Duration) -> Duration {
        let Some(v) = value else { return default };
        let Some(units::ConfDuration(d)) = self.item::<units::ConfDuration>(key, v) else {
            return default;
        };
        if d < Duration::from_millis(100) {
            self.error(key, "must be at least 100ms");
        } else if d > Duration::from_secs(3600) {
            self.error(key, "must be at most 1h");
        }
        d
    }

    pub(super) fn client_timeouts(
        &mut self,
        header: Option<Value>,
        body: Option<Value>,
        min_rate: Option<Value>,
        send: Option<Value>,
    ) -> ClientTimeouts {
        let d = ClientTimeouts::default();
        let header = self.timeout("client_header_timeout", header, d.header);
        let body = self.timeout("client_body_timeout", body, d.body);
        let send = self.timeout("client_send_timeout", send, d.send);
        let body_min_rate = match min_rate {
            None => d.body_min_rate,
            Some(v) => match self.item::<units::ConfSize>("client_body_min_rate", v) {
                Some(units::ConfSize(n)) => n,
                None => d.body_min_rate,
            },
        };
        ClientTimeouts {
            header,
            body,
            body_min_rate,
            send,
        }
    }

    pub(super) fn path_normalization(&mut self, value: Option<Value>) -> PathOptions {
        let raw = match value {
            None | Some(Value::Null) => RawPathNormalization::default(),
            Some(v) => self
                .item::<RawPathNormalization>("path_normalization", v)
                .unwrap_or_default(),
        };
        let defaults = PathOptions::default();
        PathOptions {
            merge_slashes: raw.merge_slashes.unwrap_or(defaults.merge_slashes),
            escaped_slashes: match raw.escaped_slashes {
                None => defaults.escaped_slashes,
                Some(RawEscapedSlashes::Reject) => EscapedSlashes::Reject,
                Some(RawEscapedSlashes::Keep) => EscapedSlashes::Keep,
                Some(RawEscapedSlashes::Decode) => EscapedSlashes::Decode,
            },
            semicolons: match raw.semicolons {
                None => defaults.semicolons,
                Some(RawSemicolons::Reject) => false,
                Some(RawSemicolons::Keep) => true,
            },
        }
    }

    pub(super) fn listener_front(&mut self, base: &str, raw: &RawListener) -> ListenerFront {
        let trusted_proxies = self.cidrs(
            &format!("{base}.trusted_proxies"),
            raw.trusted_proxies.clone().unwrap_or_default(),
        );
        if raw.forwarded_header.is_some() && trusted_proxies.is_empty() {
            self.warn(
                format!("{base}.forwarded_header"),
                "has no effect without trusted_proxies: no forwarding header is believed",
            );
        }
        let max_connections_per_ip = raw.max_connections_per_ip;
        if max_connections_per_ip == Some(0) {
            self.error(
                format!("{base}.max_connections_per_ip"),
                "must be at least 1 (leave it out for no limit)",
            );
        }
        ListenerFront {
            trusted_proxies,
            forwarded_header: match raw.forwarded_header {
                None | Some(RawForwardedHeader::XForwardedFor) => ForwardedHeader::XForwardedFor,
                Some(RawForwardedHeader::Forwarded) => ForwardedHeader::Forwarded,
            },
            proxy_protocol: raw.proxy_protocol.unwrap_or(false),
            max_connections_per_ip,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, ForwardedHeader};
    use crate::canonical::EscapedSlashes;
    use std::time::Duration;

    const BASE: &str =
        "upstreams: {a: {peers: [127.0.0.1:2]}}\nroutes: [{name: r, match: {}, upstream: a}]\n";

    fn errors(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn defaults() {
        let c = parse(&format!("listeners: [{{address: 127.0.0.1:1}}]\n{BASE}")).unwrap();
        assert_eq!(c.client_timeouts.header, Duration::from_secs(10));
        assert_eq!(c.client_timeouts.body, Duration::from_secs(30));
        assert_eq!(c.client_timeouts.body_min_rate, 500);
        assert_eq!(c.client_timeouts.send, Duration::from_secs(60));
        assert!(!c.path_normalization.semicolons);
        assert!(c.path_normalization.merge_slashes);
        assert_eq!(c.path_normalization.escaped_slashes, EscapedSlashes::Reject);
        let l = &c.listeners[0];
        assert!(l.trusted_proxies.is_empty() && !l.proxy_protocol);
        assert_eq!(l.max_connections_per_ip, None);
    }

    #[test]
    fn listener_settings() {
        let c = parse(&format!(
            "listeners:\n  - {{address: 127.0.0.1:1, trusted_proxies: [10.0.0.0/8, 192.0.2.7], forwarded_header: forwarded, proxy_protocol: true, max_connections_per_ip: 50}}\n{BASE}"
        ))
        .unwrap();
        let l = &c.listeners[0];
        assert_eq!(l.trusted_proxies.len(), 2);
        assert_eq!(l.forwarded_header, ForwardedHeader::Forwarded);
        assert!(l.proxy_protocol);
        assert_eq!(l.max_connections_per_ip, Some(50));
        let e = errors(&format!(
            "listeners:\n  - {{address: 127.0.0.1:1, trusted_proxies: [10.0.0.0/33, nope], max_connections_per_ip: 0}}\n  - {{address: 127.0.0.1:2, forwarded_header: x-real-ip, proxy_protocol: maybe}}\n{BASE}"
        ));
        for place in [
            "listeners[0].trusted_proxies[0]:",
            "listeners[0].trusted_proxies[1]:",
            "listeners[0].max_connections_per_ip:",
            "listeners[1].forwarded_header:",
            "listeners[1].proxy_protocol:",
        ] {
            assert!(e.iter().any(|m| m.starts_with(place)), "{place} in {e:?}");
        }
        let c = parse(&format!(
            "listeners: [{{address: 127.0.0.1:1, forwarded_header: forwarded}}]\n{BASE}"
        ))
        .unwrap();
        assert!(c.warnings[0]
            .to_string()
            .starts_with("listeners[0].forwarded_header:"));
    }

    #[test]
    fn timeouts_and_paths() {
        let c = parse(&format!(
            "listeners: [{{address: 127.0.0.1:1}}]\nclient_header_timeout: 2s\nclient_body_timeout: 500ms\nclient_body_min_rate: 1KiB\nclient_send_timeout: 5s\npath_normalization: {{merge_slashes: false, escaped_slashes: decode, semicolons: keep}}\n{BASE}"
        ))
        .unwrap();
        assert_eq!(c.client_timeouts.header, Duration::from_secs(2));
        assert_eq!(c.client_timeouts.body, Duration::from_millis(500));
        assert_eq!(c.client_timeouts.body_min_rate, 1024);
        assert_eq!(c.client_timeouts.send, Duration::from_secs(5));
        assert!(c.path_normalization.semicolons);
        assert!(!c.path_normalization.merge_slashes);
        assert_eq!(c.path_normalization.escaped_slashes, EscapedSlashes::Decode);
        let e = errors(&format!(
            "listeners: [{{address: 127.0.0.1:1}}]\nclient_header_timeout: 10ms\nclient_body_timeout: 2h\npath_normalization: {{escaped_slashes: forward, merge: true}}\n{BASE}"
        ));
        for place in [
            "client_header_timeout: must be at least 100ms",
            "client_body_timeout: must be at most 1h",
            "path_normalization.escaped_slashes:",
            "path_normalization.merge:",
        ] {
            assert!(e.iter().any(|m| m.starts_with(place)), "{place} in {e:?}");
        }
    }

    #[test]
    fn route_paths_must_be_canonical() {
        let e = errors(
            "listeners: [{address: 127.0.0.1:1}]\nupstreams: {a: {peers: [127.0.0.1:2]}}\nroutes:\n  - {name: a, match: {path_prefix: /api//admin}, upstream: a}\n  - {name: b, match: {path_exact: /%61pi}, upstream: a}\n  - {name: c, match: {path_prefix: /x/../y}, upstream: a}\n  - {name: d, match: {path_prefix: /a%2fb}, upstream: a}\n",
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("routes[0].match.path_prefix:")
                    && m.contains("write \"/api/admin\"")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("routes[1].match.path_exact:")
                    && m.contains("write \"/api\"")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("routes[2].match.path_prefix:")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("routes[3].match.path_prefix:")
                    && m.contains("encoded slash")),
            "{e:?}"
        );
        // With merging off, a double slash is a path of its own; with `keep`, %2F is too.
        parse("listeners: [{address: 127.0.0.1:1}]\npath_normalization: {merge_slashes: false, escaped_slashes: keep}\nupstreams: {a: {peers: [127.0.0.1:2]}}\nroutes:\n  - {name: a, match: {path_prefix: /api//admin}, upstream: a}\n  - {name: d, match: {path_prefix: /a%2Fb}, upstream: a}\n").unwrap();
    }
}
