//! Mutual TLS: listeners that require or request client certificates from a CA (curl as the
//! client), certificates mapped to consumers by URI, DNS name, subject or common name, the
//! verified identity sent upstream in `X-Forwarded-Client-Cert`, a reload that changes the
//! mode, and pools that present a client certificate to upstreams that require one.

use crate::common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// A certificate authority that issues certificates into a directory.
struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: String,
}

impl Authority {
    fn new(dir: &Path, name: &str) -> Authority {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.self_signed(&key).unwrap();
        let pem = dir.join(format!("{name}.pem")).display().to_string();
        std::fs::write(&pem, cert.pem()).unwrap();
        Authority { cert, key, pem }
    }

    /// Issue a certificate: subject `cn` (and `o`), DNS names and URIs; its PEM files.
    fn issue(
        &self,
        dir: &Path,
        file: &str,
        cn: &str,
        o: Option<&str>,
        dns: &[&str],
        uris: &[&str],
    ) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(o) = o {
            p.distinguished_name.push(DnType::OrganizationName, o);
        }
        p.distinguished_name.push(DnType::CommonName, cn);
        for u in uris {
            p.subject_alt_names
                .push(rcgen::SanType::URI(rcgen::Ia5String::try_from(*u).unwrap()));
        }
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let (c, k) = (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}-key.pem")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c.display().to_string(), k.display().to_string())
    }
}

/// What curl got: whether the exchange worked, the status and body.
fn curl(
    port: u16,
    ca: &str,
    client: Option<&(String, String)>,
    path: &str,
    extra: &[&str],
) -> (bool, String) {
    let resolve = format!("gw.test:{port}:127.0.0.1");
    let url = format!("https://gw.test:{port}{path}");
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "--max-time",
        "10",
        "--cacert",
        ca,
        "--resolve",
        &resolve,
    ]);
    cmd.args(["-w", "%{http_code}", "-o", "/dev/null"]);
    if let Some((cert, key)) = client {
        cmd.args(["--cert", cert, "--key", key]);
    }
    cmd.args(extra).arg(&url);
    let out = cmd.output().expect("curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

struct Setup {
    dir: tempfile::TempDir,
    clients: Authority,
    server_ca: String,
    listener: String,
}

fn setup(required: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let servers = Authority::new(dir.path(), "server-ca");
    let clients = Authority::new(dir.path(), "client-ca");
    let (cert, key) = servers.issue(dir.path(), "gw", "gw.test", None, &["gw.test"], &[]);
    let listener = format!(
        "    tls: {{cert: \"{cert}\", key: \"{key}\", client_auth: {{ca_file: \"{}\", required: {required}}}}}\n",
        clients.pem
    );
    let server_ca = servers.pem.clone();
    Setup {
        dir,
        clients,
        server_ca,
        listener,
    }
}

const CONSUMERS: &str = "consumers:\n  - {name: billing, groups: [services], client_certs: [{uri: \"spiffe://acme/ns/prod/sa/billing\"}]}\n  - {name: carol, client_certs: [{cn: carol}]}\n  - {name: dave, groups: [services], client_certs: [{subject: \"cn=dave, O=Acme\"}, {dns: Dave.Acme.test}]}\n";

fn routes(up: &Upstream) -> String {
    format!(
        "{CONSUMERS}upstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: mtls, match: {{path_prefix: /mtls}}, upstream: a, auth: [mtls]}}\n  - {{name: services, match: {{path_prefix: /services}}, upstream: a, auth: [mtls], allow_groups: [services]}}\n  - {{name: either, match: {{path_prefix: /either}}, upstream: a, auth: [mtls, api_key]}}\n  - {{name: open, match: {{path_prefix: /}}, upstream: a}}\n",
        up.addr
    )
}

#[test]
fn required_client_certificates_identify_consumers() {
    let s = setup(true);
    let d = s.dir.path();
    let up = Upstream::start("a");
    let gw = Gateway::start_listener("", &s.listener, &routes(&up), &[]);
    let billing = s.clients.issue(
        d,
        "billing",
        "svc-7",
        Some("Acme"),
        &[],
        &["spiffe://acme/ns/prod/sa/billing"],
    );
    let carol = s.clients.issue(d, "carol", "carol", None, &[], &[]);
    let dave = s.clients.issue(d, "dave", "dave", Some("Acme"), &[], &[]);
    let dave_dns = s
        .clients
        .issue(d, "dave2", "someone", None, &["dave.acme.test"], &[]);
    let stranger = s.clients.issue(d, "stranger", "stranger", None, &[], &[]);
    let rogue_ca = Authority::new(d, "rogue-ca");
    let rogue = rogue_ca.issue(d, "rogue", "carol", None, &[], &[]);
    let call = |client: Option<&(String, String)>, path: &str| {
        curl(gw.port, &s.server_ca, client, path, &[])
    };

    // No certificate, or one from another CA: no TLS session, nothing reaches the upstream.
    assert!(!call(None, "/open").0);
    assert!(!call(Some(&rogue), "/mtls").0);
    assert_eq!(up.count(), 0);

    // Mapped by URI SAN, common name, normalised subject and DNS SAN.
    for (client, who) in [
        (&billing, "billing"),
        (&carol, "carol"),
        (&dave, "dave"),
        (&dave_dns, "dave"),
    ] {
        assert_eq!(call(Some(client), "/mtls"), (true, "200".into()), "{who}");
        assert_eq!(up.last().header("x-consumer"), Some(who));
    }
    // The verified identity goes upstream; a client's own header never does.
    let (ok, code) = curl(
        gw.port,
        &s.server_ca,
        Some(&billing),
        "/mtls",
        &[
            "-H",
            "X-Forwarded-Client-Cert: Hash=0;Subject=\"CN=admin\"",
            "-H",
            "X-Consumer: admin",
        ],
    );
    assert_eq!((ok, code.as_str()), (true, "200"));
    let seen = up.last();
    let xfcc = seen.header("x-forwarded-client-cert").unwrap_or_default();
    assert!(xfcc.starts_with("Hash="), "{xfcc}");
    assert!(
        xfcc.contains(";Subject=\"CN=svc-7,O=Acme\";URI=spiffe://acme/ns/prod/sa/billing"),
        "{xfcc}"
    );
    assert!(!xfcc.contains("admin"));
    assert_eq!(seen.header("x-consumer"), Some("billing"));

    // A valid certificate no consumer claims: not a credential; groups still apply.
    let before = up.count();
    assert_eq!(call(Some(&stranger), "/mtls"), (true, "401".into()));
    assert_eq!(call(Some(&carol), "/services"), (true, "403".into()));
    assert_eq!(up.count(), before);
    assert_eq!(call(Some(&dave), "/services"), (true, "200".into()));
    // The stranger can use a route that takes an API key too, or no credentials at all.
    assert_eq!(call(Some(&stranger), "/either"), (true, "401".into()));
    assert_eq!(call(Some(&stranger), "/open"), (true, "200".into()));
    assert!(up
        .last()
        .header("x-forwarded-client-cert")
        .is_some_and(|x| x.contains("Subject=\"CN=stranger\"")));
}

#[test]
fn optional_client_certificates_and_a_reload_that_requires_them() {
    let s = setup(false);
    let d = s.dir.path();
    let up = Upstream::start("a");
    let gw = Gateway::start_listener("", &s.listener, &routes(&up), &[]);
    let carol = s.clients.issue(d, "carol", "carol", None, &[], &[]);
    // Without a certificate: public routes work (no identity header), mtls routes answer 401
    // with no challenge (client certificates have no HTTP scheme).
    assert_eq!(
        curl(gw.port, &s.server_ca, None, "/open", &[]),
        (true, "200".into())
    );
    assert_eq!(up.last().header("x-forwarded-client-cert"), None);
    assert_eq!(
        curl(gw.port, &s.server_ca, None, "/mtls", &[]),
        (true, "401".into())
    );
    assert_eq!(
        curl(gw.port, &s.server_ca, Some(&carol), "/mtls", &[]),
        (true, "200".into())
    );
    // A certificate that is sent must still be valid.
    let rogue = Authority::new(d, "rogue-ca").issue(d, "rogue", "carol", None, &[], &[]);
    assert!(!curl(gw.port, &s.server_ca, Some(&rogue), "/open", &[]).0);

    // Reloaded to require certificates: new connections without one are refused.
    let required = s.listener.replace("required: false", "required: true");
    gw.rewrite_raw(&format!(
        "{}{}",
        gw.head().replace(&s.listener, &required),
        routes(&up)
    ));
    gw.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || !curl(
        gw.port,
        &s.server_ca,
        None,
        "/open",
        &[]
    )
    .0));
    assert_eq!(
        curl(gw.port, &s.server_ca, Some(&carol), "/mtls", &[]),
        (true, "200".into())
    );
}

#[test]
fn pools_present_a_client_certificate_to_upstreams_that_require_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let servers = Authority::new(d, "upstream-ca");
    let clients = Authority::new(d, "gateway-ca");
    let (cert, key) = servers.issue(d, "backend", "backend.test", None, &["backend.test"], &[]);
    let (gw_cert, gw_key) = clients.issue(d, "gateway", "tollgate", Some("Acme"), &[], &[]);
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let server_key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(clients.cert.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, server_key)
        .unwrap();
    let backend = HttpServer::start(Some(Arc::new(config)), |_| Reply::ok("mutual"));
    let addr = backend.addr;
    let gw = Gateway::start(&format!(
        "upstreams:\n  with: {{peers: [\"{addr}\"], tls: {{sni: backend.test, ca_file: \"{}\", client_cert: \"{gw_cert}\", client_key: \"{gw_key}\"}}, retries: 0}}\n  without: {{peers: [\"{addr}\"], tls: {{sni: backend.test, ca_file: \"{}\"}}, retries: 0}}\nroutes:\n  - {{name: with, match: {{path_prefix: /with}}, upstream: with}}\n  - {{name: without, match: {{path_prefix: /without}}, upstream: without}}\n",
        servers.pem, servers.pem
    ));
    let r = gw.get("/with", &[]);
    assert_eq!((r.status, r.text().as_str()), (200, "mutual"));
    assert_eq!(gw.get("/without", &[]).status, 502);
    // Keys that are not keys are refused at load, with their place.
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("-t")
        .arg("-c")
        .arg({
            let p = d.join("bad.yaml");
            let junk = d.join("junk-key.pem");
            std::fs::write(&junk, "-----BEGIN PRIVATE KEY-----\nAAAAAAAA\n-----END PRIVATE KEY-----\n").unwrap();
            let junk = junk.display();
            std::fs::write(&p, format!("listeners: [{{address: 127.0.0.1:1}}]\nupstreams:\n  u: {{peers: [127.0.0.1:9], tls: {{sni: b.test, client_cert: \"{gw_cert}\", client_key: \"{gw_cert}\"}}}}\n  v: {{peers: [127.0.0.1:9], tls: {{sni: b.test, client_cert: \"{gw_cert}\"}}}}\n  w: {{peers: [127.0.0.1:9], tls: {{sni: b.test, client_cert: \"{gw_cert}\", client_key: \"{junk}\"}}}}\n  x: {{peers: [127.0.0.1:9], tls: {{sni: b.test, client_cert: \"{gw_cert}\", client_key: \"{key}\"}}}}\nroutes: [{{name: r, match: {{}}, upstream: u}}]\n")).unwrap();
            p
        })
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("upstreams.u.tls.client_key: ")
            && err.contains("holds no PKCS#8, PKCS#1 or SEC1 private key"),
        "{err}"
    );
    assert!(
        err.contains("upstreams.v.tls: give both client_cert and client_key"),
        "{err}"
    );
    assert!(
        err.contains("upstreams.w.tls.client_key: ") && err.contains("cannot be used"),
        "{err}"
    );
    assert!(
        err.contains("upstreams.x.tls.client_key: ")
            && err.contains("does not belong to client_cert's certificate"),
        "{err}"
    );
}

/// A TLS client (rustls) that keeps its sessions for resumption: one request per connection;
/// whether the session was resumed, and the status line.
struct Resuming(Arc<rustls::ClientConfig>);

impl Resuming {
    fn new(ca: &str, client: &(String, String)) -> Resuming {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let chain = rustls::pki_types::CertificateDer::pem_file_iter(&client.0)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&client.1).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
        Resuming(Arc::new(config))
    }

    fn get(&self, port: u16) -> (bool, String) {
        use std::io::{Read, Write};
        let name = rustls::pki_types::ServerName::try_from("gw.test").unwrap();
        let mut conn = rustls::ClientConnection::new(self.0.clone(), name).unwrap();
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
        let _ = tls.write_all(b"GET /mtls HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n");
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out);
        let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let text = String::from_utf8_lossy(&out);
        (resumed, text.lines().next().unwrap_or("").to_string())
    }
}

#[test]
fn a_resumed_session_is_judged_by_the_ca_in_force_now() {
    let s = setup(true);
    let d = s.dir.path();
    let up = Upstream::start("a");
    let gw = Gateway::start_listener("", &s.listener, &routes(&up), &[]);
    let carol = s.clients.issue(d, "carol", "carol", None, &[], &[]);
    let client = Resuming::new(&s.server_ca, &carol);
    assert_eq!(client.get(gw.port), (false, "HTTP/1.1 200 OK".to_string()));
    // The session resumes while the CA stands.
    assert_eq!(client.get(gw.port), (true, "HTTP/1.1 200 OK".to_string()));
    // The listener now trusts another CA: carol's resumed session gets no request through.
    let other = Authority::new(d, "other-ca");
    let listener = s.listener.replace(&s.clients.pem, &other.pem);
    gw.rewrite_raw(&format!(
        "{}{}",
        gw.head().replace(&s.listener, &listener),
        routes(&up)
    ));
    gw.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || gw
        .log()
        .contains("configuration reloaded")));
    let before = up.count();
    assert_eq!(
        client.get(gw.port),
        (true, "HTTP/1.1 403 Forbidden".to_string())
    );
    assert_eq!(up.count(), before);
}
