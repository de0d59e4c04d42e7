//! The admin API's resources: routes, upstream pools with each peer's state, the running
//! configuration with its secrets redacted, and draining a peer by hand.

use super::{error, json};
use crate::config::{HostPattern, PathMatch};
use crate::gateway::Gateway;
use http::Response;
use serde_json::{json as value, Value};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

/// Every route: what it matches, where it sends, which policies it has.
pub(super) fn routes(gw: &Gateway) -> Value {
    gw.routes
        .iter()
        .map(|r| {
            value!({
                "name": &*r.name,
                "upstream": r.pool.config.name,
                "split": r.split.as_ref().map(|s| s.targets.iter().map(|t| value!({
                    "pool": t.pool.config.name,
                    "weight": t.weight,
                })).collect::<Vec<_>>()),
                "hosts": r.hosts.iter().map(|h| match h {
                    HostPattern::Exact(n) => n.clone(),
                    HostPattern::Suffix(s) => format!("*{s}"),
                }).collect::<Vec<_>>(),
                "path": match &r.path {
                    PathMatch::Any => "/".to_string(),
                    PathMatch::Prefix(p) => format!("{p}*"),
                    PathMatch::Exact(p) => p.clone(),
                    PathMatch::Template(t) => t.source.clone(),
                    PathMatch::Regex(r) => format!("~{}", r.source),
                },
                "methods": r.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                "auth": r.access.authenticates(),
                "rate_limited": r.limits.limits_rate(),
                "cached": r.cache.is_some(),
            })
        })
        .collect()
}

/// Every pool and each peer's state: `healthy` is whether it takes requests now (active checks
/// pass, not cooling down after a refused connection, not drained); the parts say which.
pub(super) fn upstreams(gw: &Gateway) -> Value {
    gw.pools
        .iter()
        .map(|p| {
            value!({
                "name": p.config.name,
                "balance": format!("{:?}", p.config.balance).to_lowercase(),
                "names": p.config.discovery.as_ref().map(|d| d.names.iter().map(|n| n.name.to_string()).collect::<Vec<_>>()),
                "dns_failures": p.dns_failures(),
                "ejections": p.config.outlier_detection.as_ref().map(|_| p.ejections()),
                "peers": p.peers().iter().map(|peer| value!({
                    "address": peer.address.to_string(),
                    "weight": peer.weight,
                    "healthy": p.is_available(&peer.address),
                    "health_check_passing": p.is_healthy(&peer.address),
                    "cooling_down_seconds": p.cooldown_left(&peer.address),
                    "drained": peer.drained.load(Ordering::Relaxed),
                    "in_flight": peer.in_flight.load(Ordering::Relaxed),
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// The configuration the running snapshot was built from, as JSON, with API keys, password
/// hashes and Redis passwords replaced by `"<redacted>"` (secrets from the environment are
/// named by their variable only, never read into it).
pub(super) fn config(gw: &Gateway) -> Value {
    let mut doc: Value = serde_yaml::from_str(&gw.config_text).unwrap_or(Value::Null);
    redact(&mut doc, None);
    value!({ "checksum": gw.checksum, "config": doc })
}

/// Replace secret values in place.
fn redact(v: &mut Value, key: Option<&str>) {
    const HIDDEN: &str = "<redacted>";
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                redact(child, Some(k.as_str()));
            }
        }
        Value::Array(items) => {
            for item in items {
                redact(item, key);
            }
        }
        Value::String(s) => match key {
            Some("api_keys" | "password_hash") => *s = HIDDEN.into(),
            Some("url" | "cluster") if s.contains('@') => {
                // redis://user:password@host: keep the scheme and host.
                if let (Some(scheme), Some(at)) = (s.find("://"), s.rfind('@')) {
                    *s = format!("{}{HIDDEN}{}", &s[..scheme + 3], &s[at..]);
                }
            }
            _ => {}
        },
        _ => {}
    }
}

/// `POST /upstreams/{pool}/peers/{address}/drain` or `/undrain`: take a peer out of its pool (no
/// new requests; in-flight ones finish) or put it back. The state lasts while the pool's
/// configuration does (a reload that changes the pool starts it afresh).
pub(super) fn drain(gw: &Gateway, path: &str) -> Response<Vec<u8>> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (pool, peer, action) = match parts.as_slice() {
        ["upstreams", pool, "peers", peer, action] => (*pool, *peer, *action),
        _ => return error(404, "no such admin endpoint"),
    };
    let drained = match action {
        "drain" => true,
        "undrain" => false,
        _ => return error(404, "no such admin endpoint"),
    };
    let Some(p) = gw.pools.iter().find(|p| p.config.name == pool) else {
        return error(404, &format!("no upstream named \"{pool}\""));
    };
    let Ok(address) = peer.parse::<SocketAddr>() else {
        return error(400, &format!("\"{peer}\" is not an address and port"));
    };
    if !p.set_drained(&address, drained) {
        return error(404, &format!("upstream \"{pool}\" has no peer {address}"));
    }
    json(
        200,
        value!({ "upstream": pool, "peer": address.to_string(), "drained": drained }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let mut v: Value = serde_yaml::from_str(
            "consumers: [{name: a, api_keys: [k1, k2], basic_auth: {username: u, password_hash: h}}]\nredis: {url: 'redis://user:pw@cache:6379', cluster: ['redis://:pw@n1:7000', 'redis://n2:7001']}\nadmin: {token_env: T}\n",
        )
        .unwrap();
        redact(&mut v, None);
        assert_eq!(
            v["consumers"][0]["api_keys"],
            value!(["<redacted>", "<redacted>"])
        );
        assert_eq!(
            v["consumers"][0]["basic_auth"]["password_hash"],
            "<redacted>"
        );
        assert_eq!(v["consumers"][0]["basic_auth"]["username"], "u");
        assert_eq!(v["redis"]["url"], "redis://<redacted>@cache:6379");
        assert_eq!(
            v["redis"]["cluster"],
            value!(["redis://<redacted>@n1:7000", "redis://n2:7001"])
        );
        assert_eq!(v["admin"]["token_env"], "T");
    }
}
