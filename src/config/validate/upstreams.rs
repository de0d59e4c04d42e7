//! Upstream pools: peers (names resolved through the loader), weights, the balancing policy
//! and its hash key, active health checks, timeouts, retries, TLS and the HTTP version.

use super::super::raw::{
    Parsed, RawBalance, RawHashKey, RawHealthCheck, RawHealthKind, RawPeer, RawProtocol,
    RawUpstream,
};
use super::super::units;
use super::super::{
    Balance, HashKey, HealthCheck, HealthCheckKind, Peer, Protocol, Upstream, UpstreamTls,
};
use super::routes::parse_host;
use super::{valid_name, Validator};
use http::HeaderValue;
use serde_yaml::Value;
use std::net::SocketAddr;
use std::time::Duration;

impl Validator<'_> {
    /// The pools, and the names of those that have problems (routes that use them are not
    /// also reported as pointing to an unknown pool).
    pub(super) fn upstreams(&mut self, value: Option<Value>) -> (Vec<Upstream>, Vec<String>) {
        let map = match value {
            Some(Value::Mapping(m)) => m,
            None | Some(Value::Null) => {
                self.error(
                    "upstreams",
                    "is required: define at least one upstream pool",
                );
                return (Vec::new(), Vec::new());
            }
            Some(_) => {
                self.error("upstreams", "must be a mapping of pool names to pools");
                return (Vec::new(), Vec::new());
            }
        };
        let mut out = Vec::new();
        let mut broken = Vec::new();
        for (k, v) in map {
            let Some(name) = k.as_str().map(str::to_string) else {
                self.error("upstreams", format!("pool name {k:?} is not a string"));
                continue;
            };
            let base = format!("upstreams.{name}");
            if !valid_name(&name) {
                self.error(
                    &base,
                    "pool names use letters, digits, '_', '-' and '.' only",
                );
            }
            match self
                .item::<RawUpstream>(&base, v)
                .and_then(|raw| self.upstream(&base, name.clone(), raw))
            {
                Some(up) => out.push(up),
                None => broken.push(name),
            }
        }
        (out, broken)
    }

    fn upstream(&mut self, base: &str, name: String, raw: RawUpstream) -> Option<Upstream> {
        let before = self.errors.len();
        let mut peers: Vec<Peer> = Vec::new();
        if raw.peers.is_empty() {
            self.error(format!("{base}.peers"), "must list at least one peer");
        }
        for (i, p) in raw.peers.into_iter().enumerate() {
            let (addr_text, weight, path) = match p {
                RawPeer::Address(a) => (a, None, format!("{base}.peers[{i}]")),
                RawPeer::Detailed(d) => (d.address, d.weight, format!("{base}.peers[{i}].address")),
            };
            let weight = match weight {
                None => 1,
                Some(0) => {
                    self.error(format!("{base}.peers[{i}].weight"), "must be at least 1");
                    1
                }
                Some(w) if w > 1000 => {
                    self.error(format!("{base}.peers[{i}].weight"), "must be at most 1000");
                    1
                }
                Some(w) => w as usize,
            };
            match self.resolve(&addr_text) {
                Ok(address) => {
                    if peers.iter().any(|p| p.address == address) {
                        self.error(path, format!("peer {address} is listed twice"));
                    } else {
                        peers.push(Peer { address, weight });
                    }
                }
                Err(msg) => self.error(path, msg),
            }
        }

        let balance_kind = raw.balance.unwrap_or(RawBalance::RoundRobin);
        let hash_key = match raw.hash_key {
            None => None,
            Some(Parsed(Ok(k))) => Some(k),
            Some(Parsed(Err(msg))) => {
                self.error(format!("{base}.hash_key"), msg);
                None
            }
        };
        if hash_key.is_some() && balance_kind != RawBalance::ConsistentHash {
            self.warn(
                format!("{base}.hash_key"),
                "has no effect unless `balance: consistent_hash`",
            );
        }
        let balance = match balance_kind {
            RawBalance::RoundRobin => Balance::RoundRobin,
            RawBalance::Random => Balance::Random,
            RawBalance::LeastConn => Balance::LeastConn,
            RawBalance::ConsistentHash => Balance::ConsistentHash(match hash_key {
                None | Some(RawHashKey::ClientIp) => HashKey::ClientIp,
                Some(RawHashKey::Path) => HashKey::Path,
                Some(RawHashKey::Header(h)) => HashKey::Header(h),
                Some(RawHashKey::Cookie(c)) => HashKey::Cookie(c),
                Some(RawHashKey::Query(q)) => HashKey::Query(q),
            }),
        };

        let health_check = raw
            .health_check
            .and_then(|hc| self.health_check(&format!("{base}.health_check"), hc));

        let positive =
            |v: &mut Self, key: &str, d: Option<units::ConfDuration>, default: u64| match d {
                None => Duration::from_secs(default),
                Some(units::ConfDuration(d)) if d.is_zero() => {
                    v.error(format!("{base}.{key}"), "must be greater than zero");
                    Duration::from_secs(default)
                }
                Some(units::ConfDuration(d)) => d,
            };
        let connect_timeout = positive(self, "connect_timeout", raw.connect_timeout, 5);
        let read_timeout = positive(self, "read_timeout", raw.read_timeout, 60);
        let write_timeout = positive(self, "write_timeout", raw.write_timeout, 60);
        let idle_timeout = positive(self, "idle_timeout", raw.idle_timeout, 60);
        let retries = match raw.retries {
            None => 1,
            Some(r) if r > 10 => {
                self.error(format!("{base}.retries"), "must be at most 10");
                10
            }
            Some(r) => r as usize,
        };
        let passive_cooldown = raw
            .passive_cooldown
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(10));
        let tls = raw.tls.map(|t| {
            let place = format!("{base}.tls");
            if t.sni.is_empty() || parse_host(&t.sni).is_err() {
                self.error(
                    format!("{place}.sni"),
                    format!("\"{}\" is not a host name", t.sni),
                );
            }
            let ca = match t.ca_file {
                None => None,
                Some(path) => {
                    let path = self.loader.path(&path);
                    match self.loader.read(&path) {
                        Ok(bytes) => {
                            use rustls_pki_types::pem::PemObject;
                            let certs: Vec<Vec<u8>> =
                                rustls_pki_types::CertificateDer::pem_slice_iter(&bytes)
                                    .filter_map(|c| c.ok())
                                    .map(|c| c.as_ref().to_vec())
                                    .collect();
                            if certs.is_empty() {
                                self.error(
                                    format!("{place}.ca_file"),
                                    format!("{} holds no PEM certificate", path.display()),
                                );
                            }
                            Some(certs)
                        }
                        Err(e) => {
                            self.error(
                                format!("{place}.ca_file"),
                                format!("cannot read {}: {e}", path.display()),
                            );
                            None
                        }
                    }
                }
            };
            let verify = t.verify.unwrap_or(true);
            if !verify {
                self.warn(
                    format!("{place}.verify"),
                    "peer certificates are not verified: anyone on the path can impersonate them",
                );
            }
            UpstreamTls {
                sni: t.sni.to_ascii_lowercase(),
                verify,
                ca,
            }
        });

        let protocol = match (raw.protocol, &tls) {
            (None | Some(RawProtocol::Http1), _) => Protocol::Http1,
            (Some(RawProtocol::H2), Some(_)) | (Some(RawProtocol::H2c), None) => Protocol::H2,
            (Some(RawProtocol::H2), None) => {
                self.error(
                    format!("{base}.protocol"),
                    "h2 is HTTP/2 over TLS and this upstream has no tls: \
                     use h2c for cleartext HTTP/2, or add tls",
                );
                Protocol::H2
            }
            (Some(RawProtocol::H2c), Some(_)) => {
                self.error(
                    format!("{base}.protocol"),
                    "h2c is cleartext HTTP/2 and this upstream has tls: use h2",
                );
                Protocol::H2
            }
            (Some(RawProtocol::Auto), Some(_)) => Protocol::Auto,
            (Some(RawProtocol::Auto), None) => {
                self.error(
                    format!("{base}.protocol"),
                    "auto lets TLS (ALPN) pick the HTTP version and this upstream has no tls: \
                     use http1 or h2c",
                );
                Protocol::Http1
            }
        };

        if self.errors.len() > before {
            return None;
        }
        Some(Upstream {
            name,
            peers,
            balance,
            health_check,
            connect_timeout,
            read_timeout,
            write_timeout,
            idle_timeout,
            retries,
            passive_cooldown,
            tls,
            protocol,
        })
    }

    fn health_check(&mut self, base: &str, raw: RawHealthCheck) -> Option<HealthCheck> {
        let kind = match raw.kind {
            RawHealthKind::Tcp => {
                if raw.path.is_some() {
                    self.error(format!("{base}.path"), "applies only to `kind: http`");
                }
                if raw.host.is_some() {
                    self.error(format!("{base}.host"), "applies only to `kind: http`");
                }
                HealthCheckKind::Tcp
            }
            RawHealthKind::Http => {
                let path = raw.path.unwrap_or_else(|| "/".to_string());
                if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                    self.error(
                        format!("{base}.path"),
                        format!("\"{path}\" must start with '/' and contain no spaces"),
                    );
                }
                let host = raw.host.unwrap_or_else(|| "localhost".to_string());
                if HeaderValue::from_str(&host).is_err() || host.is_empty() {
                    self.error(format!("{base}.host"), "is not a valid Host header value");
                }
                HealthCheckKind::Http { path, host }
            }
        };
        let interval = raw.interval.map(|d| d.0).unwrap_or(Duration::from_secs(5));
        let timeout = raw.timeout.map(|d| d.0).unwrap_or(Duration::from_secs(1));
        if interval < Duration::from_millis(10) {
            self.error(format!("{base}.interval"), "must be at least 10ms");
        }
        if timeout.is_zero() {
            self.error(format!("{base}.timeout"), "must be greater than zero");
        } else if timeout > interval && raw.timeout.is_none() {
            self.error(
                format!("{base}.interval"),
                "is shorter than timeout, which defaults to 1s: set timeout too, at most the interval",
            );
        } else if timeout > interval {
            self.error(
                format!("{base}.timeout"),
                "must not be longer than the interval",
            );
        }
        let count = |v: &mut Self, key: &str, n: Option<u64>, default: usize| match n {
            None => default,
            Some(0) => {
                v.error(format!("{base}.{key}"), "must be at least 1");
                default
            }
            Some(n) if n > 100 => {
                v.error(format!("{base}.{key}"), "must be at most 100");
                default
            }
            Some(n) => n as usize,
        };
        let unhealthy_after = count(self, "unhealthy_after", raw.unhealthy_after, 3);
        let healthy_after = count(self, "healthy_after", raw.healthy_after, 2);
        Some(HealthCheck {
            kind,
            interval,
            timeout,
            unhealthy_after,
            healthy_after,
        })
    }

    /// A peer address: an IP and port, or a name and port resolved now (the first address).
    fn resolve(&self, text: &str) -> Result<SocketAddr, String> {
        if let Ok(a) = text.parse::<SocketAddr>() {
            return Ok(a);
        }
        if !text.contains(':') {
            return Err(format!("\"{text}\" needs a port, e.g. {text}:80"));
        }
        match self.loader.resolve(text) {
            Ok(addrs) => addrs
                .into_iter()
                .next()
                .ok_or_else(|| format!("\"{text}\" resolves to no address")),
            Err(e) => Err(format!("cannot resolve \"{text}\": {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::loader::Fixed;
    use super::super::super::{Balance, HashKey, Protocol};
    use super::super::testing::*;

    fn with_pool(pool: &str) -> String {
        format!("{LISTENER}upstreams:\n  a: {pool}\n{ROUTE}")
    }

    #[test]
    fn peer_names_are_resolved_through_the_loader() {
        let machine = Fixed::default().name(
            "users.internal:8080",
            &[
                "10.0.0.7:8080".parse().unwrap(),
                "10.0.0.8:8080".parse().unwrap(),
            ],
        );
        let c = load_with(
            &with_pool("{peers: [users.internal:8080, {address: 10.0.0.9:80, weight: 3}]}"),
            &machine,
        );
        let peers = &c.routing.upstreams[0].peers;
        assert_eq!(peers[0].address, "10.0.0.7:8080".parse().unwrap());
        assert_eq!((peers[1].weight, peers[0].weight), (3, 1));
        let e = errors_with(
            &with_pool("{peers: [nowhere.internal:80, users.internal, 127.0.0.1:2, 127.0.0.1:2, {address: 127.0.0.1:3, weight: 0}]}"),
            &machine,
        );
        assert_reported(
            &e,
            &[
                "upstreams.a.peers[0]: cannot resolve \"nowhere.internal:80\"",
                "upstreams.a.peers[1]: \"users.internal\" needs a port",
                "upstreams.a.peers[3]: peer 127.0.0.1:2 is listed twice",
                "upstreams.a.peers[4].weight: must be at least 1",
            ],
        );
    }

    #[test]
    fn balancing_and_hash_keys() {
        let machine = Fixed::default();
        let c = load_with(
            &with_pool("{peers: [127.0.0.1:2], balance: consistent_hash, hash_key: 'cookie:sid'}"),
            &machine,
        );
        assert_eq!(
            c.routing.upstreams[0].balance,
            Balance::ConsistentHash(HashKey::Cookie("sid".into()))
        );
        let c = load_with(
            &with_pool("{peers: [127.0.0.1:2], balance: consistent_hash}"),
            &machine,
        );
        assert_eq!(
            c.routing.upstreams[0].balance,
            Balance::ConsistentHash(HashKey::ClientIp)
        );
        let c = load_with(
            &with_pool("{peers: [127.0.0.1:2], hash_key: path}"),
            &machine,
        );
        assert!(c.warnings[0]
            .to_string()
            .starts_with("upstreams.a.hash_key: has no effect unless"));
        assert_reported(
            &errors(&with_pool(
                "{peers: [127.0.0.1:2], balance: consistent_hash, hash_key: 'ip'}",
            )),
            &["upstreams.a.hash_key: \"ip\" is not a hash key"],
        );
    }

    #[test]
    fn health_checks_timeouts_and_retries() {
        let e = errors(&with_pool(
            "{peers: [127.0.0.1:2], retries: 11, connect_timeout: 0s, health_check: {kind: tcp, path: /x, interval: 5ms, timeout: 0s, unhealthy_after: 0, healthy_after: 101}}",
        ));
        assert_reported(
            &e,
            &[
                "upstreams.a.retries: must be at most 10",
                "upstreams.a.connect_timeout: must be greater than zero",
                "upstreams.a.health_check.path: applies only to `kind: http`",
                "upstreams.a.health_check.interval: must be at least 10ms",
                "upstreams.a.health_check.timeout: must be greater than zero",
                "upstreams.a.health_check.unhealthy_after: must be at least 1",
                "upstreams.a.health_check.healthy_after: must be at most 100",
            ],
        );
        assert_reported(
            &errors(&with_pool(
                "{peers: [127.0.0.1:2], health_check: {kind: http, path: 'no-slash', interval: 1s, timeout: 2s}}",
            )),
            &[
                "upstreams.a.health_check.path: \"no-slash\" must start with '/'",
                "upstreams.a.health_check.timeout: must not be longer than the interval",
            ],
        );
    }

    #[test]
    fn a_default_the_file_does_not_write_is_named() {
        assert_reported(
            &errors(&with_pool(
                "{peers: [127.0.0.1:2], health_check: {kind: tcp, interval: 500ms}}",
            )),
            &["upstreams.a.health_check.interval: is shorter than timeout, which defaults to 1s"],
        );
    }

    #[test]
    fn tls_towards_peers_and_the_http_version() {
        let ca =
            rcgen::generate_simple_self_signed(vec!["ca.test".to_string()]).expect("certificate");
        let machine = Fixed::default()
            .file("ca.pem", ca.cert.pem())
            .file("empty.pem", "");
        let c = load_with(
            &with_pool(
                "{peers: [127.0.0.1:2], protocol: h2, tls: {sni: API.test, ca_file: ca.pem}}",
            ),
            &machine,
        );
        let up = &c.routing.upstreams[0];
        assert_eq!(up.protocol, Protocol::H2);
        let tls = up.tls.as_ref().expect("tls");
        assert_eq!(tls.sni, "api.test");
        assert_eq!(tls.ca.as_ref().map(|c| c.len()), Some(1));
        let e = errors_with(
            &format!("{LISTENER}upstreams:\n  a: {{peers: [127.0.0.1:2], tls: {{sni: a.test, ca_file: empty.pem}}}}\n  b: {{peers: [127.0.0.1:2], tls: {{sni: b.test, ca_file: gone.pem}}}}\n  c: {{peers: [127.0.0.1:2], protocol: h2}}\n  d: {{peers: [127.0.0.1:2], protocol: h2c, tls: {{sni: 'bad name'}}}}\n{ROUTE}"),
            &machine,
        );
        assert_reported(
            &e,
            &[
                "upstreams.a.tls.ca_file: /conf/empty.pem holds no PEM certificate",
                "upstreams.b.tls.ca_file: cannot read /conf/gone.pem",
                "upstreams.c.protocol: h2 is HTTP/2 over TLS",
                "upstreams.d.protocol: h2c is cleartext HTTP/2",
                "upstreams.d.tls.sni: \"bad name\" is not a host name",
            ],
        );
        let c = load_with(
            &with_pool("{peers: [127.0.0.1:2], tls: {sni: a.test, verify: false}}"),
            &machine,
        );
        assert!(c.warnings[0]
            .to_string()
            .starts_with("upstreams.a.tls.verify: peer certificates are not verified"));
    }
}
