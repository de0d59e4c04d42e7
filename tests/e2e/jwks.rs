//! JWT keys fetched while running: a real HTTPS JWKS endpoint on loopback (its own CA), keys
//! rotated mid-test and picked up without a reload, fetch failures that keep the last good
//! keys, and OpenID Connect discovery.

use crate::common::*;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ISS: &str = "https://login.example.test";

/// An ES256 signing key and its public JWK.
struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    jwk: serde_json::Value,
}

fn signing_key(kid: &str) -> SigningKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    // The uncompressed point: 0x04, then X and Y.
    let point = pair.public_key_raw();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    SigningKey {
        kid: kid.to_string(),
        encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                    "x": b64(&point[1..33]), "y": b64(&point[33..65])}),
    }
}

fn token(key: &SigningKey, sub: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(key.kid.clone());
    let claims = json!({"iss": ISS, "aud": "api", "sub": sub, "exp": now + 300});
    encode(&h, &claims, &key.encoding).unwrap()
}

/// What the identity provider serves now.
struct Served {
    status: u16,
    keys: Vec<serde_json::Value>,
    cache_control: &'static str,
    discovery_issuer: String,
    delay: Duration,
}

/// An HTTPS identity provider on loopback: `/keys` (the JWKS) and
/// `/.well-known/openid-configuration`, counting the fetches of each.
struct IdentityProvider {
    server: HttpServer,
    served: Arc<Mutex<Served>>,
    key_fetches: Arc<AtomicUsize>,
    ca_file: String,
    _dir: tempfile::TempDir,
}

impl IdentityProvider {
    fn start(keys: &[&SigningKey]) -> IdentityProvider {
        let dir = tempfile::tempdir().unwrap();
        let (config, ca_file) = tls_server_config(dir.path(), &["127.0.0.1"]);
        let served = Arc::new(Mutex::new(Served {
            status: 200,
            keys: keys.iter().map(|k| k.jwk.clone()).collect(),
            cache_control: "max-age=3600",
            discovery_issuer: ISS.to_string(),
            delay: Duration::ZERO,
        }));
        let key_fetches = Arc::new(AtomicUsize::new(0));
        let (state, fetches) = (served.clone(), key_fetches.clone());
        let port = Arc::new(Mutex::new(0u16));
        let own_port = port.clone();
        let server = HttpServer::start(Some(config), move |seen| {
            let s = state.lock().unwrap();
            match seen.url.as_str() {
                "/keys" => {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let body = json!({"keys": s.keys}).to_string();
                    Reply {
                        status: s.status,
                        ..Reply::ok(&body)
                    }
                    .header("content-type", "application/json")
                    .header("cache-control", s.cache_control)
                    .delay(s.delay)
                }
                "/.well-known/openid-configuration" => Reply::ok(
                    &json!({"issuer": s.discovery_issuer,
                            "jwks_uri": format!("https://127.0.0.1:{}/keys", own_port.lock().unwrap())})
                    .to_string(),
                ),
                _ => Reply {
                    status: 404,
                    ..Reply::ok("")
                },
            }
        });
        *port.lock().unwrap() = server.addr.port();
        IdentityProvider {
            server,
            served,
            key_fetches,
            ca_file,
            _dir: dir,
        }
    }

    fn serve(&self, change: impl FnOnce(&mut Served)) {
        change(&mut self.served.lock().unwrap());
    }

    fn fetches(&self) -> usize {
        self.key_fetches.load(Ordering::SeqCst)
    }
}

fn gateway(idp: &IdentityProvider, source: &str, refresh: &str) -> (Gateway, Upstream, u16) {
    let up = Upstream::start("api");
    let admin = closed_port().port();
    let gw = Gateway::start(&format!(
        "admin: {{address: 127.0.0.1:{admin}}}\njwt:\n  - {{issuer: \"{ISS}\", algorithms: [ES256], {source}, ca_file: \"{}\", refresh: {refresh}, audience: api}}\nupstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: r, match: {{path_prefix: /}}, upstream: a, auth: [jwt]}}\n",
        idp.ca_file, up.addr
    ));
    (gw, up, admin)
}

fn call(gw: &Gateway, token: &str) -> u16 {
    gw.get("/x", &[("authorization", &format!("Bearer {token}"))])
        .status
}

fn metrics(admin: u16) -> String {
    send_raw(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .text()
}

#[test]
fn rotated_keys_are_picked_up_without_a_reload() {
    let (a, b, stranger) = (signing_key("a"), signing_key("b"), signing_key("c"));
    let idp = IdentityProvider::start(&[&a]);
    let url = format!(
        "jwks_url: \"https://127.0.0.1:{}/keys\"",
        idp.server.addr.port()
    );
    let (gw, up, admin) = gateway(&idp, &url, "{min: 30s, max: 1h}");
    // Fetched at start.
    assert!(wait_until(Duration::from_secs(10), || metrics(admin)
        .contains(&format!(
            "tollgate_jwt_issuer_keys{{issuer=\"{ISS}\"}} 1"
        ))));
    assert_eq!(call(&gw, &token(&a, "alice")), 200);
    assert_eq!(up.last().header("x-consumer"), Some("alice"));
    assert_eq!(idp.fetches(), 1);
    // The provider rotates to key b: a token signed with it names an unknown kid, so the set is
    // fetched again at once and the token accepted.
    idp.serve(|s| s.keys = vec![b.jwk.clone()]);
    assert_eq!(call(&gw, &token(&b, "bob")), 200);
    assert_eq!(up.last().header("x-consumer"), Some("bob"));
    assert_eq!(idp.fetches(), 2);
    // Unknown kids cannot make the gateway hammer the provider: within refresh.min, no fetch.
    let before = up.count();
    assert_eq!(call(&gw, &token(&stranger, "mallory")), 401);
    assert_eq!(call(&gw, &token(&a, "alice")), 401, "a retired key");
    assert_eq!(idp.fetches(), 2);
    assert_eq!(up.count(), before);
    let m = metrics(admin);
    assert!(
        m.contains(&format!(
            "tollgate_jwt_key_fetches_total{{issuer=\"{ISS}\",result=\"success\"}} 2"
        )),
        "{m}"
    );
    // A reload that leaves the issuer as it is keeps its keys: no fetch, b still accepted.
    gw.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || gw
        .log()
        .contains("configuration reloaded")));
    assert_eq!(call(&gw, &token(&b, "bob")), 200);
    assert_eq!(idp.fetches(), 2);
}

#[test]
fn a_failed_fetch_keeps_the_last_good_keys() {
    let a = signing_key("a");
    let idp = IdentityProvider::start(&[&a]);
    idp.serve(|s| s.cache_control = "max-age=1");
    let url = format!(
        "jwks_url: \"https://127.0.0.1:{}/keys\"",
        idp.server.addr.port()
    );
    let (gw, _up, admin) = gateway(&idp, &url, "{min: 1s, max: 1h}");
    assert!(wait_until(Duration::from_secs(10), || call(
        &gw,
        &token(&a, "alice")
    ) == 200));
    // max-age=1 within min 1s: fetched again every second. Now the provider fails, then serves
    // a document that is not a key set: both fetches fail, and the keys stay.
    idp.serve(|s| s.status = 500);
    let failures = |n: u32| {
        move || {
            metrics(admin).contains(&format!(
                "tollgate_jwt_key_fetches_total{{issuer=\"{ISS}\",result=\"failure\"}} {n}"
            ))
        }
    };
    assert!(wait_until(Duration::from_secs(10), failures(1)));
    assert_eq!(call(&gw, &token(&a, "alice")), 200);
    idp.serve(|s| {
        s.status = 200;
        s.keys = vec![json!({"kty": "nonsense"})];
    });
    assert!(wait_until(Duration::from_secs(10), failures(2)));
    assert_eq!(call(&gw, &token(&a, "alice")), 200);
    assert!(gw.log().contains("fetching keys failed, 1 key(s) kept"));
}

#[test]
fn discovery_names_the_key_set() {
    let a = signing_key("a");
    let idp = IdentityProvider::start(&[&a]);
    let url = format!(
        "discovery_url: \"https://127.0.0.1:{}/.well-known/openid-configuration\"",
        idp.server.addr.port()
    );
    let (gw, _up, _admin) = gateway(&idp, &url, "{min: 1s, max: 1h}");
    assert_eq!(call(&gw, &token(&a, "alice")), 200);
    assert_eq!(idp.fetches(), 1);

    // A discovery document that is another issuer's is not believed: no keys are fetched.
    let other = IdentityProvider::start(&[&a]);
    other.serve(|s| s.discovery_issuer = "https://evil.example.test".into());
    let url = format!(
        "discovery_url: \"https://127.0.0.1:{}/.well-known/openid-configuration\"",
        other.server.addr.port()
    );
    let (gw, _up, _admin) = gateway(&other, &url, "{min: 1s, max: 1h}");
    assert_eq!(call(&gw, &token(&a, "alice")), 401);
    assert_eq!(other.fetches(), 0);
    assert!(wait_until(Duration::from_secs(5), || gw
        .log()
        .contains("is issuer \"https://evil.example.test\"'s")));
}

#[test]
fn requests_with_a_new_key_wait_for_one_fetch_and_settings_changes_keep_the_keys() {
    let (a, b) = (signing_key("a"), signing_key("b"));
    let idp = IdentityProvider::start(&[&a]);
    let url = format!(
        "jwks_url: \"https://127.0.0.1:{}/keys\"",
        idp.server.addr.port()
    );
    let (gw, _up, admin) = gateway(&idp, &url, "{min: 30s, max: 1h}");
    assert!(wait_until(Duration::from_secs(10), || metrics(admin)
        .contains(&format!(
            "tollgate_jwt_issuer_keys{{issuer=\"{ISS}\"}} 1"
        ))));
    // Rotated, and slow to answer: tokens with the new key that arrive while the fetch runs
    // wait for it instead of being refused.
    idp.serve(|s| {
        s.keys = vec![a.jwk.clone(), b.jwk.clone()];
        s.delay = Duration::from_millis(800);
    });
    let gw = Arc::new(gw);
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let (gw, t) = (gw.clone(), token(&b, "bob"));
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100 * i));
                call(&gw, &t)
            })
        })
        .collect();
    let statuses: Vec<u16> = calls.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(statuses, vec![200; 4]);
    assert_eq!(idp.fetches(), 2);
    // The provider goes down, and a reload changes only how the keys are fetched: the keys
    // held stay in use.
    idp.serve(|s| s.status = 500);
    let body = gw.config();
    gw.rewrite_raw(&body.replace(
        "refresh: {min: 30s, max: 1h}",
        "refresh: {min: 20s, max: 2h}, fetch_timeout: 3s",
    ));
    gw.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || gw
        .log()
        .contains("configuration reloaded")));
    assert!(wait_until(Duration::from_secs(10), || metrics(admin)
        .contains(&format!(
            "tollgate_jwt_key_fetches_total{{issuer=\"{ISS}\",result=\"failure\"}} 1"
        ))));
    assert_eq!(call(&gw, &token(&a, "alice")), 200);
    assert_eq!(call(&gw, &token(&b, "bob")), 200);
}
