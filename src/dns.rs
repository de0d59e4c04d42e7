//! Peer names in DNS: every A/AAAA address of `host:port`, or the targets of an SRV name (each
//! target's addresses, with its port and weight), looked up with `hickory-resolver`, from the
//! system's resolver configuration or from the name servers the configuration gives. Answers
//! carry how long they may be kept (the records' TTL), for re-resolution.

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A name that gives peers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Name {
    /// Every address of `host`, on `port`.
    Host { host: String, port: u16 },
    /// The targets of an SRV name (`_http._tcp.users.internal`): of the records with the lowest
    /// priority, each target's addresses on the record's port, with the record's weight.
    Srv(String),
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Name::Host { host, port } => write!(f, "{host}:{port}"),
            Name::Srv(name) => write!(f, "SRV {name}"),
        }
    }
}

/// Addresses with their own weights (`None`: the entry's).
pub type Resolved = Vec<(SocketAddr, Option<usize>)>;

/// What a name resolved to: addresses with their weights (`None`: the entry's own weight), and
/// when the answer expires.
#[derive(Debug, Clone)]
pub struct Answer {
    pub peers: Vec<(SocketAddr, Option<usize>)>,
    pub valid_for: Duration,
}

/// A DNS resolver for peer names.
#[derive(Clone)]
pub struct Resolver(TokioResolver);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl Resolver {
    /// Ask `servers` (UDP, then TCP for truncated answers), or, without any, the name servers
    /// of the system's configuration (`/etc/resolv.conf`, with `/etc/hosts`).
    pub fn new(servers: &[SocketAddr]) -> Result<Resolver, String> {
        let mut builder = if servers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|e| format!("the system's resolver configuration: {e}"))?
        } else {
            let mut config = ResolverConfig::new();
            for s in servers {
                config.add_name_server(NameServerConfig::new(*s, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(*s, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = Duration::from_secs(1);
        opts.attempts = 2;
        // Every address of a name: both A and AAAA records (the default stops at A when any).
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        Ok(Resolver(builder.build()))
    }

    /// Resolve `name`.
    pub async fn resolve(&self, name: &Name) -> Result<Answer, String> {
        let now = Instant::now();
        match name {
            Name::Host { host, port } => {
                if let Ok(ip) = host.parse::<std::net::IpAddr>() {
                    return Ok(Answer {
                        peers: vec![(SocketAddr::new(ip, *port), None)],
                        valid_for: Duration::MAX,
                    });
                }
                let lookup = self
                    .0
                    .lookup_ip(host.as_str())
                    .await
                    .map_err(|e| format!("{name}: {e}"))?;
                let valid_for = lookup.valid_until().saturating_duration_since(now);
                let mut peers: Vec<(SocketAddr, Option<usize>)> = lookup
                    .iter()
                    .map(|ip| (SocketAddr::new(ip, *port), None))
                    .collect();
                peers.sort();
                peers.dedup();
                if peers.is_empty() {
                    return Err(format!("{name}: no address"));
                }
                Ok(Answer { peers, valid_for })
            }
            Name::Srv(srv) => {
                let lookup = self
                    .0
                    .srv_lookup(srv.as_str())
                    .await
                    .map_err(|e| format!("{name}: {e}"))?;
                let mut valid_for = lookup
                    .as_lookup()
                    .valid_until()
                    .saturating_duration_since(now);
                let records: Vec<_> = lookup.iter().collect();
                let Some(best) = records.iter().map(|r| r.priority()).min() else {
                    return Err(format!("{name}: no record"));
                };
                let mut peers = Vec::new();
                for r in records.iter().filter(|r| r.priority() == best) {
                    let target = r.target().to_ascii();
                    let target = target.trim_end_matches('.');
                    let answer = Box::pin(self.resolve(&Name::Host {
                        host: target.to_string(),
                        port: r.port(),
                    }))
                    .await?;
                    valid_for = valid_for.min(answer.valid_for);
                    let weight = usize::from(r.weight()).max(1);
                    peers.extend(answer.peers.into_iter().map(|(a, _)| (a, Some(weight))));
                }
                peers.sort();
                peers.dedup_by_key(|(a, _)| *a);
                Ok(Answer { peers, valid_for })
            }
        }
    }

    /// Resolve `name` from outside any async runtime's thread (configuration loading): on a
    /// thread of its own with a runtime of its own.
    pub fn resolve_blocking(servers: &[SocketAddr], name: &Name) -> Result<Answer, String> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| format!("cannot resolve {name}: {e}"))?;
                    rt.block_on(async {
                        let resolver = Resolver::new(servers)?;
                        resolver.resolve(name).await
                    })
                })
                .join()
                .unwrap_or_else(|_| Err(format!("cannot resolve {name}: the resolver failed")))
        })
    }
}
