//! Routes that can never be chosen: another route matches every request they match and comes
//! first by the router's precedence (see [`crate::router`]). Found by sufficient conditions
//! only, so a warning is always right, though not every dead route is found (a regular
//! expression is compared with exact paths and with itself, nothing else). Candidates come
//! from indexes on the path, so a table of 10,000 routes is checked in linear time.

use super::super::super::pattern::Segment;
use super::super::super::{segment_prefix, HostPattern, PathMatch, PathTemplate, Route};
use http::Method;
use std::collections::HashMap;

/// `(shadowed, by)` pairs of indexes into `routes`.
pub(super) fn shadowed(routes: &[Route]) -> Vec<(usize, usize)> {
    let mut prefixes: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut exacts: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut templates: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut loose_templates: Vec<usize> = Vec::new();
    let mut regexes: Vec<usize> = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        match &r.path {
            PathMatch::Any => prefixes.entry("/").or_default().push(i),
            PathMatch::Prefix(p) => prefixes.entry(p).or_default().push(i),
            PathMatch::Exact(p) => exacts.entry(p).or_default().push(i),
            PathMatch::Template(t) => match t.segments.first() {
                Some(Segment::Literal(l)) => templates.entry(l).or_default().push(i),
                _ => loose_templates.push(i),
            },
            PathMatch::Regex(_) => regexes.push(i),
        }
    }
    let mut out = Vec::new();
    let mut candidates = Vec::new();
    for (j, b) in routes.iter().enumerate() {
        candidates.clear();
        // Prefixes at or above the path B's matches all start with.
        let anchor = match &b.path {
            PathMatch::Any | PathMatch::Regex(_) => "/".to_string(),
            PathMatch::Prefix(p) | PathMatch::Exact(p) => p.clone(),
            PathMatch::Template(t) => t.literal_prefix(),
        };
        let mut p = anchor.trim_end_matches('/');
        while !p.is_empty() {
            candidates.extend(prefixes.get(p).into_iter().flatten());
            p = p.rfind('/').map_or("", |i| &p[..i]);
        }
        candidates.extend(prefixes.get("/").into_iter().flatten());
        let first_segment = match &b.path {
            PathMatch::Exact(p) => p[1..].split('/').next(),
            PathMatch::Template(t) => match t.segments.first() {
                Some(Segment::Literal(l)) => Some(l.as_str()),
                _ => None,
            },
            _ => None,
        };
        if let PathMatch::Exact(p) = &b.path {
            candidates.extend(exacts.get(p.as_str()).into_iter().flatten());
        }
        if let PathMatch::Exact(_) | PathMatch::Template(_) = &b.path {
            if let Some(s) = first_segment {
                candidates.extend(templates.get(s).into_iter().flatten());
            }
            candidates.extend(&loose_templates);
        }
        if let PathMatch::Exact(_) | PathMatch::Regex(_) = &b.path {
            candidates.extend(&regexes);
        }
        candidates.sort_unstable();
        candidates.dedup();
        if let Some(&i) = candidates
            .iter()
            .find(|&&i| i != j && takes_all(&routes[i], i, b, j))
        {
            out.push((j, i));
        }
    }
    out
}

/// Whether `a` (at `i`) is chosen for every request `b` (at `j`) matches.
fn takes_all(a: &Route, i: usize, b: &Route, j: usize) -> bool {
    if a.priority < b.priority {
        return false;
    }
    let higher = a.priority > b.priority;
    if !hosts_cover(&a.hosts, &b.hosts, higher) || !predicates_implied(a, b) {
        return false;
    }
    if higher {
        path_covers(&a.path, &b.path)
    } else {
        // Same priority and host level: only a route in the same place of the path order,
        // with as many conditions and earlier in the file, comes first.
        same_slot(&a.path, &b.path) && predicate_count(a) == predicate_count(b) && i < j
    }
}

/// Whether `a` matches every host `b` does, at the same level (`higher`: at any level).
fn hosts_cover(a: &[HostPattern], b: &[HostPattern], higher: bool) -> bool {
    if a.is_empty() {
        return higher || b.is_empty();
    }
    if b.is_empty() {
        return false;
    }
    b.iter().all(|h| {
        a.iter().any(|p| {
            p == h
                || higher
                    && match (p, h) {
                        (
                            HostPattern::Suffix(s),
                            HostPattern::Exact(n) | HostPattern::Suffix(n),
                        ) => n.ends_with(s.as_str()),
                        _ => false,
                    }
        })
    })
}

/// Whether every request meeting `b`'s method, header and query conditions meets `a`'s.
fn predicates_implied(a: &Route, b: &Route) -> bool {
    let methods = a.methods.is_empty()
        || !b.methods.is_empty()
            && b.methods.iter().all(|m| {
                a.methods.contains(m) || (*m == Method::HEAD && a.methods.contains(&Method::GET))
            });
    methods
        && a.headers.iter().all(|h| b.headers.contains(h))
        && a.query.iter().all(|q| b.query.contains(q))
}

fn predicate_count(r: &Route) -> usize {
    r.headers.len() + r.query.len() + usize::from(!r.methods.is_empty())
}

/// Whether the router keeps `a` and `b` in one bucket.
fn same_slot(a: &PathMatch, b: &PathMatch) -> bool {
    match (a, b) {
        (PathMatch::Any | PathMatch::Prefix(_), PathMatch::Any | PathMatch::Prefix(_)) => {
            prefix_of(a) == prefix_of(b)
        }
        (PathMatch::Exact(x), PathMatch::Exact(y)) => x == y,
        (PathMatch::Regex(x), PathMatch::Regex(y)) => x.source == y.source,
        (PathMatch::Template(x), PathMatch::Template(y)) => {
            x.rest.is_some() == y.rest.is_some()
                && x.segments.len() == y.segments.len()
                && x.segments.iter().zip(&y.segments).all(|s| match s {
                    (Segment::Literal(l), Segment::Literal(m)) => l == m,
                    (Segment::Param(_), Segment::Param(_)) => true,
                    _ => false,
                })
        }
        _ => false,
    }
}

fn prefix_of(p: &PathMatch) -> Option<&str> {
    match p {
        PathMatch::Any => Some("/"),
        PathMatch::Prefix(p) => Some(p),
        _ => None,
    }
}

/// Whether `a` matches every path `b` matches.
fn path_covers(a: &PathMatch, b: &PathMatch) -> bool {
    match (a, b) {
        (PathMatch::Any | PathMatch::Prefix(_), _) => {
            let p = prefix_of(a).unwrap_or("/");
            match b {
                _ if p == "/" => true,
                PathMatch::Prefix(q) | PathMatch::Exact(q) => segment_prefix(q, p),
                PathMatch::Template(t) => segment_prefix(&t.literal_prefix(), p),
                _ => false,
            }
        }
        (PathMatch::Exact(x), PathMatch::Exact(y)) => x == y,
        (PathMatch::Template(t), PathMatch::Exact(e)) => t.captures(e).is_some(),
        (PathMatch::Template(t), PathMatch::Template(u)) => generalizes(t, u),
        (PathMatch::Regex(r), PathMatch::Exact(e)) => r.regex.is_match(e),
        (PathMatch::Regex(x), PathMatch::Regex(y)) => x.source == y.source,
        _ => false,
    }
}

/// Whether template `t` matches every path template `u` matches.
fn generalizes(t: &PathTemplate, u: &PathTemplate) -> bool {
    let n = t.segments.len();
    if u.segments.len() < n || (t.rest.is_none() && (u.rest.is_some() || u.segments.len() != n)) {
        return false;
    }
    let heads = t.segments.iter().zip(&u.segments).all(|s| match s {
        (Segment::Param(_), Segment::Param(_)) => true,
        (Segment::Param(_), Segment::Literal(l)) => !l.is_empty(),
        (Segment::Literal(l), Segment::Literal(m)) => l == m,
        (Segment::Literal(_), Segment::Param(_)) => false,
    });
    if !heads || t.rest.is_none() {
        return heads;
    }
    // `{*rest}` needs a non-empty remainder.
    let tail = &u.segments[n..];
    u.rest.is_some()
        || tail.len() > 1
        || tail
            .first()
            .is_some_and(|s| !matches!(s, Segment::Literal(l) if l.is_empty()))
}
