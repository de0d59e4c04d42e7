//! The compiled route table. Routes are indexed by host (exact names, `*.` suffixes, any host)
//! and then by path (exact paths, a tree of template segments, prefixes on segment boundaries),
//! so a lookup costs a few hash probes per path segment whatever the number of routes; only
//! regular-expression paths are tried one by one. Method, header and query predicates are
//! checked only on the few candidates that share the host and path.
//!
//! Precedence, highest first: explicit `priority`; a named host over a `*.` wildcard (longer
//! suffix first) over any host; then the path: an exact path, a template (a literal segment
//! before a parameter before a `{*rest}`, from the left), a regular expression (in file order),
//! a prefix (longer first); more predicates (methods, headers, query parameters) over fewer;
//! earlier in the file over later.

mod table;

use crate::config::{HostPattern, PathMatch, PathRewrite, Route};
use http::{HeaderMap, Method};
use table::PathTable;

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
    query: Box<[(Box<str>, Box<str>)]>,
    /// Sort key within one bucket (higher first): priority, predicates, -index.
    rank: (i32, usize, std::cmp::Reverse<usize>),
}

impl Candidate {
    /// Whether the request's method and headers satisfy this route's predicates. A route for
    /// `GET` also takes `HEAD`, which servers answer with the `GET` handler: otherwise a `HEAD`
    /// would miss a protected `GET` route and still run its handler behind another route.
    /// With `conditions` false, only the method counts (a CORS preflight carries none of the
    /// headers or query of the request it asks about).
    fn accepts(&self, req: &RequestView, conditions: bool) -> bool {
        let method = req.method;
        (self.methods.is_empty()
            || self.methods.contains(method)
            || (*method == Method::HEAD && self.methods.contains(&Method::GET)))
            && (!conditions || self.conditions_met(req))
    }

    fn conditions_met(&self, req: &RequestView) -> bool {
        self.headers.iter().all(|(name, value)| {
            req.headers
                .get_all(name)
                .iter()
                .any(|v| v.as_bytes() == value.as_bytes())
        }) && self
            .query
            .iter()
            .all(|(name, value)| query_has(req.query, name, value))
    }
}

/// Whether the query string carries `name` with `value`, both percent-decoded (`+` is a space,
/// as forms encode it), and no other value for it: a repeated parameter with different values
/// is read differently by different servers, so it meets no condition.
fn query_has(query: Option<&str>, name: &str, value: &str) -> bool {
    let Some(q) = query else { return false };
    let mut found = false;
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        if k == name {
            if v != value {
                return false;
            }
            found = true;
        }
    }
    found
}

/// The route table, compiled once per configuration.
#[derive(Debug, Default)]
pub struct Router {
    exact_hosts: table::Map<PathTable>,
    suffix_hosts: table::Map<PathTable>,
    any_host: PathTable,
    /// With one priority everywhere the first match in precedence order wins and the walk stops.
    uniform_priority: bool,
    /// The parameter names of every route's query conditions.
    query_names: Vec<Box<str>>,
}

/// What a lookup needs from the request.
#[derive(Clone, Copy)]
pub struct RequestView<'a> {
    pub host: &'a str,
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// The raw query string, if any.
    pub query: Option<&'a str>,
}

impl Router {
    /// Compile the table from the validated routes.
    pub fn new(routes: &[Route]) -> Router {
        let mut r = Router {
            uniform_priority: routes.windows(2).all(|w| w[0].priority == w[1].priority),
            ..Router::default()
        };
        for (i, route) in routes.iter().enumerate() {
            for (name, _) in &route.query {
                if !r.query_names.iter().any(|n| **n == **name) {
                    r.query_names.push(name.as_str().into());
                }
            }
            let c = Candidate {
                route: i,
                priority: route.priority,
                methods: route.methods.clone().into_boxed_slice(),
                headers: route.headers.clone().into_boxed_slice(),
                query: route
                    .query
                    .iter()
                    .map(|(k, v)| (Box::from(k.as_str()), Box::from(v.as_str())))
                    .collect(),
                rank: (
                    route.priority,
                    route.headers.len()
                        + route.query.len()
                        + usize::from(!route.methods.is_empty()),
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
        r
    }

    /// Find the route for a request, if any; `req.host` is the canonical host (see
    /// [`crate::canonical`]).
    pub fn lookup(&self, req: &RequestView) -> Option<RouteId> {
        self.find(req, |c| c.accepts(req, true))
    }

    /// The route a CORS preflight asks about: `req.method` is the method the browser wants to
    /// use, and header and query conditions are not checked (the preflight carries none of the
    /// request's headers; the browser names them only). The route with the most conditions
    /// ranks first, as always; but a route with conditions and without CORS rules (`has_cors`)
    /// is passed over, since the browser's request may well not meet them, while one without
    /// conditions takes the request for sure and so answers for it.
    pub fn lookup_preflight(
        &self,
        req: &RequestView,
        has_cors: impl Fn(RouteId) -> bool,
    ) -> Option<RouteId> {
        self.find(req, |c| {
            c.accepts(req, false)
                && (has_cors(c.route) || (c.headers.is_empty() && c.query.is_empty()))
        })
    }

    fn find(&self, req: &RequestView, accepts: impl Fn(&Candidate) -> bool) -> Option<RouteId> {
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
                let Some(c) = bucket.iter().find(|c| accepts(c)) else {
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

impl Router {
    /// Whether `query` reads differently, for a parameter some route matches on, when `;` also
    /// separates parameters (as older servers read it) than when only `&` does (as the routes
    /// are matched): such a request could be routed on one reading and served on the other.
    pub fn ambiguous_query(&self, query: Option<&str>) -> bool {
        let Some(q) = query.filter(|q| !self.query_names.is_empty() && q.contains(';')) else {
            return false;
        };
        let values = |pieces: &mut dyn Iterator<Item = &str>, name: &str| {
            let mut v: Vec<String> = pieces
                .flat_map(|p| form_urlencoded::parse(p.as_bytes()))
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .collect();
            v.sort();
            v
        };
        self.query_names
            .iter()
            .any(|name| values(&mut std::iter::once(q), name) != values(&mut q.split(';'), name))
    }
}

/// The upstream path for `path` (without query), matched by `matched`, under `rewrite`; `None`
/// when unchanged.
pub fn rewrite_path(matched: &PathMatch, rewrite: &PathRewrite, path: &str) -> Option<String> {
    match rewrite {
        PathRewrite::None => None,
        PathRewrite::Template(t) => {
            let values = match matched {
                PathMatch::Template(m) => m.captures(path)?,
                PathMatch::Regex(m) => m.captures(path)?,
                _ => Vec::new(),
            };
            Some(t.render(&values))
        }
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
mod tests;
