//! Routes: what each matches (hosts, canonical paths, methods, headers), where it sends, how
//! it rewrites the path and headers, and who may call it. A route's limits and cache are
//! checked in their own modules ([`super::limits`], [`super::cache`]).

use super::super::raw::{RawAuthMethod, RawHeaderTransform, RawMatch, RawRoute};
use super::super::{
    AuthMethod, Consumer, HeaderTransform, HostPattern, PathMatch, Route, Upstream,
};
use super::{index_path, valid_name, Validator};
use crate::canonical::PathOptions;
use http::{HeaderName, HeaderValue, Method};
use serde_yaml::Value;

/// What route validation needs from the rest of the file.
pub(super) struct RouteContext<'a> {
    pub(super) upstreams: &'a [Upstream],
    /// Pools whose own problems are reported: a route using one is not reported too.
    pub(super) broken_upstreams: &'a [String],
    pub(super) consumers: &'a [Consumer],
    pub(super) have_jwt: bool,
    pub(super) have_redis: bool,
    /// Some listener asks clients for certificates.
    pub(super) have_client_auth: bool,
    /// Routes are matched on canonical paths: their own paths must be written so.
    pub(super) paths: PathOptions,
    /// Where API keys are read from (an OpenAPI API-key scheme must name it).
    pub(super) api_key_header: &'a str,
}

/// What a route matches.
struct Match {
    hosts: Vec<HostPattern>,
    path: PathMatch,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, HeaderValue)>,
    query: Vec<(String, String)>,
}

/// Who may call a route.
struct Access {
    auth: Vec<AuthMethod>,
    allow_groups: Vec<String>,
    allow_consumers: Vec<usize>,
}

impl Validator<'_> {
    pub(super) fn routes(&mut self, value: Option<Value>, rc: &RouteContext) -> Vec<Route> {
        let items = self.sequence("routes", value, true);
        let mut out: Vec<Route> = Vec::new();
        let mut names: std::collections::HashMap<String, usize> = Default::default();
        let mut signatures: std::collections::HashMap<String, usize> = Default::default();
        let mut places = Vec::new();
        let items = items.into_iter().enumerate().flat_map(|(i, item)| {
            let base = index_path("routes", i);
            self.expand_openapi(&base, item)
                .into_iter()
                .map(move |item| (i, item))
                .collect::<Vec<_>>()
        });
        for (i, item) in items.collect::<Vec<_>>() {
            let base = index_path("routes", i);
            let Some(raw) = self.item::<RawRoute>(&base, item) else {
                continue;
            };
            if let Some(j) = names.get(&raw.name) {
                self.error(
                    format!("{base}.name"),
                    format!("route name \"{}\" is already used by routes[{j}]", raw.name),
                );
            } else {
                names.insert(raw.name.clone(), i);
            }
            if let Some(route) = self.route(&base, raw, rc) {
                let signature = route_signature(&route);
                if let Some(j) = signatures.get(&signature) {
                    self.error(
                        format!("{base}.match"),
                        format!(
                            "matches exactly what routes[{j}] matches, with the same priority: it could never be chosen"
                        ),
                    );
                } else {
                    signatures.insert(signature, i);
                }
                out.push(route);
                places.push(i);
            }
        }
        for (j, i) in shadow::shadowed(&out) {
            self.warn(
                format!("{}.match", index_path("routes", places[j])),
                format!(
                    "route \"{}\" can never be chosen: routes[{}] (\"{}\") matches every request it matches and comes first (see the README's route precedence); narrow that route or give this one a higher priority",
                    out[j].name, places[i], out[i].name
                ),
            );
        }
        out
    }

    fn route(&mut self, base: &str, raw: RawRoute, rc: &RouteContext) -> Option<Route> {
        let before = self.errors.len();
        if raw.name.is_empty() || !valid_name(&raw.name) {
            self.error(
                format!("{base}.name"),
                "route names are non-empty and use letters, digits, '_', '-' and '.' only",
            );
        }
        let (matcher, spec_auth, api) = match raw.openapi {
            Some(o) => {
                let own_auth = raw.auth.is_some();
                let own_groups = raw.allow_groups.is_some() || raw.allow_consumers.is_some();
                let from = self.operation_route(
                    base,
                    o,
                    raw.matcher,
                    own_auth,
                    own_groups,
                    rc.api_key_header,
                )?;
                (Some(from.matcher), from.auth, Some(from.api))
            }
            None => (raw.matcher, None, None),
        };
        let Some(matcher) = matcher else {
            self.error(
                format!("{base}.match"),
                "is required (or openapi, to take it from an OpenAPI operation)",
            );
            return None;
        };
        let m = self.route_match(base, matcher, &rc.paths);
        let (upstream, split) = self.route_pools(
            base,
            raw.upstream,
            raw.upstreams,
            raw.sticky,
            raw.canary,
            rc,
        );
        let mirror = raw.mirror.and_then(|m| self.mirror(base, m, rc));
        let cors = raw.cors.and_then(|c| self.cors(base, c));
        let compression = raw.compression.and_then(|c| self.compression(base, c));
        let forward_auth = raw
            .forward_auth
            .and_then(|f| self.forward_auth(base, f, rc));
        let rewrite = self.rewrite(base, &m.path, raw.strip_prefix, raw.rewrite);
        let request_headers = self.transform(
            &format!("{base}.request_headers"),
            raw.request_headers.unwrap_or_default(),
        );
        let response_headers = self.transform(
            &format!("{base}.response_headers"),
            raw.response_headers.unwrap_or_default(),
        );
        let auth = raw.auth.or(spec_auth);
        let access = self.access(base, auth, raw.allow_groups, raw.allow_consumers, rc);
        let has_auth = !access.auth.is_empty();
        let rate_limits = self.rate_limits(base, raw.rate_limit, has_auth, rc.have_redis);
        let cache = raw
            .cache
            .and_then(|c| self.route_cache(&format!("{base}.cache"), c, has_auth));
        let concurrency_limit = self.concurrency_limit(base, raw.concurrency_limit, has_auth);
        let ip_allow = self.cidrs(
            &format!("{base}.ip_allow"),
            raw.ip_allow.unwrap_or_default(),
        );
        let ip_deny = self.cidrs(&format!("{base}.ip_deny"), raw.ip_deny.unwrap_or_default());

        if self.errors.len() > before {
            return None;
        }
        Some(Route {
            auth: access.auth,
            allow_groups: access.allow_groups,
            allow_consumers: access.allow_consumers,
            ip_allow,
            ip_deny,
            rate_limits,
            concurrency_limit,
            cache,
            name: raw.name,
            hosts: m.hosts,
            path: m.path,
            methods: m.methods,
            headers: m.headers,
            query: m.query,
            cors,
            compression,
            forward_auth,
            upstream,
            split,
            priority: raw.priority.unwrap_or(0),
            rewrite,
            request_headers,
            response_headers,
            max_body_size: raw.max_body_size.map(|s| s.0),
            retry_non_idempotent: raw.retry_non_idempotent.unwrap_or(false),
            mirror,
            api,
        })
    }

    /// The hosts, path, methods and headers a route matches.
    fn route_match(&mut self, base: &str, m: RawMatch, paths: &PathOptions) -> Match {
        let mbase = format!("{base}.match");
        let path = self.match_path(&mbase, &m, paths);

        let mut hosts = Vec::new();
        for (j, h) in m.hosts.unwrap_or_default().into_iter().enumerate() {
            match parse_host(&h) {
                Ok(p) => hosts.push(p),
                Err(msg) => self.error(format!("{mbase}.hosts[{j}]"), msg),
            }
        }
        hosts.sort();
        hosts.dedup();

        let mut methods = Vec::new();
        for (j, name) in m.methods.unwrap_or_default().into_iter().enumerate() {
            let upper = name.to_ascii_uppercase();
            match Method::from_bytes(upper.as_bytes()) {
                Ok(method) if !name.is_empty() => {
                    if !methods.contains(&method) {
                        methods.push(method)
                    }
                }
                _ => self.error(
                    format!("{mbase}.methods[{j}]"),
                    format!("\"{name}\" is not an HTTP method"),
                ),
            }
        }

        let mut headers = Vec::new();
        for (name, value) in m.headers.unwrap_or_default() {
            let place = format!("{mbase}.headers.{name}");
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                (Ok(n), Ok(v)) => headers.push((n, v)),
                (Err(_), _) => self.error(place, "is not a valid header name"),
                (_, Err(_)) => {
                    self.error(place, format!("\"{value}\" is not a valid header value"))
                }
            }
        }
        let mut query = Vec::new();
        for (name, value) in m.query.unwrap_or_default() {
            if name.is_empty() {
                self.error(format!("{mbase}.query"), "a parameter name is empty");
            } else {
                query.push((name, value));
            }
        }
        Match {
            hosts,
            path,
            methods,
            headers,
            query,
        }
    }

    /// The index of the pool named `name` (`place`: where the name is written).
    pub(super) fn route_upstream(&mut self, place: &str, name: &str, rc: &RouteContext) -> usize {
        let upstreams = rc.upstreams;
        match upstreams.iter().position(|u| u.name == name) {
            Some(i) => i,
            // Its own problems are reported; the file is refused anyway.
            None if rc.broken_upstreams.iter().any(|b| b == name) => 0,
            None => {
                let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
                self.error(
                    place,
                    format!(
                        "unknown upstream \"{}\" (known: {})",
                        name,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
                0
            }
        }
    }

    /// Who may call: the authentication methods and the group and consumer rules.
    fn access(
        &mut self,
        base: &str,
        auth_methods: Option<Vec<RawAuthMethod>>,
        allow_groups: Option<Vec<String>>,
        allow_consumers_names: Option<Vec<String>>,
        rc: &RouteContext,
    ) -> Access {
        let (consumers, have_jwt) = (rc.consumers, rc.have_jwt);
        let mut auth = Vec::new();
        for m in auth_methods.unwrap_or_default() {
            let m = match m {
                RawAuthMethod::ApiKey => AuthMethod::ApiKey,
                RawAuthMethod::Basic => AuthMethod::Basic,
                RawAuthMethod::Mtls => {
                    if !rc.have_client_auth {
                        self.error(
                            format!("{base}.auth"),
                            "mtls needs a TLS listener with tls.client_auth",
                        );
                    }
                    AuthMethod::Mtls
                }
                RawAuthMethod::Jwt => {
                    if !have_jwt {
                        self.error(
                            format!("{base}.auth"),
                            "jwt needs at least one issuer in the top-level `jwt` section",
                        );
                    }
                    AuthMethod::Jwt
                }
            };
            if !auth.contains(&m) {
                auth.push(m);
            }
        }
        let allow_groups = allow_groups.unwrap_or_default();
        let known_groups: Vec<&str> = consumers
            .iter()
            .flat_map(|c| c.groups.iter().map(String::as_str))
            .collect();
        for (j, g) in allow_groups.iter().enumerate() {
            if !known_groups.contains(&g.as_str()) {
                self.warn(
                    format!("{base}.allow_groups[{j}]"),
                    format!("no consumer is in group \"{g}\""),
                );
            }
        }
        let mut allow_consumers = Vec::new();
        for (j, name) in allow_consumers_names.unwrap_or_default().iter().enumerate() {
            match consumers.iter().position(|c| &c.name == name) {
                Some(i) => allow_consumers.push(i),
                None => self.error(
                    format!("{base}.allow_consumers[{j}]"),
                    format!("unknown consumer \"{name}\""),
                ),
            }
        }
        if auth.is_empty() && !(allow_groups.is_empty() && allow_consumers.is_empty()) {
            self.error(
                format!("{base}.auth"),
                "allow_groups and allow_consumers need `auth` on the route: who the caller is must be known",
            );
        }
        Access {
            auth,
            allow_groups,
            allow_consumers,
        }
    }

    fn transform(&mut self, base: &str, raw: RawHeaderTransform) -> HeaderTransform {
        let mut out = HeaderTransform::default();
        let pairs = |v: &mut Self, key: &str, map: std::collections::BTreeMap<String, String>| {
            let mut list = Vec::new();
            for (name, value) in map {
                let place = format!("{base}.{key}.{name}");
                match (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(&value),
                ) {
                    (Ok(n), Ok(val)) => {
                        if crate::wire::is_framing_or_hop(&n) {
                            v.error(
                                place,
                                "is a hop-by-hop or framing header the gateway manages itself",
                            );
                        } else {
                            list.push((n, val));
                        }
                    }
                    (Err(_), _) => v.error(place, "is not a valid header name"),
                    (_, Err(_)) => {
                        v.error(place, format!("\"{value}\" is not a valid header value"))
                    }
                }
            }
            list
        };
        out.set = pairs(self, "set", raw.set);
        out.add = pairs(self, "add", raw.add);
        for (j, name) in raw.remove.into_iter().enumerate() {
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(n) => out.remove.push(n),
                Err(_) => self.error(
                    format!("{base}.remove[{j}]"),
                    format!("\"{name}\" is not a valid header name"),
                ),
            }
        }
        out
    }
}

/// A host a route answers for: a name, or `*.` and a suffix.
pub(super) fn parse_host(text: &str) -> Result<HostPattern, String> {
    let lower = text.to_ascii_lowercase();
    let (wild, rest) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let ok = !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !rest.starts_with('.')
        && !rest.ends_with('.');
    if !ok {
        return Err(format!(
            "\"{text}\" is not a host name; use e.g. api.example.com or *.example.org (no port)"
        ));
    }
    Ok(if wild {
        HostPattern::Suffix(format!(".{rest}"))
    } else {
        HostPattern::Exact(rest.to_string())
    })
}

fn route_signature(r: &Route) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{}",
        r.hosts, r.path, r.methods, r.headers, r.query, r.priority
    )
}

mod compression;
mod openapi;
pub(super) use openapi::LoadedSpec;
mod cors;
mod forward_auth;
mod paths;
mod shadow;
mod split;

#[cfg(test)]
mod tests;
