//! Unit tests of [`super`]: how problems are reported.
use super::testing::*;

#[test]
fn every_problem_of_an_item_is_reported_at_its_place_in_the_file() {
    // Element 1 goes (it cannot do without its bad `requests`); element 2's problem is still
    // reported at its own index, no "missing field" follows a removed key, and the rest of
    // the item is checked too.
    let text = file("").replace(
        "routes: [{name: r, match: {}, upstream: a}]",
        "routes:\n  - name: r\n    match: {}\n    upstream: a\n    rate_limit:\n      - {requests: 1, per: 1s, key: route}\n      - {requests: many, per: 1s, key: route}\n      - {requests: 1, per: soon, key: route}\n    priority: high\n",
    );
    let e = errors(&text);
    assert_reported(
        &e,
        &[
            "routes[0].rate_limit[1].requests:",
            "routes[0].rate_limit[2].per:",
            "routes[0].priority:",
        ],
    );
    assert_eq!(e.len(), 3, "{e:#?}");
}

#[test]
fn a_bad_key_string_is_reported_where_it_is_and_its_item_checked_on() {
    // Typed keys that do not parse are reported by their validator: the elements after one
    // keep their places, and the route's other problems are all reported.
    let text = file("").replace(
        "routes: [{name: r, match: {}, upstream: a}]",
        "routes:\n  - name: r\n    match: {}\n    upstream: b\n    rate_limit:\n      - {requests: 5, per: 1m, key: nobody}\n      - {requests: 0, per: 1m, key: route}\n    cache: {key: [host, 'cookie:x', consumer]}\n",
    );
    let e = errors(&text);
    assert_eq!(
        e,
        vec![
            "routes[0].upstream: unknown upstream \"b\" (known: a)",
            "routes[0].rate_limit[0].key: \"nobody\" is not a limit key: use consumer, client_ip, route or header:NAME",
            "routes[0].rate_limit[1].requests: must be at least 1",
            "routes[0].cache.key[1]: \"cookie:x\" is not a cache key part: use host, path, query, header:NAME or consumer",
            "routes[0].cache.key[2]: `consumer` needs `auth` on the route: who the caller is must be known",
        ]
    );
}

#[test]
fn unknown_nested_keys_and_values_get_a_suggestion_too() {
    let e = errors(&file("").replace(
        "routes: [{name: r, match: {}, upstream: a}]",
        "routes: [{name: r, match: {path_prefx: /p}, upstream: a, zzz: 1}]",
    ));
    assert_reported(
        &e,
        &[
            "routes[0].match.path_prefx: unknown key (did you mean \"path_prefix\"?)",
            "routes[0].zzz: unknown key (known: name, match, upstream,",
        ],
    );
    let e = errors(&file("").replace(
        "upstreams: {a: {peers: [127.0.0.1:2]}}",
        "upstreams: {a: {peers: [127.0.0.1:2], balance: round_robbin}}",
    ));
    assert_reported(
        &e,
        &["upstreams.a.balance: unknown variant `round_robbin`, expected one of"],
    );
    assert!(e[0].ends_with("(did you mean \"round_robin\"?)"), "{e:?}");
}

#[test]
fn unknown_top_level_keys_get_a_suggestion() {
    let e = errors(&file("acess_log: {path: stdout}\n"));
    assert_eq!(
        e,
        vec!["acess_log: unknown key (did you mean \"access_log\"?)".to_string()]
    );
    let e = errors("- just a list\n");
    assert_eq!(
        e,
        vec!["the configuration must be a YAML mapping of keys to values".to_string()]
    );
}

#[test]
fn required_sections_are_named() {
    let e = errors("threads: 1\n");
    assert_reported(
        &e,
        &[
            "listeners: is required",
            "upstreams: is required",
            "routes: is required",
        ],
    );
}

#[test]
fn references_are_replaced_in_values_from_the_environment_and_files() {
    use super::super::loader::Fixed;
    let mut loader = Fixed::default().file("secrets/pass", "from-file\n");
    loader.vars.insert("THREADS".into(), "3".into());
    loader
        .vars
        .insert("KEY".into(), "s3cret: [not, yaml]".into());
    loader.vars.insert("HOST".into(), "api.example.com".into());
    let text = format!(
        "threads: ${{THREADS}}\n{LISTENER}{POOL}routes:\n  - {{name: r, match: {{hosts: [\"${{HOST}}\"]}}, upstream: a, request_headers: {{set: {{x-a: \"${{KEY}}\", x-b: \"${{file:secrets/pass}}\", x-c: \"$${{LITERAL}}\", x-d: \"pre-${{MISSING:-dflt}}-post\"}}}}}}\n"
    );
    let c = load_with(&text, &loader);
    assert_eq!(c.process.server.threads, 3);
    let r = &c.routing.routes[0];
    assert_eq!(
        r.hosts,
        [super::super::HostPattern::Exact("api.example.com".into())]
    );
    let values: Vec<&str> = r
        .request_headers
        .set
        .iter()
        .map(|(_, v)| v.to_str().unwrap_or(""))
        .collect();
    // A value never adds structure: the variable's YAML-looking text stays one string.
    assert_eq!(
        values,
        [
            "s3cret: [not, yaml]",
            "from-file",
            "${LITERAL}",
            "pre-dflt-post"
        ]
    );
    // The file's text, not the values, is what the snapshot keeps.
    assert!(!c.text.contains("s3cret"));

    let e = errors_with(
        &format!("{LISTENER}{POOL}routes:\n  - {{name: r, match: {{}}, upstream: a, request_headers: {{set: {{x-a: \"${{NOPE}}\", x-b: \"${{file:missing}}\", x-c: \"${{bad name}}\", x-d: \"${{open\"}}}}}}\n"),
        &loader,
    );
    assert_reported(
        &e,
        &[
            "routes[0].request_headers.set.x-a: environment variable NOPE (in ${NOPE}) is not set",
            "routes[0].request_headers.set.x-b: ${file:missing}: cannot read",
            "routes[0].request_headers.set.x-c: ${bad name}: a variable name uses letters",
            "routes[0].request_headers.set.x-d: a \"${\" without its \"}\"",
        ],
    );
    // A quoted reference stays a string whatever its value looks like; a bare one takes its
    // YAML type (threads above).
    loader.vars.insert("VER".into(), "2".into());
    let c = load_with(
        &format!("{LISTENER}{POOL}routes:\n  - {{name: r, match: {{headers: {{x-api-version: \"${{VER}}\"}}}}, upstream: a}}\n"),
        &loader,
    );
    assert_eq!(c.routing.routes[0].headers[0].1, "2");
    // A message never quotes a value a reference put in: it names the reference.
    loader
        .vars
        .insert("SECRET".into(), "s3cr3t\u{1}value".into());
    let e = errors_with(
        &format!("{LISTENER}{POOL}routes:\n  - {{name: r, match: {{}}, upstream: a, request_headers: {{set: {{x-a: \"Bearer ${{SECRET}}\"}}}}}}\n"),
        &loader,
    );
    assert!(!e.is_empty());
    assert!(e.iter().all(|m| !m.contains("s3cr3t")), "{e:?}");
    assert!(e.iter().any(|m| m.contains("${SECRET}")), "{e:?}");
    // A reference in a default is not read.
    let e = errors_with(
        &format!("{LISTENER}{POOL}routes:\n  - {{name: r, match: {{}}, upstream: a, request_headers: {{set: {{x-a: \"${{NOPE:-${{VER}}}}\"}}}}}}\n"),
        &loader,
    );
    assert_reported(
        &e,
        &["routes[0].request_headers.set.x-a: a reference inside a reference is not read"],
    );
    // Checking only: an unset variable is a warning, and the shape is still checked.
    loader.check_only = true;
    // What depends on an unset variable is left to its warning: no problem is reported.
    let checked = super::super::parse_reporting(
        &format!("threads: ${{NOPE_THREADS}}\n{LISTENER}upstreams: {{a: {{peers: [\"${{NOPE_HOST}}:8080\"]}}}}\n{ROUTE}"),
        &loader,
    );
    let warnings = match checked {
        Ok(c) => c.warnings,
        Err((errors, warnings)) => {
            assert!(errors.is_empty(), "{errors:?}");
            warnings
        }
    };
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    let c = load_with(
        &format!("{LISTENER}{POOL}routes:\n  - {{name: r, match: {{}}, upstream: a, request_headers: {{set: {{x-a: \"${{NOPE}}\"}}}}}}\n"),
        &loader,
    );
    assert!(c.warnings.iter().any(|w| w
        .to_string()
        .starts_with("routes[0].request_headers.set.x-a: environment variable NOPE")));
}
