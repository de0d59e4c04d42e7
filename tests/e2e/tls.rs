//! TLS termination: two certificates chosen by SNI (generated here), HTTP/2 through ALPN, the
//! upstream told the request came over HTTPS, a plain listener redirecting to HTTPS, and the
//! TLS version and SNI name in the access log. The client is curl.

use crate::common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn cert(dir: &Path, name: &str, hosts: &[&str]) -> (String, String) {
    let c =
        rcgen::generate_simple_self_signed(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.key_pair.serialize_pem()).unwrap();
    (cert.display().to_string(), key.display().to_string())
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn sni_http2_forwarded_proto_and_redirect() {
    let up = Upstream::start("a");
    let dir = tempfile::tempdir().unwrap();
    let (a_cert, a_key) = cert(dir.path(), "a", &["a.test"]);
    let (b_cert, b_key) = cert(dir.path(), "b", &["b.test", "*.b.test"]);
    let tls_port = closed_port().port();
    let plain_port = closed_port().port();
    let conf = dir.path().join("tollgate.yaml");
    std::fs::write(
        &conf,
        format!(
            "pid_file: {d}/t.pid\nupgrade_sock: {d}/t.sock\ngrace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 1\naccess_log: {{path: {d}/access.log}}\nlisteners:\n  - address: 127.0.0.1:{tls_port}\n    tls:\n      certificates:\n        - {{cert: {a_cert}, key: {a_key}}}\n        - {{cert: {b_cert}, key: {b_key}}}\n  - address: 127.0.0.1:{plain_port}\n    redirect_https: {tls_port}\nupstreams:\n  u: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: r, match: {{}}, upstream: u}}\n",
            up.addr,
            d = dir.path().display()
        ),
    )
    .unwrap();
    let _gw = Running(
        command()
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok()
    }));
    let resolve_a = format!("a.test:{tls_port}:127.0.0.1");
    let resolve_b = format!("x.b.test:{tls_port}:127.0.0.1");
    let url_a = format!("https://a.test:{tls_port}/hello?q=1");
    let url_b = format!("https://x.b.test:{tls_port}/hello");
    // Each name gets its own certificate: verification against that certificate alone passes.
    let (ok, out) = curl(&[
        "--cacert",
        &a_cert,
        "--resolve",
        &resolve_a,
        "-w",
        " %{http_code} %{http_version}",
        &url_a,
    ]);
    assert!(ok, "a.test: {out}");
    assert!(out.ends_with(" 200 2"), "HTTP/2 over ALPN expected: {out}");
    let (ok, out) = curl(&[
        "--cacert",
        &b_cert,
        "--resolve",
        &resolve_b,
        "-w",
        " %{http_code}",
        &url_b,
    ]);
    assert!(ok && out.ends_with(" 200"), "x.b.test (wildcard): {out}");
    // The wrong certificate for the name does not verify: the choice is real.
    let (ok, _) = curl(&["--cacert", &b_cert, "--resolve", &resolve_a, &url_a]);
    assert!(!ok, "a.test was served b's certificate");
    // HTTP/1.1 still works.
    let (ok, out) = curl(&[
        "--http1.1",
        "--cacert",
        &a_cert,
        "--resolve",
        &resolve_a,
        "-w",
        " %{http_version}",
        &url_a,
    ]);
    assert!(ok && out.ends_with(" 1.1"), "{out}");
    assert_eq!(up.last().header("x-forwarded-proto"), Some("https"));
    assert_eq!(up.last().url, "/hello?q=1");
    // The plain listener redirects, keeping host, path and query.
    let before = up.count();
    let (_, out) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "-H",
        "Host: a.test",
        &format!("http://127.0.0.1:{plain_port}/p/q?x=1"),
    ]);
    assert_eq!(out, format!("308 https://a.test:{tls_port}/p/q?x=1"));
    assert_eq!(
        up.count(),
        before,
        "a redirected request reached the upstream"
    );
    // A client that sends no SNI name (curl sends none for an address), and a request refused at
    // the door on TLS.
    let (ok, _) = curl(&[
        "-k",
        "--http1.1",
        &format!("https://127.0.0.1:{tls_port}/no-sni"),
    ]);
    assert!(ok);
    let (_, out) = curl(&[
        "-k",
        "--http1.1",
        "--resolve",
        &resolve_a,
        "-H",
        "Transfer-Encoding: gzip",
        "-w",
        " %{http_code}",
        &format!("https://a.test:{tls_port}/refused"),
    ]);
    assert!(out.ends_with(" 400"), "{out}");
    // The access log names the TLS version and the SNI name of each connection (the handshake
    // that failed above made no request).
    let log = dir.path().join("access.log");
    let mut lines = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            lines = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .collect();
            lines.len() >= 6
        }),
        "{lines:?}"
    );
    let tls_of = |path: &str| {
        let l = lines
            .iter()
            .find(|l| l["raw_path"] == path || l["path"] == path)
            .unwrap_or_else(|| panic!("no line for {path}: {lines:?}"));
        (l["tls_version"].clone(), l["tls_server_name"].clone())
    };
    let v13 = serde_json::json!("TLSv1.3");
    assert_eq!(tls_of("/hello"), (v13.clone(), serde_json::json!("a.test")));
    let wildcard = lines
        .iter()
        .filter(|l| l["host"] == "x.b.test")
        .map(|l| l["tls_server_name"].clone())
        .collect::<Vec<_>>();
    assert_eq!(wildcard, [serde_json::json!("x.b.test")], "{lines:?}");
    assert_eq!(tls_of("/no-sni"), (v13.clone(), serde_json::Value::Null));
    assert_eq!(tls_of("/refused"), (v13, serde_json::json!("a.test")));
    let plain = tls_of("/p/q");
    assert!(plain.0.is_null() && plain.1.is_null(), "{plain:?}");
}

#[test]
fn bad_tls_settings_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("t.yaml");
    std::fs::write(dir.path().join("junk.pem"), "not a certificate").unwrap();
    std::fs::write(
        &conf,
        format!(
            "listeners:\n  - address: 127.0.0.1:1\n    tls: {{cert: {d}/junk.pem, key: {d}/junk.pem}}\n  - address: 127.0.0.1:2\n    http2: true\n  - address: 127.0.0.1:3\n    tls: {{cert: {d}/missing.pem}}\nupstreams: {{u: {{peers: [127.0.0.1:9]}}, s: {{peers: [127.0.0.1:9], protocol: h2c, tls: {{sni: 'bad name', ca_file: {d}/missing-ca.pem}}}}, v: {{peers: [127.0.0.1:9], protocol: h2}}}}\nroutes: [{{name: r, match: {{}}, upstream: u}}]\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(bin())
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listeners[0].tls.certificates[0]:"), "{err}");
    assert!(
        err.contains("upstreams.s.protocol: h2c is cleartext HTTP/2"),
        "{err}"
    );
    assert!(
        err.contains("upstreams.v.protocol: h2 is HTTP/2 over TLS"),
        "{err}"
    );
    assert!(
        !err.contains("listeners[1]"),
        "h2c on a plain listener is valid: {err}"
    );
    assert!(
        err.contains("listeners[2].tls: give both cert and key"),
        "{err}"
    );
}

/// An HTTPS server for `backend.test` (certificate generated in `dir`) answering "secure" to
/// everything; returns its address, the certificate file and a count of `GET /probe` requests.
fn tls_backend(
    dir: &Path,
) -> (
    std::net::SocketAddr,
    String,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let (cert_path, key_path) = cert(dir, "backend", &["backend.test"]);
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(&cert_path)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key_path).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let probes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = probes.clone();
    let server = HttpServer::start(Some(std::sync::Arc::new(config)), move |seen| {
        if seen.url == "/probe" {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Reply::ok("secure")
    });
    let addr = server.addr;
    // Serves for the rest of the test binary's life, as the test's other servers do.
    std::mem::forget(server);
    (addr, cert_path, probes)
}

#[test]
fn upstreams_over_tls_are_verified_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, cert_path, _) = tls_backend(dir.path());
    let gw = Gateway::start(&format!(
        "upstreams:\n  good: {{peers: [\"{addr}\"], tls: {{sni: backend.test, ca_file: {cert_path}}}}}\n  wrong_name: {{peers: [\"{addr}\"], tls: {{sni: other.test, ca_file: {cert_path}}}, retries: 0}}\n  untrusted: {{peers: [\"{addr}\"], tls: {{sni: backend.test}}, retries: 0}}\n  unverified: {{peers: [\"{addr}\"], tls: {{sni: other.test, verify: false}}}}\nroutes:\n  - {{name: good, match: {{path_prefix: /good}}, upstream: good}}\n  - {{name: wrong, match: {{path_prefix: /wrong}}, upstream: wrong_name}}\n  - {{name: untrusted, match: {{path_prefix: /untrusted}}, upstream: untrusted}}\n  - {{name: unverified, match: {{path_prefix: /unverified}}, upstream: unverified}}\n"
    ));
    let r = gw.get("/good", &[]);
    assert_eq!((r.status, r.text().as_str()), (200, "secure"));
    // A certificate for another name, or from an untrusted issuer, is refused, also while a
    // verified connection to the same address is pooled.
    let w = gw.get("/wrong", &[]);
    assert_eq!(
        w.status,
        502,
        "wrong name accepted: {}\n{}",
        w.text(),
        gw.log()
    );
    assert_eq!(
        gw.get("/untrusted", &[]).status,
        502,
        "untrusted issuer accepted"
    );
    // Unless verification is turned off (with a warning at load).
    assert_eq!(gw.get("/unverified", &[]).status, 200);
    assert!(gw.log().contains("peer certificates are not verified"));
}

#[test]
fn health_checks_over_tls_verify_like_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, cert_path, probes) = tls_backend(dir.path());
    let check = "health_check: {kind: http, path: /probe, interval: 200ms, timeout: 200ms, unhealthy_after: 1, healthy_after: 1}";
    let gw = Gateway::start(&format!(
        "upstreams:\n  checked: {{peers: [\"{addr}\"], tls: {{sni: backend.test, ca_file: {cert_path}}}, {check}}}\n  checked_untrusted: {{peers: [\"{addr}\"], tls: {{sni: backend.test}}, {check}}}\nroutes:\n  - {{name: checked, match: {{path_prefix: /checked}}, upstream: checked}}\n  - {{name: untrusted, match: {{path_prefix: /untrusted}}, upstream: checked_untrusted}}\n"
    ));
    // The verified pool's probes complete (they reach the server over TLS, checked against the
    // pool's CA); the other pool's probes fail verification and take its peer out.
    assert!(
        wait_until(Duration::from_secs(10), || probes
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 3),
        "no probe reached the server\n{}",
        gw.log()
    );
    assert!(
        wait_until(Duration::from_secs(10), || gw.log().contains(&format!(
            "upstream checked_untrusted: peer {addr} failed its health checks"
        ))),
        "{}",
        gw.log()
    );
    assert!(!gw.log().contains("upstream checked: peer"), "{}", gw.log());
    let r = gw.get("/checked", &[]);
    assert_eq!((r.status, r.text().as_str()), (200, "secure"));
    assert_eq!(gw.get("/untrusted", &[]).status, 503, "{}", gw.log());
}

#[test]
fn certificates_reload_with_the_configuration() {
    let up = Upstream::start("a");
    let dir = tempfile::tempdir().unwrap();
    // The files the listener names, renewed in place later; copies to verify against.
    let (live_cert, live_key) = cert(dir.path(), "live", &["a.test"]);
    let first = dir.path().join("first.pem");
    std::fs::copy(&live_cert, &first).unwrap();
    let gw = Gateway::start_listener(
        "",
        &format!("    tls: {{cert: {live_cert}, key: {live_key}}}\n"),
        &format!(
            "upstreams:\n  u: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: r, match: {{}}, upstream: u}}\n",
            up.addr
        ),
        &[],
    );
    let resolve = format!("a.test:{}:127.0.0.1", gw.port);
    let url = format!("https://a.test:{}/", gw.port);
    let verifies = |ca: &Path| {
        curl(&[
            "--cacert",
            &ca.display().to_string(),
            "--resolve",
            &resolve,
            &url,
        ])
        .0
    };
    assert!(verifies(&first));
    // Renewed in place (a new key too), then SIGHUP: new handshakes get the new certificate,
    // without an upgrade.
    let (renewed_cert, renewed_key) = cert(dir.path(), "renewed", &["a.test"]);
    std::fs::copy(&renewed_cert, &live_cert).unwrap();
    std::fs::copy(&renewed_key, &live_key).unwrap();
    gw.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || verifies(Path::new(
            &renewed_cert
        ))),
        "{}",
        gw.log()
    );
    assert!(!verifies(&first));
    assert!(gw.log().contains("certificates reloaded"), "{}", gw.log());
    assert!(!gw.log().contains("only with an upgrade"), "{}", gw.log());
    // A broken certificate: the reload is refused, saying why, and the one in use stays.
    std::fs::write(
        &live_cert,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    gw.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .log()
            .contains("reload refused")),
        "{}",
        gw.log()
    );
    assert!(verifies(Path::new(&renewed_cert)));
}
