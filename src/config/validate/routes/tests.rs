//! Unit tests of [`super`].
use super::super::super::loader::Fixed;
use super::super::super::{HostPattern, PathMatch, PathRewrite};
use super::super::testing::*;

fn errors(text: &str) -> Vec<String> {
    errors_with(text, &Fixed::default())
}

fn routes(list: &str) -> String {
    format!("{LISTENER}{POOL}consumers: [{{name: alice, groups: [staff], api_keys: [alice-key-1]}}]\nroutes:\n{list}")
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
            .any(|m| m.starts_with("routes[1].match.path_exact:") && m.contains("write \"/api\"")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("routes[2].match.path_prefix:")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("routes[3].match.path_prefix:") && m.contains("encoded slash")),
        "{e:?}"
    );
    // With merging off, a double slash is a path of its own; with `keep`, %2F is too.
    crate::config::parse("listeners: [{address: 127.0.0.1:1}]\npath_normalization: {merge_slashes: false, escaped_slashes: keep}\nupstreams: {a: {peers: [127.0.0.1:2]}}\nroutes:\n  - {name: a, match: {path_prefix: /api//admin}, upstream: a}\n  - {name: d, match: {path_prefix: /a%2Fb}, upstream: a}\n").expect("valid");
}

#[test]
fn matches_rewrites_and_transforms() {
    let c = load_with(
        &routes("  - {name: r, match: {hosts: ['*.Example.org', api.test], path_prefix: /api/, methods: [get]}, upstream: a, strip_prefix: /api, request_headers: {set: {x-a: '1'}, remove: [x-b]}}\n  - {name: s, match: {path_exact: /v1/x}, upstream: a, rewrite: /v2}\n"),
        &Fixed::default(),
    );
    let r = &c.routing.routes[0];
    assert_eq!(
        r.hosts,
        vec![
            HostPattern::Exact("api.test".into()),
            HostPattern::Suffix(".example.org".into())
        ]
    );
    assert_eq!(r.path, PathMatch::Prefix("/api".into()));
    assert_eq!(r.methods, vec![http::Method::GET]);
    assert_eq!(r.rewrite, PathRewrite::Strip("/api".into()));
    assert_eq!(r.request_headers.set.len(), 1);
    assert_eq!(r.request_headers.remove.len(), 1);
    assert_eq!(
        c.routing.routes[1].rewrite,
        PathRewrite::Replace {
            from: "/v1/x".into(),
            to: "/v2".into()
        }
    );
}

#[test]
fn route_mistakes_are_reported_where_they_are() {
    let e = errors(&routes(
        "  - {name: 'bad name', match: {hosts: ['api.test:80'], path_prefix: /a, path_exact: /b, methods: ['G T'], headers: {'bad name': x}}, upstream: nope}\n  - {name: s, match: {path_prefix: /s}, upstream: a, strip_prefix: /t, response_headers: {set: {connection: close}}}\n  - {name: t, match: {}, upstream: a, rewrite: /x}\n  - {name: u, match: {path_prefix: /u}, upstream: a, allow_consumers: [bob], allow_groups: [staff]}\n  - {name: u, match: {path_prefix: /u}, upstream: a}\n",
    ));
    assert_reported(
        &e,
        &[
            "routes[0].name: route names are non-empty",
            "routes[0].match.hosts[0]: \"api.test:80\" is not a host name",
            "routes[0].match: give one path condition, not path_prefix and path_exact",
            "routes[0].match.methods[0]: \"G T\" is not an HTTP method",
            "routes[0].match.headers.bad name: is not a valid header name",
            "routes[0].upstream: unknown upstream \"nope\" (known: a)",
            "routes[1].strip_prefix: \"/t\" is not a leading part of the matched path \"/s\"",
            "routes[1].response_headers.set.connection: is a hop-by-hop or framing header",
            "routes[2].rewrite: needs match.path_prefix, path_exact, path_template or path_regex",
            "routes[3].allow_consumers[0]: unknown consumer \"bob\"",
            "routes[3].auth: allow_groups and allow_consumers need `auth`",
            "routes[4].name: route name \"u\" is already used by routes[3]",
        ],
    );
    let e = errors(&routes(
        "  - {name: a, match: {path_prefix: /x}, upstream: a}\n  - {name: b, match: {path_prefix: /x}, upstream: a}\n",
    ));
    assert_reported(
        &e,
        &["routes[1].match: matches exactly what routes[0] matches, with the same priority"],
    );
}

#[test]
fn access_rules() {
    let c = load_with(
        &routes("  - {name: r, match: {}, upstream: a, auth: [api_key, api_key, basic], allow_groups: [staff, nobody], ip_allow: [10.0.0.0/8, 192.0.2.1], ip_deny: [10.1.2.3/16]}\n"),
        &Fixed::default(),
    );
    let r = &c.routing.routes[0];
    assert_eq!(r.auth.len(), 2);
    assert_eq!(r.ip_allow.len(), 2);
    // A range is kept as the network it names.
    assert_eq!(r.ip_deny[0].to_string(), "10.1.0.0/16");
    assert!(c.warnings[0]
        .to_string()
        .starts_with("routes[0].allow_groups[1]: no consumer is in group \"nobody\""));
    assert_reported(
        &errors(&routes(
            "  - {name: r, match: {}, upstream: a, auth: [jwt], ip_allow: [10.0.0.0/33]}\n",
        )),
        &[
            "routes[0].auth: jwt needs at least one issuer",
            "routes[0].ip_allow[0]: \"10.0.0.0/33\" is not an address or CIDR range",
        ],
    );
}

#[test]
fn splits_sticky_keys_and_canaries() {
    let two = "upstreams: {a: {peers: [127.0.0.1:2]}, b: {peers: [127.0.0.1:3]}}\n";
    let c = load_with(
        &format!("{LISTENER}{two}routes:\n  - {{name: r, match: {{}}, upstreams: [{{pool: b, weight: 5}}, {{pool: a, weight: 95}}], sticky: \"cookie:sid\", canary: [{{header: x-canary, value: \"1\", pool: a}}]}}\n"),
        &Fixed::default(),
    );
    let r = &c.routing.routes[0];
    let split = r.split.clone().expect("a split");
    assert_eq!(r.upstream, 1, "the first pool listed");
    assert_eq!(split.pools, [(1, 5), (0, 95)]);
    assert_eq!(
        split.sticky,
        Some(crate::config::StickyKey::Cookie("sid".into()))
    );
    assert_eq!(split.canary[0].pool, 0);
    let plain = load_with(
        &format!("{LISTENER}{two}routes:\n  - {{name: r, match: {{}}, upstream: b}}\n"),
        &Fixed::default(),
    );
    assert!(plain.routing.routes[0].split.is_none());
    let e = errors_with(
        &format!("{LISTENER}{two}routes:\n  - {{name: r, match: {{}}, upstream: a, upstreams: [{{pool: b}}]}}\n  - {{name: s, match: {{}}}}\n  - {{name: t, match: {{}}, upstreams: [{{pool: a, weight: 0}}, {{pool: c}}, {{pool: a, weight: 2000}}], sticky: session}}\n  - {{name: u, match: {{}}, upstream: a, canary: [{{value: x, pool: b}}, {{header: x-c, value: \"1\", pool: z}}]}}\n"),
        &Fixed::default(),
    );
    assert_reported(
        &e,
        &[
            "routes[0]: give `upstream` (one pool) or `upstreams` (several by weight), not both",
            "routes[1]: missing `upstream` (one pool) or `upstreams`",
            "routes[2].upstreams[1].pool: unknown upstream \"c\"",
            "routes[2].upstreams[2].weight: must be between 0 and 1000",
            "routes[2].upstreams[2].pool: is listed twice",
            "routes[2].sticky: \"session\" is not a sticky key",
            "routes[3].canary[0]: give `header` or `cookie`",
            "routes[3].canary[1].pool: unknown upstream \"z\"",
        ],
    );
}

#[test]
fn mirrors() {
    let two = "upstreams: {a: {peers: [127.0.0.1:2]}, shadow: {peers: [127.0.0.1:3]}}\n";
    let c = load_with(
        &format!("{LISTENER}{two}routes:\n  - {{name: r, match: {{}}, upstream: a, mirror: {{pool: shadow, percent: 12.5}}}}\n"),
        &Fixed::default(),
    );
    let m = c.routing.routes[0].mirror.clone().expect("a mirror");
    assert_eq!((m.pool, m.percent, m.max_body_size), (1, 12.5, 64 * 1024));
    assert_reported(
        &errors_with(
            &format!("{LISTENER}{two}routes:\n  - {{name: r, match: {{}}, upstream: a, mirror: {{pool: nowhere}}}}\n  - {{name: s, match: {{}}, upstream: a, mirror: {{pool: shadow, percent: 150}}}}\n  - {{name: t, match: {{}}, upstream: a, mirror: {{pool: shadow, max_body_size: 1GiB}}}}\n"),
            &Fixed::default(),
        ),
        &[
            "routes[0].mirror.pool: unknown upstream \"nowhere\"",
            "routes[1].mirror.percent: must be between 0 and 100",
            "routes[2].mirror.max_body_size: must be at most 16MiB",
        ],
    );
}

#[test]
fn templates_regexes_and_their_rewrites() {
    let c = load_with(
        &routes("  - {name: t, match: {path_template: '/users/{id}/orders'}, upstream: a, rewrite: '/v2/customers/{id}/orders'}\n  - {name: r, match: {path_regex: '/items/(?P<id>[0-9]+)'}, upstream: a, rewrite: '/catalog/{id}'}\n  - {name: q, match: {path_prefix: /q, query: {v: '2'}}, upstream: a}\n"),
        &Fixed::default(),
    );
    let r = &c.routing.routes;
    assert!(matches!(&r[0].path, PathMatch::Template(t) if t.source == "/users/{id}/orders"));
    assert!(matches!(&r[0].rewrite, PathRewrite::Template(_)));
    assert!(matches!(&r[1].path, PathMatch::Regex(x) if x.source == "/items/(?P<id>[0-9]+)"));
    assert_eq!(r[2].query, vec![("v".to_string(), "2".to_string())]);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    let e = errors(&routes(
        "  - {name: a, match: {path_template: '/users/x{id}'}, upstream: a}\n  - {name: b, match: {path_template: '/users/{id}', path_prefix: /users}, upstream: a}\n  - {name: c, match: {path_regex: '/items/(['}, upstream: a}\n  - {name: d, match: {path_template: '/u/{id}'}, upstream: a, rewrite: '/v/{uid}'}\n  - {name: e, match: {path_prefix: /e}, upstream: a, rewrite: '/v/{id}'}\n  - {name: f, match: {path_template: '/f/{id}'}, upstream: a, strip_prefix: /f}\n  - {name: g, match: {path_template: '/g/../{id}'}, upstream: a}\n  - {name: h, match: {path_prefix: /h, query: {'': x}}, upstream: a}\n  - {name: i, match: {path_regex: '/i/(?P<n>x)'}, upstream: a, rewrite: '/i/{n'}\n",
    ));
    assert_reported(
        &e,
        &[
            "routes[0].match.path_template: \"x{id}\": a parameter takes a whole segment",
            "routes[1].match: give one path condition, not path_prefix and path_template",
            "routes[2].match.path_regex: regex parse error",
            "routes[3].rewrite: {uid} is not a parameter of the match (it has id)",
            "routes[4].rewrite: {parameters} need match.path_template or match.path_regex",
            "routes[5].strip_prefix: a template or regex match is rewritten with rewrite:",
            "routes[6].match.path_template: \"/g/../{id}\" is not in canonical form",
            "routes[7].match.query: a parameter name is empty",
            "routes[8].rewrite: a '{' without its '}'",
        ],
    );
    assert_eq!(e.len(), 9, "{e:#?}");
}

fn warnings(list: &str) -> Vec<String> {
    load_with(&routes(list), &Fixed::default())
        .warnings
        .iter()
        .map(|w| w.to_string())
        .collect()
}

#[test]
fn shadowed_routes_are_warned_about() {
    let w = warnings(
        "  - {name: all, match: {path_prefix: /api}, upstream: a, priority: 5}\n  - {name: users, match: {path_prefix: /api/users}, upstream: a}\n  - {name: one, match: {path_template: '/v/{id}'}, upstream: a, priority: 1}\n  - {name: me, match: {path_exact: /v/me}, upstream: a}\n  - {name: same, match: {path_template: '/v/{uid}'}, upstream: a, priority: 1}\n  - {name: get, match: {path_prefix: /m, methods: [GET, POST]}, upstream: a}\n  - {name: get2, match: {path_prefix: /m, methods: [GET]}, upstream: a}\n  - {name: wild, match: {hosts: ['*.example.com'], path_prefix: /h}, upstream: a, priority: 1}\n  - {name: named, match: {hosts: [a.example.com], path_prefix: /h/x, headers: {x-a: b}}, upstream: a}\n  - {name: re, match: {path_regex: '/r/[a-z]+'}, upstream: a, priority: 1}\n  - {name: rx, match: {path_exact: /r/abc}, upstream: a}\n",
    );
    for (route, by) in [
        ("routes[1].match: route \"users\"", "routes[0] (\"all\")"),
        ("routes[3].match: route \"me\"", "routes[2] (\"one\")"),
        ("routes[4].match: route \"same\"", "routes[2] (\"one\")"),
        ("routes[6].match: route \"get2\"", "routes[5] (\"get\")"),
        ("routes[8].match: route \"named\"", "routes[7] (\"wild\")"),
        ("routes[10].match: route \"rx\"", "routes[9] (\"re\")"),
    ] {
        assert!(
            w.iter().any(|m| m.starts_with(route)
                && m.contains(by)
                && m.contains("can never be chosen")),
            "{route} by {by} not in {w:#?}"
        );
    }
    assert_eq!(w.len(), 6, "{w:#?}");

    // Routes that win at least some requests are not reported.
    let w = warnings(
        "  - {name: all, match: {path_prefix: /api}, upstream: a}\n  - {name: users, match: {path_prefix: /api/users}, upstream: a}\n  - {name: one, match: {path_template: '/v/{id}'}, upstream: a}\n  - {name: me, match: {path_exact: /v/me}, upstream: a}\n  - {name: get, match: {path_prefix: /m, methods: [GET]}, upstream: a}\n  - {name: any, match: {path_prefix: /m}, upstream: a}\n  - {name: named, match: {hosts: [a.example.com], path_prefix: /h}, upstream: a}\n  - {name: wild, match: {hosts: ['*.example.com'], path_prefix: /h}, upstream: a}\n  - {name: hi, match: {path_prefix: /p, headers: {x-a: b}}, upstream: a, priority: 3}\n  - {name: lo, match: {path_prefix: /p/q}, upstream: a}\n  - {name: re, match: {path_regex: '/r/[a-z]+'}, upstream: a, priority: 1}\n  - {name: rx, match: {path_exact: /r/a1}, upstream: a}\n  - {name: q1, match: {path_prefix: /q, query: {a: '1'}}, upstream: a}\n  - {name: q2, match: {path_prefix: /q, query: {a: '2'}}, upstream: a}\n  - {name: rest, match: {path_template: '/f/{*p}'}, upstream: a, priority: 1}\n  - {name: fslash, match: {path_exact: /f/}, upstream: a}\n",
    );
    assert!(w.is_empty(), "{w:#?}");
}

#[test]
fn cors_rules_are_checked() {
    let c = load_with(
        &routes("  - {name: c, match: {}, upstream: a, cors: {allow_origins: [\"https://App.example.com\", \"https://*.example.org:8443\"], allow_credentials: true, max_age: 10m, expose_headers: [x-request-id]}}\n"),
        &Fixed::default(),
    );
    let cors = c.routing.routes[0].cors.as_ref().expect("cors");
    assert_eq!(
        cors.allow_origins[0],
        super::super::super::OriginPattern::Exact("https://app.example.com".into())
    );
    assert!(cors.allow_credentials);
    assert_eq!(cors.allow_methods.len(), 6);
    assert_eq!(cors.allow_headers, None);
    assert_eq!(cors.max_age, Some(std::time::Duration::from_secs(600)));
    let e = errors(&routes(
        "  - {name: a, match: {}, upstream: a, cors: {allow_origins: [\"*\"], allow_credentials: true}}\n  - {name: b, match: {}, upstream: a, priority: 1, cors: {allow_origins: [\"app.example.com\", \"https://x.com/\"], allow_methods: [\"G T\"], allow_headers: [\"bad header\"], expose_headers: [\"x y\"]}}\n  - {name: c, match: {}, upstream: a, priority: 2, cors: {allow_origins: []}}\n  - {name: d, match: {}, upstream: a, priority: 3, cors: {allow_origins: [\"https://*.org\"], origins: [x]}}\n",
    ));
    assert_reported(
        &e,
        &[
            "routes[0].cors.allow_origins[0]: \"*\" with allow_credentials would let every web site read",
            "routes[1].cors.allow_origins[0]: \"app.example.com\" is not an origin",
            "routes[1].cors.allow_origins[1]: \"https://x.com/\" is not an origin",
            "routes[1].cors.allow_methods[0]: \"G T\" is not an HTTP method",
            "routes[1].cors.allow_headers[0]: \"bad header\" is not a header name",
            "routes[1].cors.expose_headers[0]: \"x y\" is not a header name",
            "routes[2].cors.allow_origins: list at least one origin",
            "routes[3].cors",
        ],
    );
}

#[test]
fn compression_rules_are_checked() {
    let c = load_with(
        &routes("  - {name: c, match: {}, upstream: a, compression: {}}\n"),
        &Fixed::default(),
    );
    let z = c.routing.routes[0]
        .compression
        .as_ref()
        .expect("compression");
    assert_eq!(z.codings.len(), 3);
    assert_eq!(z.min_size, 1024);
    assert!(z.content_types.iter().any(|t| t == "application/json"));
    let e = errors(&routes(
        "  - {name: c, match: {}, upstream: a, compression: {algorithms: [gzip, deflate, GZIP], content_types: [json, \"text/*\", \"a b/c\"]}}\n  - {name: d, match: {}, upstream: a, priority: 1, compression: {min_size: lots}}\n",
    ));
    assert_reported(
        &e,
        &[
            "routes[0].compression.algorithms[1]: \"deflate\" is not a coding",
            "routes[0].compression.algorithms[2]: \"GZIP\" is listed twice",
            "routes[0].compression.content_types[0]: \"json\" is not a media type",
            "routes[0].compression.content_types[2]: \"a b/c\" is not a media type",
            "routes[1].compression.min_size: invalid size \"lots\"",
        ],
    );
}

#[test]
fn forward_auth_rules_are_checked() {
    let c = load_with(
        &routes("  - {name: f, match: {}, upstream: a, forward_auth: {pool: a, path: /check, response_headers: [x-user-id], cache: 5s}}\n"),
        &Fixed::default(),
    );
    let f = c.routing.routes[0]
        .forward_auth
        .as_ref()
        .expect("forward_auth");
    assert_eq!(f.request_headers.len(), 2);
    assert_eq!(f.timeout, std::time::Duration::from_secs(1));
    assert!(!f.failure_allow);
    assert_eq!(f.cache, Some(std::time::Duration::from_secs(5)));
    let e = errors(&routes(
        "  - {name: f, match: {}, upstream: a, forward_auth: {pool: nope, path: check, request_headers: [\"a b\", host], response_headers: [connection], failure: maybe, timeout: 0s}}\n",
    ));
    assert_reported(
        &e,
        &[
            "routes[0].forward_auth.pool: unknown upstream \"nope\"",
            "routes[0].forward_auth.path: \"check\" must start with '/'",
            "routes[0].forward_auth.request_headers[0]: \"a b\" is not a header name",
            "routes[0].forward_auth.request_headers[0]: is Host or a hop-by-hop or framing header",
            "routes[0].forward_auth.response_headers[0]: is a hop-by-hop or framing header",
            "routes[0].forward_auth.failure: \"maybe\": write deny (the default) or allow",
            "routes[0].forward_auth.timeout: must be more than 0s",
        ],
    );
}
