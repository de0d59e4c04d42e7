//! The command line and configuration errors: every class of mistake is reported with its
//! place in the file, all at once, and nothing starts.

use crate::common::*;
use std::process::{Command, Output};

const GOOD_TAIL: &str = "upstreams:\n  users: {peers: [127.0.0.1:8001]}\n  products: {peers: [127.0.0.1:8003]}\nroutes:\n  - {name: users, match: {path_prefix: /api/users}, upstream: users}\n";

fn check(text: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.yaml");
    std::fs::write(&path, text).unwrap();
    let out: Output = Command::new(bin())
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A configuration file in a new directory, written by `make` from the directory's path.
fn config_file(make: impl FnOnce(&str) -> String) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.yaml");
    std::fs::write(&path, make(&dir.path().display().to_string())).unwrap();
    (dir, path)
}

fn fails_with(text: &str, expected: &[&str]) {
    let (ok, _, err) = check(text);
    assert!(!ok, "accepted:\n{text}");
    for e in expected {
        assert!(err.contains(e), "missing {e:?} in:\n{err}");
    }
}

#[test]
fn shipped_configurations_check_without_a_warning() {
    for file in [
        "conf/tollgate.yaml",
        "conf/examples/policies.yaml",
        "conf/examples/api.yaml",
    ] {
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(bin())
            .args(["-t", "-c", &path])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.is_empty(), "{file}: {err}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "configuration OK"
        );
    }
}

#[test]
fn the_demo_configuration_shows_the_product() {
    // The shipped configuration, on free ports, with the demo's upstreams: a protected route, a
    // limited one, the access log and the admin listener with the status page and metrics.
    let users = Upstream::start("users");
    let products = Upstream::start("products");
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/tollgate.yaml"))
            .unwrap();
    let admin = closed_port().port();
    let body = shipped[shipped.find("upstreams:").unwrap()..]
        .replace("127.0.0.1:8001", &users.addr.to_string())
        .replace("      - { address: 127.0.0.1:8002, weight: 2 }\n", "")
        .replace("127.0.0.1:8003", &products.addr.to_string())
        .replace("127.0.0.1:9901", &format!("127.0.0.1:{admin}"));
    let gw = Gateway::start(&body);
    assert_eq!(gw.get("/api/products/1", &[]).status, 200);
    assert!(gw
        .get("/api/products/1", &[])
        .header("cache-status")
        .is_some_and(|v| v.starts_with("tollgate; hit")));
    assert_eq!(gw.get("/api/orders/1", &[]).status, 401);
    let ok = gw.get("/api/orders/1", &[("x-api-key", "demo-key-0001")]);
    assert_eq!(ok.status, 200);
    assert_eq!(products.last().header("x-consumer"), Some("demo"));
    let codes: Vec<u16> = (0..6).map(|_| gw.get("/api/search", &[]).status).collect();
    assert_eq!(codes, vec![200, 200, 200, 200, 200, 429]);
    let page = send_raw(
        admin,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<html"));
    let metrics = send_raw(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(metrics
        .text()
        .contains("tollgate_requests_total{code=\"429\""));
}

#[test]
fn version_and_help() {
    let out = Command::new(bin()).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = Command::new(bin()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--conf", "--test", "--daemon", "--upgrade"] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

#[test]
fn malformed_yaml_reports_line_and_column() {
    fails_with(
        "listeners:\n  - address: 127.0.0.1:8080\nroutes: [\n  {name: x\n",
        &["invalid YAML", "line", "column"],
    );
}

#[test]
fn unknown_keys_are_errors() {
    fails_with(
        &format!("listeners: [{{address: 127.0.0.1:8080}}]\nthreds: 2\n{GOOD_TAIL}  - {{name: p, match: {{path_prefx: /p}}, upstream: products}}\n"),
        &[
            "threds: unknown key (did you mean \"threads\"?)",
            "routes[1].match.path_prefx: unknown key (did you mean \"path_prefix\"?)",
        ],
    );
}

#[test]
fn unknown_upstream_lists_the_known_ones() {
    fails_with(
        &format!("listeners: [{{address: 127.0.0.1:8080}}]\n{GOOD_TAIL}  - {{name: p, match: {{path_prefix: /p}}, upstream: user}}\n"),
        &["routes[1].upstream: unknown upstream \"user\" (known: users, products)"],
    );
}

#[test]
fn bad_durations_and_sizes() {
    fails_with(
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams:\n  a: {peers: [127.0.0.1:1], connect_timeout: 10, read_timeout: 5 parsecs}\nroutes:\n  - {name: r, match: {}, upstream: a, max_body_size: 1MB}\n",
        &[
            "upstreams.a.connect_timeout: duration 10 needs a unit",
            "upstreams.a.read_timeout: invalid duration unit",
            "routes[0].max_body_size: invalid size unit \"MB\"",
        ],
    );
}

#[test]
fn bad_addresses() {
    fails_with(
        "listeners: [{address: 'localhost'}]\nupstreams:\n  a: {peers: [127.0.0.1, {address: 127.0.0.1:2, weight: 0}]}\nroutes:\n  - {name: r, match: {}, upstream: a}\n",
        &[
            "listeners[0].address: \"localhost\" is not an IP address and port",
            "upstreams.a.peers[0]: \"127.0.0.1\" needs a port",
            "upstreams.a.peers[1].weight: must be at least 1",
        ],
    );
}

#[test]
fn missing_sections() {
    fails_with(
        "threads: 1\n",
        &[
            "listeners: is required",
            "upstreams: is required",
            "routes: is required",
        ],
    );
}

#[test]
fn duplicate_and_shadowed_routes() {
    fails_with(
        &format!("listeners: [{{address: 127.0.0.1:8080}}]\n{GOOD_TAIL}  - {{name: users, match: {{path_prefix: /other}}, upstream: users}}\n  - {{name: dup, match: {{path_prefix: /api/users}}, upstream: products}}\n"),
        &[
            "routes[1].name: route name \"users\" is already used by routes[0]",
            "routes[2].match: matches exactly what routes[0] matches",
        ],
    );
}

#[test]
fn bad_policy_values() {
    fails_with(
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams:\n  a: {peers: [127.0.0.1:1], balance: fastest}\n  b: {peers: [127.0.0.1:2], balance: consistent_hash, hash_key: 'ip'}\n  c:\n    peers: [127.0.0.1:3]\n    health_check: {kind: tcp, path: /health, interval: 1s, timeout: 2s, unhealthy_after: 0}\nroutes:\n  - {name: r, match: {}, upstream: a}\n",
        &[
            "upstreams.a.balance: unknown variant `fastest`",
            "upstreams.b.hash_key: \"ip\" is not a hash key",
            "upstreams.c.health_check.path: applies only to `kind: http`",
            "upstreams.c.health_check.timeout: must not be longer than the interval",
            "upstreams.c.health_check.unhealthy_after: must be at least 1",
        ],
    );
}

#[test]
fn bad_route_shapes() {
    fails_with(
        &format!("listeners: [{{address: 127.0.0.1:8080}}]\n{GOOD_TAIL}  - {{name: a, match: {{path_prefix: /a, path_exact: /a/b}}, upstream: users}}\n  - {{name: b, match: {{path_prefix: /b}}, upstream: users, strip_prefix: /c}}\n  - name: c\n    match: {{path_prefix: /c, hosts: ['a:80'], methods: ['G T']}}\n    upstream: users\n    request_headers: {{set: {{'bad header': x, connection: close}}}}\n"),
        &[
            "routes[1].match: give one path condition, not path_prefix and path_exact",
            "routes[2].strip_prefix: \"/c\" is not a leading part of the matched path \"/b\"",
            "routes[3].match.hosts[0]: \"a:80\" is not a host name",
            "routes[3].match.methods[0]: \"G T\" is not an HTTP method",
            "routes[3].request_headers.set.bad header: is not a valid header name",
            "routes[3].request_headers.set.connection: is a hop-by-hop",
        ],
    );
}

#[test]
fn unsupported_version_and_bad_process_settings() {
    fails_with(
        &format!("version: 2\nthreads: 0\nwork_stealing: maybe\nlisteners: [{{address: 127.0.0.1:8080}}]\n{GOOD_TAIL}"),
        &["work_stealing: invalid type"],
    );
    fails_with(
        &format!("version: 2\nthreads: 0\nlisteners: [{{address: 127.0.0.1:8080}}]\n{GOOD_TAIL}"),
        &[
            "version: unsupported configuration version 2",
            "threads: must be at least 1",
        ],
    );
}

#[test]
fn an_invalid_file_never_starts_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port().port();
    let path = dir.path().join("t.yaml");
    std::fs::write(
        &path,
        format!("listeners: [{{address: 127.0.0.1:{port}}}]\nupstreams: {{a: {{peers: [127.0.0.1:1]}}}}\nroutes: [{{name: r, match: {{}}, upstream: b}}]\n"),
    )
    .unwrap();
    let out = Command::new(bin()).arg("-c").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 problem found"), "{err}");
    assert!(
        err.contains("routes[0].upstream: unknown upstream \"b\" (known: a)"),
        "{err}"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn bad_policies() {
    fails_with(
        "listeners: [{address: 127.0.0.1:8080}]\nconsumers:\n  - {name: alice, api_keys: [short, 'sha256:abc']}\n  - {name: bob, api_keys: [shared-key-1]}\n  - {name: eve, api_keys: [shared-key-1]}\nupstreams: {a: {peers: [127.0.0.1:1]}}\nroutes:\n  - {name: r, match: {}, upstream: a, allow_groups: [staff], ip_allow: [10.0.0.0/33]}\n  - {name: s, match: {path_prefix: /s}, upstream: a, auth: [api_key], allow_consumers: [mallory]}\n",
        &[
            "consumers[0].api_keys[0]: an API key must be at least 8 characters",
            "consumers[0].api_keys[1]: a sha256: key must be 64 hexadecimal digits",
            "consumers[2].api_keys[0]: this key is already given to consumer \"bob\"",
            "routes[0].auth: allow_groups and allow_consumers need `auth`",
            "routes[0].ip_allow[0]: \"10.0.0.0/33\" is not an address or CIDR range",
            "routes[1].allow_consumers[0]: unknown consumer \"mallory\"",
        ],
    );
}

#[test]
fn bad_basic_auth() {
    fails_with(
        "listeners: [{address: 127.0.0.1:8080}]\nconsumers:\n  - {name: a, basic_auth: {username: 'x:y', password_hash: plain}}\n  - {name: b, basic_auth: {username: bob, password_hash: '$2b$04$fNxqLUdHZy.QQuffhwIRPe6wM/WYsmue4ZCApHEozTsjWQe/QUmrS'}}\n  - {name: c, basic_auth: {username: bob, password_hash: '$2b$04$fNxqLUdHZy.QQuffhwIRPe6wM/WYsmue4ZCApHEozTsjWQe/QUmrS'}}\nupstreams: {a: {peers: [127.0.0.1:1]}}\nroutes:\n  - {name: r, match: {}, upstream: a, auth: [basic, oauth]}\n",
        &[
            "consumers[0].basic_auth.username: must be non-empty and contain no ':'",
            "consumers[0].basic_auth.password_hash: is not a bcrypt hash",
            "consumers[2].basic_auth.username: user name \"bob\" is already used",
            "routes[0].auth[1]: unknown variant `oauth`",
        ],
    );
}

#[test]
fn bad_jwt_issuers() {
    let fix = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    fails_with(
        &format!("listeners: [{{address: 127.0.0.1:8080}}]\njwt:\n  - {{issuer: a, algorithms: [none, RS256], public_key_file: {fix}/rsa-public.pem}}\n  - {{issuer: b, algorithms: [HS256], public_key_file: {fix}/rsa-public.pem}}\n  - {{issuer: c, algorithms: [HS256], secret_env: TOLLGATE_TEST_UNSET_VARIABLE}}\n  - {{issuer: d, algorithms: [RS256], public_key_file: /nonexistent/key.pem, jwks_file: x.json}}\n  - {{issuer: e, algorithms: [RS256], public_key_file: /nonexistent/key.pem}}\nupstreams: {{a: {{peers: [127.0.0.1:1]}}}}\nroutes:\n  - {{name: r, match: {{}}, upstream: a, auth: [jwt]}}\n"),
        &[
            "jwt[0].algorithms[0]: \"none\" is not a supported algorithm",
            "jwt[1].algorithms: none of the algorithms fits an RSA key",
            "jwt[2].secret_env: environment variable TOLLGATE_TEST_UNSET_VARIABLE is not set",
            "jwt[3]: give exactly one of public_key_file, jwks_file, jwks_url, discovery_url or secret_env",
            "jwt[4].public_key_file: cannot read /nonexistent/key.pem",
        ],
    );
    fails_with(
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {peers: [127.0.0.1:1]}}\nroutes:\n  - {name: r, match: {}, upstream: a, auth: [jwt]}\n",
        &["routes[0].auth: jwt needs at least one issuer"],
    );
}

#[test]
fn bad_limits() {
    fails_with(
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {peers: [127.0.0.1:1]}}\nroutes:\n  - name: r\n    match: {}\n    upstream: a\n    rate_limit:\n      - {requests: 10, per: 1s, key: consumer}\n      - {requests: 0, per: 500ms, key: client_ip}\n      - {requests: 5, per: 1m, key: route, scope: global}\n      - {requests: 5, per: 1m, key: user}\n    concurrency_limit: {max: 0, key: route}\n",
        &[
            "routes[0].rate_limit[0].key: `key: consumer` needs `auth` on the route",
            "routes[0].rate_limit[1].requests: must be at least 1",
            "routes[0].rate_limit[1].per: must be between 1s and 24h",
            "routes[0].rate_limit[2].scope: global limits are counted in Redis",
            "routes[0].rate_limit[3].key: \"user\" is not a limit key",
            "routes[0].concurrency_limit.max: must be at least 1",
        ],
    );
    fails_with(
        "listeners: [{address: 127.0.0.1:8080}]\nredis: {url: 'http://nope', timeout: 0s}\nupstreams: {a: {peers: [127.0.0.1:1]}}\nroutes: [{name: r, match: {}, upstream: a}]\n",
        &["redis.url: \"http://nope\" is not a Redis URL"],
    );
    fails_with(
        "listeners: [{address: 127.0.0.1:8080}]\nredis: {url: 'redis://127.0.0.1:6379', timeout: 0s}\nupstreams: {a: {peers: [127.0.0.1:1]}}\nroutes: [{name: r, match: {}, upstream: a}]\n",
        &["redis.timeout: must be greater than zero and at most 5s"],
    );
}

#[test]
fn bad_cache_and_admin() {
    fails_with(
        "listeners: [{address: 127.0.0.1:8080}]\ncache: {max_size: 512KiB, max_object_size: 32MiB}\nadmin: {address: 127.0.0.1:8080, token_env: TOLLGATE_TEST_UNSET_TOKEN}\nupstreams: {a: {peers: [127.0.0.1:1]}}\nroutes:\n  - {name: r, match: {}, upstream: a, cache: {ttl: 10s, key: [path, cookie], methods: [POST]}}\n  - {name: s, match: {path_prefix: /s}, upstream: a, cache: {key: [consumer]}}\n  - {name: t, match: {path_prefix: /t}, upstream: a, cache: {ttl: 10}}\n",
        &[
            "cache.max_size: must be at least 1MiB",
            "cache.max_object_size: must be between 1 byte and 16MiB",
            "admin.address: must not share a port with a traffic listener",
            "admin.token_env: environment variable TOLLGATE_TEST_UNSET_TOKEN is not set",
            "routes[2].cache.ttl: duration 10 needs a unit",
            "routes[0].cache.key[1]: \"cookie\" is not a cache key part",
            "routes[0].cache.methods[0]: \"POST\" cannot be cached",
            "routes[1].cache.key[0]: `consumer` needs `auth` on the route",
        ],
    );
}

#[test]
fn a_taken_admin_port_stops_the_start_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.yaml");
    let traffic = closed_port().port();
    std::fs::write(
        &path,
        format!("pid_file: {d}/p\nupgrade_sock: {d}/s\nlisteners: [{{address: 127.0.0.1:{traffic}}}]\nadmin: {{address: 127.0.0.1:{port}}}\nupstreams: {{a: {{peers: [127.0.0.1:1]}}}}\nroutes: [{{name: r, match: {{}}, upstream: a}}]\n", d = dir.path().display()),
    )
    .unwrap();
    let out = Command::new(bin()).arg("-c").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot listen on the admin address 127.0.0.1:{port}"
        )),
        "{err}"
    );
}

#[test]
fn a_taken_traffic_port_exits_at_once_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (_dir, path) = config_file(|d| {
        format!("pid_file: {d}/p\nupgrade_sock: {d}/s\nlisteners: [{{address: 127.0.0.1:{port}}}]\nupstreams: {{a: {{peers: [127.0.0.1:1]}}}}\nroutes: [{{name: r, match: {{}}, upstream: a}}]\n")
    });
    let started = std::time::Instant::now();
    let out = Command::new(bin()).arg("-c").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}: ")),
        "{err}"
    );
    assert!(
        !err.contains("serving") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn two_gateways_never_share_an_admin_port() {
    let admin = closed_port().port();
    let first = Gateway::start(&format!(
        "admin: {{address: 127.0.0.1:{admin}}}\nupstreams: {{a: {{peers: [127.0.0.1:1]}}}}\nroutes: [{{name: r, match: {{}}, upstream: a}}]\n"
    ));
    // The first says it serves once its listener accepts.
    assert!(wait_until(std::time::Duration::from_secs(5), || first
        .log()
        .contains("serving 1 route(s) on 127.0.0.1:")));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.yaml");
    let traffic = closed_port().port();
    std::fs::write(
        &path,
        format!("pid_file: {d}/p\nupgrade_sock: {d}/s\nlisteners: [{{address: 127.0.0.1:{traffic}}}]\nadmin: {{address: 127.0.0.1:{admin}}}\nupstreams: {{a: {{peers: [127.0.0.1:1]}}}}\nroutes: [{{name: r, match: {{}}, upstream: a}}]\n", d = dir.path().display()),
    )
    .unwrap();
    let out = Command::new(bin()).arg("-c").arg(&path).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "cannot listen on the admin address 127.0.0.1:{admin}"
        )),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn signals_reload_reopen_and_quit_the_running_instance() {
    let up = Upstream::start("a");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    let access_log = format!("access_log: {{path: {}}}\n", log.display());
    let mut gw = Gateway::start(&format!(
        "{access_log}upstreams: {{a: {{peers: [\"{}\"]}}}}\nroutes: [{{name: r, match: {{path_prefix: /r}}, upstream: a}}]\n",
        up.addr
    ));
    let conf = gw.dir.path().join("tollgate.yaml");
    let dir = gw.dir.path().to_path_buf();
    let signal = |which: &str| {
        let out = Command::new(bin())
            .args(["-s", which, "-c"])
            .arg(&conf)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(gw.get("/r/1", &[]).status, 200);
    assert!(wait_until(std::time::Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("/r/1")
    }));
    // logrotate moves the file away and says reopen: new lines go to a new file.
    let rotated = logs.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    assert!(signal("reopen").starts_with(&format!("sent SIGUSR1 to process {}", gw.pid())));
    assert!(wait_until(std::time::Duration::from_secs(5), || gw
        .log()
        .contains("reopening the access log")));
    assert_eq!(gw.get("/r/2", &[]).status, 200);
    assert!(wait_until(std::time::Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("/r/2")
    }));
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("/r/1") && !old.contains("/r/2"), "{old}");
    // reload: a new route serves.
    gw.rewrite(&format!(
        "{access_log}upstreams: {{a: {{peers: [\"{}\"]}}}}\nroutes: [{{name: r, match: {{path_prefix: /r}}, upstream: a}}, {{name: n, match: {{path_prefix: /n}}, upstream: a}}]\n",
        up.addr
    ));
    assert_eq!(gw.get("/n", &[]).status, 404);
    assert!(signal("reload").contains("sent SIGHUP"));
    assert!(wait_until(std::time::Duration::from_secs(5), || gw
        .get("/n", &[])
        .status
        == 200));
    // quit: drains and exits cleanly.
    assert!(signal("quit").contains("sent SIGTERM"));
    let status = gw.wait_exit(std::time::Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

#[test]
fn signalling_without_a_running_instance_says_so() {
    let (_dir, path) = config_file(|d| {
        format!("pid_file: {d}/none.pid\nlisteners: [{{address: 127.0.0.1:1}}]\nupstreams: {{a: {{peers: [127.0.0.1:1]}}}}\nroutes: [{{name: r, match: {{}}, upstream: a}}]\n")
    });
    let out = Command::new(bin())
        .args(["-s", "reload", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no pid"));
}

#[test]
fn checking_a_file_needs_no_secrets_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.yaml");
    std::fs::write(
        &path,
        "listeners: [{address: 127.0.0.1:1}]\nadmin: {token_env: TOLLGATE_TEST_NO_SUCH_TOKEN}\njwt: [{issuer: i, algorithms: [HS256], secret_env: TOLLGATE_TEST_NO_SUCH_SECRET, audience: api}]\nupstreams: {a: {peers: [127.0.0.1:1]}}\nroutes: [{name: r, match: {}, upstream: a, auth: [jwt]}]\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("warning: admin.token_env: environment variable TOLLGATE_TEST_NO_SUCH_TOKEN is not set: it must be set where the gateway runs"), "{err}");
    assert!(err.contains("jwt[0].secret_env"), "{err}");
    // Starting for real still refuses it.
    let out = Command::new(bin()).arg("-c").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_broken_pool_is_reported_once_not_at_every_route_using_it() {
    let (ok, _, err) = check(
        "listeners: [{address: 127.0.0.1:8080}]\nupstreams: {a: {peers: [], retries: 99}}\nroutes:\n  - {name: r, match: {path_prefix: /r}, upstream: a}\n  - {name: s, match: {path_prefix: /s}, upstream: a}\n",
    );
    assert!(!ok);
    assert!(
        err.contains("upstreams.a.peers: must list at least one peer"),
        "{err}"
    );
    assert!(!err.contains("unknown upstream"), "{err}");
}

#[test]
fn paths_the_process_writes_are_checked_before_it_starts() {
    let port = closed_port().port();
    let (_dir, path) = config_file(|d| {
        format!("pid_file: {d}/p\nupgrade_sock: {d}/s\nerror_log: {d}/missing/error.log\nlisteners: [{{address: 127.0.0.1:{port}}}]\nupstreams: {{a: {{peers: [127.0.0.1:1]}}}}\nroutes: [{{name: r, match: {{}}, upstream: a}}]\n")
    });
    let (ok, _, err) = check(&std::fs::read_to_string(&path).unwrap());
    assert!(!ok);
    assert!(
        err.contains("error_log: directory") && err.contains("missing does not exist"),
        "{err}"
    );
    // Daemonizing with it: one clear line and exit 2, never Pingora's panic.
    let out = Command::new(bin())
        .arg("-d")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error_log: directory"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn check_warns_about_routes_that_can_never_be_chosen() {
    let (ok, out, err) = check(
        "listeners: [{address: 127.0.0.1:1}]\nupstreams: {a: {peers: [127.0.0.1:2]}}\nroutes:\n  - {name: users, match: {path_template: '/users/{id}'}, upstream: a, priority: 1}\n  - {name: me, match: {path_exact: /users/me}, upstream: a}\n  - {name: all, match: {path_prefix: /}, upstream: a}\n",
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "configuration OK");
    assert!(
        err.contains("warning: routes[1].match: route \"me\" can never be chosen: routes[0] (\"users\") matches every request it matches and comes first"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn references_to_the_environment_and_files_fill_the_configuration() {
    let up = Upstream::start("a");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("header-secret");
    std::fs::write(&secret, "from-a-file\n").unwrap();
    let gw = Gateway::start_with_env(
        &format!(
            "upstreams:\n  a: {{peers: [\"${{UPSTREAM}}\"]}}\nroutes:\n  - {{name: r, match: {{}}, upstream: a, request_headers: {{set: {{x-secret: \"${{file:{}}}\", x-env: \"${{TEAM:-platform}}\"}}}}}}\n",
            secret.display()
        ),
        &[("UPSTREAM", &up.addr.to_string())],
    );
    assert_eq!(gw.get("/", &[]).status, 200);
    assert_eq!(up.last().header("x-secret"), Some("from-a-file"));
    assert_eq!(up.last().header("x-env"), Some("platform"));
    // Checking the file where the variable is not set: a warning naming it, no failure, and
    // no value of any other variable printed.
    let (ok, out, err) = check(
        "threads: ${TOLLGATE_TEST_UNSET_THREADS}\nlisteners: [{address: 127.0.0.1:1}]\nupstreams: {a: {peers: [\"${TOLLGATE_TEST_UNSET_HOST}:8080\"]}}\nroutes:\n  - {name: r, match: {}, upstream: a, request_headers: {set: {x-key: \"${TOLLGATE_TEST_UNSET_SECRET}\", x-home: \"${HOME}\"}}}\n",
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "configuration OK");
    assert!(
        err.contains("warning: routes[0].request_headers.set.x-key: environment variable TOLLGATE_TEST_UNSET_SECRET (in ${TOLLGATE_TEST_UNSET_SECRET}) is not set"),
        "{err}"
    );
    if let Ok(home) = std::env::var("HOME") {
        assert!(!err.contains(&home) && !out.contains(&home), "{err}");
    }
}
