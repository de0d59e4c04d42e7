//! The compiled route table. Routes are indexed by host (exact names, `*.` suffixes, any host)
//! and then by path (exact paths, prefixes on segment boundaries), so a lookup costs a few hash
//! probes whatever the number of routes. Method and header predicates are checked only on the
//! few candidates that share the host and path.
//!
//! Precedence, highest first: explicit `priority`; a named host over a `*.` wildcard (longer
//! suffix first) over any host; an exact path over a prefix; a longer prefix over a shorter one;
//! more predicates (methods, headers) over fewer; earlier in the file over later.

use crate::config::{HostPattern, PathMatch, PathRewrite, Route};
use http::{HeaderMap, Method};
use std::collections::HashMap;

/// Index of a route in the configuration's route list.
pub type RouteId = usize;

/// Order of matches across buckets: priority, host rank, then earlier (more specific) visit.
type Precedence = (i32, usize, std::cmp::Reverse<usize>);

#[derive(Debug, Clone)]
struct Candidate {
    route: RouteId,
    priority: i32,
    methods: Box<[Method]>,
    headers: Box<[(http::HeaderName, http::HeaderValue)]>,
    /// Sort key within one bucket (higher first): priority, predicates, -index.
    rank: (i32, usize, std::cmp::Reverse<usize>),
}

impl Candidate {
    /// Whether the request's method and headers satisfy this route's predicates. A route for
    /// `GET` also takes `HEAD`, which servers answer with the `GET` handler: otherwise a `HEAD`
    /// would miss a protected `GET` route and still run its handler behind another route.
    fn accepts(&self, method: &Method, headers: &HeaderMap) -> bool {
        (self.methods.is_empty()
            || self.methods.contains(method)
            || (*method == Method::HEAD && self.methods.contains(&Method::GET)))
            && self.headers.iter().all(|(name, value)| {
                headers
                    .get_all(name)
                    .iter()
                    .any(|v| v.as_bytes() == value.as_bytes())
            })
    }
}

#[derive(Debug, Default)]
struct PathTable {
    exact: HashMap<Box<str>, Vec<Candidate>>,
    prefix: HashMap<Box<str>, Vec<Candidate>>,
}

impl PathTable {
    fn insert(&mut self, path: &PathMatch, c: Candidate) {
        let bucket = match path {
            PathMatch::Exact(p) => self.exact.entry(p.as_str().into()).or_default(),
            PathMatch::Prefix(p) => self.prefix.entry(p.as_str().into()).or_default(),
            PathMatch::Any => self.prefix.entry("/".into()).or_default(),
        };
        bucket.push(c);
    }

    fn sort(&mut self) {
        for v in self.exact.values_mut().chain(self.prefix.values_mut()) {
            v.sort_by_key(|c| std::cmp::Reverse(c.rank));
        }
    }

    /// Visit candidate buckets from most to least specific path; stop when `visit` says so.
    fn walk<'a>(&'a self, path: &str, mut visit: impl FnMut(&'a [Candidate]) -> bool) {
        if !self.exact.is_empty() {
            if let Some(v) = self.exact.get(path) {
                if visit(v) {
                    return;
                }
            }
        }
        if self.prefix.is_empty() {
            return;
        }
        let mut p = path.trim_end_matches('/');
        while !p.is_empty() {
            if let Some(v) = self.prefix.get(p) {
                if visit(v) {
                    return;
                }
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => break,
            }
        }
        if let Some(v) = self.prefix.get("/") {
            visit(v);
        }
    }
}

/// The route table, compiled once per configuration.
#[derive(Debug, Default)]
pub struct Router {
    exact_hosts: HashMap<Box<str>, PathTable>,
    suffix_hosts: HashMap<Box<str>, PathTable>,
    any_host: PathTable,
    /// With one priority everywhere the first match in precedence order wins and the walk stops.
    uniform_priority: bool,
}

/// What a lookup needs from the request.
pub struct RequestView<'a> {
    pub host: &'a str,
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

impl Router {
    /// Compile the table from the validated routes.
    pub fn new(routes: &[Route]) -> Router {
        let mut r = Router {
            uniform_priority: routes.windows(2).all(|w| w[0].priority == w[1].priority),
            ..Router::default()
        };
        for (i, route) in routes.iter().enumerate() {
            let c = Candidate {
                route: i,
                priority: route.priority,
                methods: route.methods.clone().into_boxed_slice(),
                headers: route.headers.clone().into_boxed_slice(),
                rank: (
                    route.priority,
                    route.headers.len() + usize::from(!route.methods.is_empty()),
                    std::cmp::Reverse(i),
                ),
            };
            if route.hosts.is_empty() {
                r.any_host.insert(&route.path, c);
            } else {
                for h in &route.hosts {
                    let table = match h {
                        HostPattern::Exact(name) => {
                            r.exact_hosts.entry(name.as_str().into()).or_default()
                        }
                        HostPattern::Suffix(suffix) => {
                            r.suffix_hosts.entry(suffix.as_str().into()).or_default()
                        }
                    };
                    table.insert(&route.path, c.clone());
                }
            }
        }
        for t in r
            .exact_hosts
            .values_mut()
            .chain(r.suffix_hosts.values_mut())
        {
            t.sort();
        }
        r.any_host.sort();
        r
    }

    /// Find the route for a request, if any; `req.host` is the canonical host (see
    /// [`crate::canonical`]).
    pub fn lookup(&self, req: &RequestView) -> Option<RouteId> {
        let h = req.host;
        let uniform = self.uniform_priority;
        // (priority, host rank, -visit order): visit order runs from the most to the least
        // specific path within a host level.
        let mut best: Option<(RouteId, Precedence)> = None;
        let mut seq = 0usize;
        let mut done = false;

        let mut consider = |table: &PathTable, host_rank: usize, done: &mut bool| {
            if *done {
                return;
            }
            table.walk(req.path, |bucket| {
                seq += 1;
                let Some(c) = bucket.iter().find(|c| c.accepts(req.method, req.headers)) else {
                    return false;
                };
                let key = (c.priority, host_rank, std::cmp::Reverse(seq));
                if best.as_ref().is_none_or(|(_, k)| key > *k) {
                    best = Some((c.route, key));
                }
                if uniform {
                    // Buckets are visited in precedence order: the first hit is the answer.
                    *done = true;
                    return true;
                }
                false
            });
        };

        if !self.exact_hosts.is_empty() {
            if let Some(t) = self.exact_hosts.get(h) {
                consider(t, usize::MAX, &mut done);
            }
        }
        if !self.suffix_hosts.is_empty() {
            for (i, b) in h.bytes().enumerate() {
                if b == b'.' {
                    if let Some(t) = self.suffix_hosts.get(&h[i..]) {
                        consider(t, 1 + h.len() - i, &mut done);
                    }
                }
            }
        }
        consider(&self.any_host, 0, &mut done);
        best.map(|(route, _)| route)
    }
}

/// The upstream path for `path` (without query) under `rewrite`; `None` when unchanged.
pub fn rewrite_path(rewrite: &PathRewrite, path: &str) -> Option<String> {
    match rewrite {
        PathRewrite::None => None,
        PathRewrite::Strip(prefix) => {
            let rest = path.strip_prefix(prefix.as_str())?;
            Some(if rest.starts_with('/') {
                rest.to_string()
            } else {
                format!("/{rest}")
            })
        }
        PathRewrite::Replace { from, to } => {
            let rest = if from == "/" {
                path.strip_prefix('/')?
            } else {
                path.strip_prefix(from.as_str())?
            };
            let mut out = String::with_capacity(to.len() + rest.len() + 1);
            out.push_str(to);
            if !rest.is_empty() {
                if out.ends_with('/') && rest.starts_with('/') {
                    out.push_str(&rest[1..]);
                } else if !out.ends_with('/') && !rest.starts_with('/') {
                    out.push('/');
                    out.push_str(rest);
                } else {
                    out.push_str(rest);
                }
            }
            Some(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn router(yaml_routes: &str) -> (Router, Vec<Route>) {
        let text = format!(
            "listeners: [{{address: 127.0.0.1:1}}]\nupstreams: {{u: {{peers: [127.0.0.1:2]}}}}\nroutes:\n{yaml_routes}"
        );
        let c = config::parse(&text).expect("valid config");
        (Router::new(&c.routing.routes), c.routing.routes)
    }

    fn find(
        r: &(Router, Vec<Route>),
        host: &str,
        method: &str,
        path: &str,
        hdrs: &[(&str, &str)],
    ) -> Option<String> {
        let mut headers = HeaderMap::new();
        for (k, v) in hdrs {
            headers.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        r.0.lookup(&RequestView {
            host,
            path,
            method: &method,
            headers: &headers,
        })
        .map(|i| r.1[i].name.clone())
    }

    #[test]
    fn precedence() {
        let r = router(
            "  - {name: root, match: {path_prefix: /}, upstream: u}\n  - {name: api, match: {path_prefix: /api}, upstream: u}\n  - {name: users, match: {path_prefix: /api/users}, upstream: u}\n  - {name: me, match: {path_exact: /api/users/me}, upstream: u}\n  - {name: host, match: {hosts: [a.example.com], path_prefix: /api}, upstream: u}\n  - {name: wild, match: {hosts: ['*.example.org'], path_prefix: /}, upstream: u}\n  - {name: post, match: {path_prefix: /api/users, methods: [POST]}, upstream: u}\n  - {name: v2, match: {path_prefix: /api/users, headers: {x-api-version: '2'}}, upstream: u}\n",
        );
        assert_eq!(
            find(&r, "x", "GET", "/api/users/7", &[]).as_deref(),
            Some("users")
        );
        assert_eq!(
            find(&r, "x", "GET", "/api/users", &[]).as_deref(),
            Some("users")
        );
        assert_eq!(
            find(&r, "x", "GET", "/api/usersX", &[]).as_deref(),
            Some("api")
        );
        assert_eq!(
            find(&r, "x", "GET", "/api/users/me", &[]).as_deref(),
            Some("me")
        );
        assert_eq!(find(&r, "x", "GET", "/other", &[]).as_deref(), Some("root"));
        assert_eq!(
            find(&r, "a.example.com", "GET", "/api/users/7", &[]).as_deref(),
            Some("host")
        );
        assert_eq!(
            find(&r, "a.example.com", "GET", "/nope", &[]).as_deref(),
            Some("root")
        );
        assert_eq!(
            find(&r, "x.y.example.org", "GET", "/api/users", &[]).as_deref(),
            Some("wild")
        );
        assert_eq!(
            find(&r, "example.org", "GET", "/api/users", &[]).as_deref(),
            Some("users")
        );
        assert_eq!(
            find(&r, "x", "POST", "/api/users/1", &[]).as_deref(),
            Some("post")
        );
        assert_eq!(
            find(&r, "x", "GET", "/api/users/1", &[("x-api-version", "2")]).as_deref(),
            Some("v2")
        );
    }

    #[test]
    fn explicit_priority_overrides() {
        let r = router(
            "  - {name: long, match: {path_prefix: /a/b}, upstream: u}\n  - {name: short, match: {path_prefix: /a}, upstream: u, priority: 10}\n  - {name: hosted, match: {hosts: [h.com], path_prefix: /a/b}, upstream: u}\n",
        );
        assert_eq!(
            find(&r, "x", "GET", "/a/b/c", &[]).as_deref(),
            Some("short")
        );
        assert_eq!(
            find(&r, "h.com", "GET", "/a/b/c", &[]).as_deref(),
            Some("short")
        );
    }

    #[test]
    fn head_follows_get() {
        let r = router(
            "  - {name: read, match: {path_prefix: /s, methods: [GET]}, upstream: u}\n  - {name: write, match: {path_prefix: /s, methods: [POST]}, upstream: u}\n  - {name: rest, match: {}, upstream: u}\n",
        );
        assert_eq!(find(&r, "x", "HEAD", "/s/1", &[]).as_deref(), Some("read"));
        assert_eq!(find(&r, "x", "POST", "/s/1", &[]).as_deref(), Some("write"));
        assert_eq!(find(&r, "x", "PUT", "/s/1", &[]).as_deref(), Some("rest"));
    }

    #[test]
    fn no_route() {
        let r =
            router("  - {name: api, match: {path_prefix: /api, methods: [GET]}, upstream: u}\n");
        assert_eq!(find(&r, "x", "GET", "/", &[]), None);
        assert_eq!(find(&r, "x", "DELETE", "/api", &[]), None);
    }

    #[test]
    fn ten_thousand_routes() {
        let mut text = String::new();
        for i in 0..10_000 {
            text.push_str(&format!(
                "  - {{name: r{i}, match: {{path_prefix: /svc{i}/api}}, upstream: u}}\n"
            ));
        }
        text.push_str("  - {name: host, match: {hosts: [h9999.example.com], path_prefix: /svc9999}, upstream: u}\n");
        let r = router(&text);
        assert_eq!(
            find(&r, "x", "GET", "/svc0/api/users/1", &[]).as_deref(),
            Some("r0")
        );
        assert_eq!(
            find(&r, "x", "GET", "/svc9999/api", &[]).as_deref(),
            Some("r9999")
        );
        assert_eq!(
            find(&r, "h9999.example.com", "GET", "/svc9999/api", &[]).as_deref(),
            Some("host")
        );
        assert_eq!(find(&r, "x", "GET", "/svc10000/api", &[]), None);
    }

    #[test]
    fn rewrites() {
        assert_eq!(
            rewrite_path(&PathRewrite::Strip("/api".into()), "/api/users/7").as_deref(),
            Some("/users/7")
        );
        assert_eq!(
            rewrite_path(&PathRewrite::Strip("/api".into()), "/api").as_deref(),
            Some("/")
        );
        let rep = PathRewrite::Replace {
            from: "/old".into(),
            to: "/new/v2".into(),
        };
        assert_eq!(rewrite_path(&rep, "/old/x").as_deref(), Some("/new/v2/x"));
        assert_eq!(rewrite_path(&rep, "/old").as_deref(), Some("/new/v2"));
    }
}
