//! Upstream pools: peers (names resolved through the loader), weights, the balancing policy
//! and its hash key, active health checks, timeouts, retries, TLS and the HTTP version.

use super::super::raw::{
    Parsed, RawBalance, RawDns, RawHashKey, RawHealthCheck, RawHealthKind, RawPeer, RawProtocol,
    RawResolve, RawUpstream,
};
use super::super::units;
use super::super::{
    Balance, Discovery, HashKey, HealthCheck, HealthCheckKind, NamedPeers, Peer, Protocol,
    Upstream, UpstreamTls,
};
use super::routes::parse_host;
use super::{valid_name, Validator};
use crate::dns::Name;
use http::HeaderValue;
use serde_yaml::Value;
use std::net::SocketAddr;
use std::time::Duration;

impl Validator<'_> {
    /// A client certificate chain and its key (PEM files) as DER: `None` and an error at
    /// `place` when either cannot be read.
    fn client_cert(
        &mut self,
        place: &str,
        cert: &str,
        key: &str,
    ) -> Option<(Vec<Vec<u8>>, Vec<u8>)> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::PrivateKeyDer;
        let chain = self.ca_bundle(&format!("{place}.client_cert"), cert);
        let path = self.loader.path(key);
        let key = match self.loader.read(&path) {
            Ok(bytes) => match PrivateKeyDer::from_pem_slice(&bytes) {
                Ok(k) => Some(k.secret_der().to_vec()),
                Err(_) => {
                    self.error(
                        format!("{place}.client_key"),
                        format!(
                            "{} holds no PKCS#8, PKCS#1 or SEC1 private key in PEM form",
                            path.display()
                        ),
                    );
                    None
                }
            },
            Err(e) => {
                self.error(
                    format!("{place}.client_key"),
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        };
        let (chain, key) = (chain?, key?);
        // As Pingora will read the key (by its DER structure), and as the handshake will use
        // it: a key the provider can sign with, for the leaf certificate's public key.
        let usable = PrivateKeyDer::try_from(key.clone())
            .map_err(|e| e.to_string())
            .and_then(|k| {
                rustls::crypto::aws_lc_rs::default_provider()
                    .key_provider
                    .load_private_key(k)
                    .map_err(|e| e.to_string())
            })
            .and_then(|signing| {
                let certs = chain
                    .iter()
                    .map(|c| rustls_pki_types::CertificateDer::from(c.clone()))
                    .collect();
                rustls::sign::CertifiedKey::new(certs, signing)
                    .keys_match()
                    .map_err(|e| format!("it does not belong to client_cert's certificate ({e})"))
            });
        if let Err(e) = usable {
            self.error(
                format!("{place}.client_key"),
                format!("{} cannot be used: {e}", path.display()),
            );
            return None;
        }
        Some((chain, key))
    }

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
        let mut names: Vec<NamedPeers> = Vec::new();
        for (i, p) in raw.peers.into_iter().enumerate() {
            let (source, weight, path) = match p {
                RawPeer::Address(a) => (Ok(a), None, format!("{base}.peers[{i}]")),
                RawPeer::Detailed(d) => {
                    let place = format!("{base}.peers[{i}]");
                    let source = match (d.address, d.srv) {
                        (Some(a), None) => Ok(a),
                        (None, Some(srv)) => Err(srv),
                        (Some(_), Some(_)) => {
                            self.error(place, "give `address` or `srv`, not both");
                            continue;
                        }
                        (None, None) => {
                            self.error(place, "missing `address` (or `srv`)");
                            continue;
                        }
                    };
                    let path = match &source {
                        Ok(_) => format!("{place}.address"),
                        Err(_) => format!("{place}.srv"),
                    };
                    (source, d.weight, path)
                }
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
            let name = match source {
                Ok(text) => match text.parse::<SocketAddr>() {
                    Ok(address) => {
                        if peers.iter().any(|p| p.address == address) {
                            self.error(path, format!("peer {address} is listed twice"));
                        } else {
                            peers.push(Peer { address, weight });
                        }
                        continue;
                    }
                    Err(_) => match host_and_port(&text) {
                        Ok(name) => name,
                        Err(msg) => {
                            self.error(path, msg);
                            continue;
                        }
                    },
                },
                Err(srv) => {
                    let srv = srv.trim_end_matches('.').to_ascii_lowercase();
                    if !is_srv_name(&srv) {
                        self.error(
                            path,
                            format!("\"{srv}\" is not an SRV name (_service._proto.domain)"),
                        );
                        continue;
                    }
                    Name::Srv(srv)
                }
            };
            if names.iter().any(|n| n.name == name) {
                self.error(path, format!("{name} is listed twice"));
                continue;
            }
            // Looked up now: a name that does not resolve is a problem of the file.
            let found = match self.loader.resolve(&name, &self.dns_servers) {
                Ok(answer) if answer.peers.is_empty() => {
                    self.error(path, format!("{name} resolves to no address"));
                    continue;
                }
                Ok(answer) => answer.peers,
                Err(msg) => {
                    match self.loader.last_known(&name) {
                        Some(known) => {
                            self.warn(
                            path,
                            format!("{msg}; keeping the {} address(es) the running gateway has for it", known.len()),
                        );
                            known
                        }
                        None => {
                            self.error(path, msg);
                            continue;
                        }
                    }
                }
            };
            let resolved = found
                .into_iter()
                .map(|(address, own)| Peer {
                    address,
                    weight: own.unwrap_or(weight),
                })
                .collect();
            names.push(NamedPeers {
                name,
                weight,
                resolved,
            });
        }
        let fixed = peers.clone();
        for n in &names {
            for p in &n.resolved {
                if !peers.iter().any(|q| q.address == p.address) {
                    peers.push(p.clone());
                }
            }
        }
        let resolve_given = raw.resolve.is_some();
        let (min_interval, max_interval) = self.resolve_interval(base, raw.resolve);
        let discovery = if names.is_empty() {
            if resolve_given {
                self.warn(
                    format!("{base}.resolve"),
                    "has no effect: every peer is an address",
                );
            }
            None
        } else {
            Some(Discovery {
                fixed,
                names,
                min_interval,
                max_interval,
                servers: self.dns_servers.clone(),
            })
        };

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
        let retry_on = self.retry_on(base, raw.retry_on);
        let retry_budget = self.retry_budget(base, raw.retry_budget);
        let outlier_detection = raw
            .outlier_detection
            .map(|o| self.outlier_detection(base, o));
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
            let ca = t
                .ca_file
                .and_then(|path| self.ca_bundle(&format!("{place}.ca_file"), &path));
            let verify = t.verify.unwrap_or(true);
            if !verify {
                self.warn(
                    format!("{place}.verify"),
                    "peer certificates are not verified: anyone on the path can impersonate them",
                );
            }
            let client_cert = match (t.client_cert, t.client_key) {
                (Some(cert), Some(key)) => self.client_cert(&place, &cert, &key),
                (None, None) => None,
                _ => {
                    self.error(place.clone(), "give both client_cert and client_key");
                    None
                }
            };
            UpstreamTls {
                sni: t.sni.to_ascii_lowercase(),
                verify,
                ca,
                client_cert,
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
            discovery,
            balance,
            health_check,
            connect_timeout,
            read_timeout,
            write_timeout,
            idle_timeout,
            retries,
            retry_on,
            retry_budget,
            outlier_detection,
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

    /// `upstreams.NAME.resolve`: bounds on the wait between lookups of its peer names.
    fn resolve_interval(&mut self, base: &str, raw: Option<RawResolve>) -> (Duration, Duration) {
        let raw = raw.unwrap_or(RawResolve {
            min_interval: None,
            max_interval: None,
        });
        let min = raw.min_interval.map_or(Duration::from_secs(1), |d| d.0);
        let max = raw.max_interval.map_or(Duration::from_secs(60), |d| d.0);
        if min < Duration::from_millis(100) || min > Duration::from_secs(3600) {
            self.error(
                format!("{base}.resolve.min_interval"),
                "must be between 100ms and 1h",
            );
        } else if max < min || max > Duration::from_secs(86_400) {
            self.error(
                format!("{base}.resolve.max_interval"),
                "must be at least `min_interval` and at most 24h",
            );
        }
        (min, max)
    }

    /// `dns`: the name servers peer names are resolved with.
    pub(super) fn dns(&mut self, value: Value) -> Vec<SocketAddr> {
        let Some(raw) = self.item::<RawDns>("dns", value) else {
            return Vec::new();
        };
        if raw.servers.is_empty() {
            self.error("dns.servers", "must list at least one name server");
        }
        raw.servers
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let parsed = s.parse::<SocketAddr>().or_else(|_| {
                    s.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                });
                match parsed {
                    Ok(a) => Some(a),
                    Err(_) => {
                        self.error(
                            format!("dns.servers[{i}]"),
                            format!("\"{s}\" is not an IP address (with an optional port)"),
                        );
                        None
                    }
                }
            })
            .collect()
    }
}

/// `_service._proto.domain`: labels of letters, digits, `-` and `_`.
fn is_srv_name(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    labels.len() >= 3
        && labels[0].starts_with('_')
        && labels[1].starts_with('_')
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `host:port` as a name to resolve.
fn host_and_port(text: &str) -> Result<Name, String> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("\"{text}\" needs a port, e.g. {text}:80"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("\"{text}\": \"{port}\" is not a port"))?;
    if host.is_empty() || parse_host(host).is_err() {
        return Err(format!("\"{text}\": \"{host}\" is not a host name"));
    }
    Ok(Name::Host {
        host: host.trim_end_matches('.').to_ascii_lowercase(),
        port,
    })
}

mod resilience;

#[cfg(test)]
mod tests;
