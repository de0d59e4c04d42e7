//! Micro-benchmarks of the request path's decisions, each on a snapshot built from YAML the way
//! the gateway builds it: route lookup with 1, 100 and 10,000 prefix or template routes; the
//! local rate-limit decision with 1 and 1,000,000 distinct keys; API-key and JWT verification; the cache key; and a
//! full TLS 1.3 handshake (ECDSA P-256, no resumption) with each crypto provider rustls has here;
//! request checks against an OpenAPI operation. They run with the gateway's allocator
//! (mimalloc), as the gateway does. `cargo bench --bench micro`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::{HeaderMap, HeaderValue, Method};
use pingora_cache::key::CacheHashKey;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use tollgate::cache::Cache;
use tollgate::gateway::Gateway;
use tollgate::policy::limits::{KeyInput, LimitStore, Outcome};
use tollgate::policy::Decision;
use tollgate::router::RequestView;

/// The gateway's allocator (see src/main.rs): allocation-heavy decisions cost what they cost
/// in the gateway.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn gateway(yaml: &str) -> Gateway {
    let base = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = match tollgate::config::parse_in(yaml, base) {
        Ok(c) => c,
        Err(errors) => panic!("bench configuration: {errors:?}"),
    };
    let cache = Arc::new(Cache::new(&config.process.cache));
    let metrics = tollgate::observe::metrics::Metrics::new();
    Gateway::new(
        &config,
        Arc::new(LimitStore::default()),
        cache,
        &metrics,
        None,
    )
}

const HEAD: &str = "listeners: [{address: 127.0.0.1:1}]\nupstreams: {u: {peers: [127.0.0.1:2]}}\n";

/// `n` routes: each its own service path under one of 10 hosts, plus method and header rules
/// on some, as a real gateway's table looks; `template` writes each path as a template with a
/// parameter (`/svc00007/v1/orders/{id}`) instead of a prefix.
fn routes_yaml(n: usize, template: bool) -> String {
    let mut y = format!("{HEAD}routes:\n");
    for i in 0..n {
        let host = format!("api{}.example.com", i % 10);
        let extra = match i % 4 {
            0 => ", methods: [GET, POST]",
            1 => ", headers: {x-tenant: t1}",
            _ => "",
        };
        y.push_str(&format!(
            "  - {{name: r{i}, match: {{hosts: [{host}], {path}{extra}}}, upstream: u}}\n",
            path = if template {
                format!("path_template: '/svc{i:05}/v1/orders/{{id}}'")
            } else {
                format!("path_prefix: /svc{i:05}/v1")
            }
        ));
    }
    y
}

fn route_lookup(c: &mut Criterion) {
    route_lookup_of(c, "route_lookup", false);
    route_lookup_of(c, "route_lookup_template", true);
}

fn route_lookup_of(c: &mut Criterion, group: &str, template: bool) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    for n in [1usize, 100, 10_000] {
        let gw = gateway(&routes_yaml(n, template));
        // The request matches the last route added, which is no easier to find than any other;
        // service numbers are zero-padded so every request path has the same length, and the
        // sizes compare the number of routes, not the cost of hashing longer names.
        let last = n - 1;
        let host = format!("api{}.example.com", last % 10);
        let path = format!("/svc{last:05}/v1/orders/42");
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", HeaderValue::from_static("t1"));
        headers.insert("accept", HeaderValue::from_static("application/json"));
        let view = RequestView {
            host: &host,
            path: &path,
            method: &Method::GET,
            headers: &headers,
            query: None,
        };
        assert_eq!(
            gw.router.lookup(&view),
            Some(last),
            "bench request must match"
        );
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| gw.router.lookup(black_box(&view)))
        });
    }
    g.finish();
}

/// This process's resident memory, from `/proc/self/statm` (0 where it cannot be read).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn rate_limit(c: &mut Criterion) {
    let mut g = c.benchmark_group("rate_limit_decision");
    g.throughput(Throughput::Elements(1));
    let gw = gateway(&format!(
        "{HEAD}routes:\n  - {{name: r, match: {{}}, upstream: u, rate_limit: [{{requests: 1000000000, per: 1s, key: client_ip}}]}}\n"
    ));
    let limits = &gw.routes[0].limits;
    let headers = HeaderMap::new();
    let decide = |i: u32| {
        let input = KeyInput {
            consumer: None,
            client_ip: Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))),
            headers: &headers,
        };
        futures::executor::block_on(limits.check(&gw.limits, &input))
    };
    // Memory per key: resident memory before and after a million keys' first requests.
    let before = resident_bytes();
    for i in 0..1_000_000 {
        decide(i);
    }
    let per_key = resident_bytes().saturating_sub(before) as f64 / 1e6;
    eprintln!(
        "rate_limit_decision: {} keys held, {per_key:.0} bytes of resident memory per key",
        gw.limits.keys_held()
    );
    for keys in [1u32, 1_000_000] {
        let mut i = 0u32;
        g.bench_function(BenchmarkId::new("keys", keys), |b| {
            b.iter(|| {
                i = (i + 1) % keys;
                match decide(i) {
                    Outcome::Allowed(state, _) => state,
                    _ => panic!("the bench limit is never reached"),
                }
            })
        });
    }
    g.finish();
}

fn authentication(c: &mut Criterion) {
    let mut g = c.benchmark_group("authentication");
    g.throughput(Throughput::Elements(1));
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let mut consumers = String::from("consumers:\n");
    for i in 0..1000 {
        consumers.push_str(&format!(
            "  - {{name: c{i}, api_keys: [key-{i:04}-secret]}}\n"
        ));
    }
    let gw = gateway(&format!(
        "{HEAD}{consumers}jwt:\n  - {{issuer: https://issuer.example.com, algorithms: [RS256], public_key_file: \"{fixtures}/rsa-public.pem\", audience: tollgate}}\n  - {{issuer: https://ec.example.com, algorithms: [ES256], public_key_file: \"{fixtures}/ec-public.pem\"}}\nroutes:\n  - {{name: key, match: {{path_prefix: /key}}, upstream: u, auth: [api_key]}}\n  - {{name: jwt, match: {{path_prefix: /jwt}}, upstream: u, auth: [jwt]}}\n"
    ));
    let ip = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let check = |route: usize, headers: &HeaderMap| {
        let d = futures::executor::block_on(gw.policies.check(
            &gw.routes[route].access,
            ip,
            headers,
            None,
        ));
        assert!(matches!(d, Decision::Allow(Some(_))), "bench credentials");
        d
    };

    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", HeaderValue::from_static("key-0777-secret"));
    check(0, &headers);
    g.bench_function("api_key_1000_consumers", |b| {
        b.iter(|| check(0, black_box(&headers)))
    });

    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() + 3600)
        .unwrap_or(u64::MAX / 2);
    for (name, alg, issuer, key) in [
        (
            "jwt_rs256",
            jsonwebtoken::Algorithm::RS256,
            "https://issuer.example.com",
            jsonwebtoken::EncodingKey::from_rsa_pem(
                &std::fs::read(format!("{fixtures}/rsa-private.pem")).expect("fixture"),
            )
            .expect("RSA key"),
        ),
        (
            "jwt_es256",
            jsonwebtoken::Algorithm::ES256,
            "https://ec.example.com",
            jsonwebtoken::EncodingKey::from_ec_pem(
                &std::fs::read(format!("{fixtures}/ec-private.pem")).expect("fixture"),
            )
            .expect("EC key"),
        ),
    ] {
        let claims = serde_json::json!({
            "iss": issuer, "sub": "alice", "aud": "tollgate", "exp": exp,
        });
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &key)
            .expect("sign the bench token");
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        check(1, &headers);
        g.bench_function(name, |b| b.iter(|| check(1, black_box(&headers))));
    }
    g.finish();
}

fn cache_key(c: &mut Criterion) {
    let gw = gateway(&format!(
        "{HEAD}cache: {{max_size: 64MiB}}\nconsumers: [{{name: alice, api_keys: [alice-key]}}]\nroutes:\n  - {{name: catalog, match: {{}}, upstream: u, cache: {{ttl: 60s}}}}\n  - {{name: mine, match: {{path_prefix: /mine}}, upstream: u, auth: [api_key], cache: {{ttl: 60s, key: [host, path, query, consumer, header:accept-language]}}}}\n"
    ));
    let mut headers = HeaderMap::new();
    headers.insert("accept-language", HeaderValue::from_static("en-GB"));
    let input = tollgate::cache::KeyInput {
        host: b"shop.example.com",
        path: b"/catalog/items/1234",
        query: b"page=2&sort=price",
        headers: &headers,
        consumer: b"alice",
    };
    let mut g = c.benchmark_group("cache_key");
    g.throughput(Throughput::Elements(1));
    for (name, route) in [("default_key", 0), ("five_parts", 1)] {
        let rules = gw.routes[route].cache.as_ref().expect("cached route");
        g.bench_function(name, |b| {
            b.iter(|| rules.key(black_box(&input)).primary_bin())
        });
    }
    g.finish();
}

/// A full TLS 1.3 handshake in memory (no sockets): ECDSA P-256 certificate, X25519, no
/// resumption; client and server both with `provider`.
fn handshake(
    server: &Arc<rustls::ServerConfig>,
    client: &Arc<rustls::ClientConfig>,
    name: &rustls::pki_types::ServerName<'static>,
) {
    let mut c = rustls::ClientConnection::new(client.clone(), name.clone()).expect("client");
    let mut s = rustls::ServerConnection::new(server.clone()).expect("server");
    let mut buf = Vec::with_capacity(8192);
    while c.is_handshaking() || s.is_handshaking() {
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).expect("client write");
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            s.read_tls(&mut rd).expect("server read");
        }
        s.process_new_packets().expect("server process");
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).expect("server write");
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            c.read_tls(&mut rd).expect("client read");
        }
        c.process_new_packets().expect("client process");
    }
}

fn tls_handshake(c: &mut Criterion) {
    use rustls::crypto::CryptoProvider;
    let cert = rcgen::generate_simple_self_signed(vec!["bench.test".to_string()]).expect("cert");
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let name = rustls::pki_types::ServerName::try_from("bench.test").expect("name");
    let mut g = c.benchmark_group("tls_handshake");
    let providers: [(&str, CryptoProvider); 2] = [
        ("aws_lc_rs", rustls::crypto::aws_lc_rs::default_provider()),
        ("ring", rustls::crypto::ring::default_provider()),
    ];
    for (label, provider) in providers {
        let provider = Arc::new(provider);
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key.clone_key())
            .expect("server config");
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der.clone()).expect("root");
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.resumption = rustls::client::Resumption::disabled();
        let (server, client) = (Arc::new(server), Arc::new(client));
        g.bench_function(label, |b| b.iter(|| handshake(&server, &client, &name)));
    }
    g.finish();
}

/// CPU cost per compressed response: a 5 KB JSON answer through a new encoder, head and body,
/// with each coding at the gateway's level.
fn compression(c: &mut Criterion) {
    use pingora_http::ResponseHeader;
    use tollgate::config::Coding;
    let items: Vec<String> = (0..100)
        .map(|i| format!("{{\"id\":{i},\"name\":\"item number {i}\",\"tags\":[\"a\",\"b\"]}}"))
        .collect();
    let body = format!("[{}]", items.join(","));
    let mut g = c.benchmark_group("compression");
    g.throughput(Throughput::Bytes(body.len() as u64));
    for coding in [Coding::Zstd, Coding::Brotli, Coding::Gzip] {
        let mut size = 0;
        g.bench_function(BenchmarkId::from_parameter(coding.token()), |b| {
            b.iter(|| {
                let mut head = ResponseHeader::build(200, None).expect("head");
                let mut e = tollgate::compress::start(coding, &mut head, true).expect("encoder");
                let out = e.encode(black_box(body.as_bytes()), true).expect("encode");
                size = out.len();
            })
        });
        eprintln!(
            "compression/{}: {} bytes -> {size} bytes",
            coding.token(),
            body.len()
        );
    }
    g.finish();
}

/// Request checks against an OpenAPI operation: a valid 1 KiB JSON body (an order with a
/// `oneOf` payment and an array of items, from tests/fixtures/openapi/shop.json) parsed and
/// checked against its schema, and a list request's parameters (query, array style, header).
fn validation(c: &mut Criterion) {
    use tollgate::openapi::check::Compiler;
    use tollgate::openapi::{Document, RequestRules};
    let text = include_str!("../tests/fixtures/openapi/shop.json");
    let doc = Document::parse(text).expect("a document");
    let compiler = Compiler::new(&doc).expect("schemas");
    let rules = |id: &str| {
        let op = doc.operation(id).expect("the operation");
        RequestRules::compile(&compiler, &op, "/api/v2").expect("compiles")
    };
    let (create, list) = (rules("createOrder"), rules("listProducts"));
    let items: Vec<String> = (1..=28)
        .map(|i| format!("{{\"productId\":{i},\"quantity\":{}}}", i % 7 + 1))
        .collect();
    let body = format!(
        "{{\"customerId\":42,\"items\":[{}],\"payment\":{{\"method\":\"card\",\"cardToken\":\"tok_4f9a8c2e\"}},\"note\":\"leave at the door\"}}",
        items.join(",")
    );
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "x-correlation-id",
        http::HeaderValue::from_static("4b7e8d8e-6a53-4c3a-9a57-0f3c0c6d5a10"),
    );
    assert!(create.check_body(&headers, body.as_bytes()).is_ok());
    let mut g = c.benchmark_group("validation");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("json_body_1kib", |b| {
        b.iter(|| create.check_body(black_box(&headers), black_box(body.as_bytes())))
    });
    g.bench_function("parameters", |b| {
        b.iter(|| {
            list.check_head(
                black_box("/api/v2/products"),
                black_box(Some("limit=10&cursor=abc_1&expand=owner,history")),
                black_box(&headers),
            )
        })
    });
    eprintln!("validation/json_body_1kib: {} bytes", body.len());
    g.finish();
}

criterion_group!(
    benches,
    validation,
    route_lookup,
    rate_limit,
    authentication,
    cache_key,
    tls_handshake,
    compression
);
criterion_main!(benches);
