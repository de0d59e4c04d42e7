//! JWT authentication end to end, with keys from tests/fixtures: RS256 and ES256 public keys,
//! a JWKS document with two keys, and an HS256 secret from the environment.

use crate::common::*;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const ISS: &str = "https://id.example.com";
const SECRET: &str = "an-hmac-secret-of-at-least-32-bytes!!";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIX}/{name}")).unwrap()
}

fn claims(sub: &str) -> Value {
    json!({"iss": ISS, "aud": "tollgate", "sub": sub, "exp": now() + 300, "nbf": now() - 10})
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    encode(&h, claims, key).unwrap()
}

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(&fixture("rsa-private.pem")).unwrap()
}

fn gateway(up: &Upstream) -> Gateway {
    Gateway::start_with_env(
        &format!(
            "consumers:\n  - {{name: alice, groups: [staff], api_keys: [alice-key-1]}}\njwt:\n  - {{issuer: \"{ISS}\", algorithms: [RS256, ES256], public_key_file: \"{FIX}/rsa-public.pem\", audience: tollgate, consumer_claim: sub, groups_claim: groups}}\n  - {{issuer: https://ec.example.com, algorithms: [ES256], public_key_file: \"{FIX}/ec-public.pem\"}}\n  - {{issuer: https://jwks.example.com, algorithms: [RS256], jwks_file: \"{FIX}/jwks.json\"}}\n  - {{issuer: https://hs.example.com, algorithms: [HS256], secret_env: TEST_JWT_SECRET}}\nupstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: staff, match: {{path_prefix: /staff}}, upstream: a, auth: [jwt], allow_groups: [staff]}}\n  - {{name: mixed, match: {{path_prefix: /mixed}}, upstream: a, auth: [api_key, jwt]}}\n  - {{name: jwt, match: {{path_prefix: /jwt}}, upstream: a, auth: [jwt]}}\n",
            up.addr
        ),
        &[("TEST_JWT_SECRET", SECRET)],
    )
}

fn call(gw: &Gateway, path: &str, token: &str) -> Response {
    gw.get(path, &[("authorization", &format!("Bearer {token}"))])
}

#[test]
fn valid_tokens_identify_the_caller() {
    let up = Upstream::start("a");
    let gw = gateway(&up);
    let mut c = claims("alice");
    c["groups"] = json!(["admins"]);
    let r = call(&gw, "/jwt", &sign(Algorithm::RS256, None, &rsa(), &c));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().header("x-consumer"), Some("alice"));
    assert_eq!(up.last().header("x-consumer-groups"), Some("staff,admins"));
    // An unknown subject is authenticated, with only the token's groups.
    let mut c = claims("zed");
    c["groups"] = json!("partners beta");
    assert_eq!(
        call(&gw, "/jwt", &sign(Algorithm::RS256, None, &rsa(), &c)).status,
        200
    );
    assert_eq!(up.last().header("x-consumer"), Some("zed"));
    assert_eq!(up.last().header("x-consumer-groups"), Some("partners,beta"));
    let mut c = claims("nobody");
    c.as_object_mut().unwrap().remove("aud");
    c["iss"] = json!("https://ec.example.com");
    let ec = EncodingKey::from_ec_pem(&fixture("ec-private.pem")).unwrap();
    assert_eq!(
        call(&gw, "/jwt", &sign(Algorithm::ES256, None, &ec, &c)).status,
        200
    );
    let mut c = claims("hs-user");
    c["iss"] = json!("https://hs.example.com");
    let hs = EncodingKey::from_secret(SECRET.as_bytes());
    assert_eq!(
        call(&gw, "/jwt", &sign(Algorithm::HS256, None, &hs, &c)).status,
        200
    );
    assert_eq!(up.last().header("x-consumer"), Some("hs-user"));
}

#[test]
fn jwks_keys_are_chosen_by_kid() {
    let up = Upstream::start("a");
    let gw = gateway(&up);
    let mut c = claims("k");
    c["iss"] = json!("https://jwks.example.com");
    let other = EncodingKey::from_rsa_pem(&fixture("other-rsa-private.pem")).unwrap();
    assert_eq!(
        call(
            &gw,
            "/jwt",
            &sign(Algorithm::RS256, Some("rsa-2"), &other, &c)
        )
        .status,
        200
    );
    assert_eq!(
        call(
            &gw,
            "/jwt",
            &sign(Algorithm::RS256, Some("rsa-1"), &rsa(), &c)
        )
        .status,
        200
    );
    assert_eq!(
        call(
            &gw,
            "/jwt",
            &sign(Algorithm::RS256, Some("rsa-1"), &other, &c)
        )
        .status,
        401
    );
    assert_eq!(up.count(), 2);
}

#[test]
fn invalid_tokens_are_refused() {
    let up = Upstream::start("a");
    let gw = gateway(&up);
    let t = now();
    let mut cases: Vec<(&str, String)> = Vec::new();
    let mut c = claims("alice");
    c["exp"] = json!(t - 120);
    cases.push(("expired", sign(Algorithm::RS256, None, &rsa(), &c)));
    let mut c = claims("alice");
    c["nbf"] = json!(t + 120);
    cases.push(("not yet valid", sign(Algorithm::RS256, None, &rsa(), &c)));
    let mut c = claims("alice");
    c["aud"] = json!("someone-else");
    cases.push(("wrong audience", sign(Algorithm::RS256, None, &rsa(), &c)));
    let mut c = claims("alice");
    c["iss"] = json!("https://evil.example.com");
    cases.push(("unknown issuer", sign(Algorithm::RS256, None, &rsa(), &c)));
    let other = EncodingKey::from_rsa_pem(&fixture("other-rsa-private.pem")).unwrap();
    cases.push((
        "wrong key",
        sign(Algorithm::RS256, None, &other, &claims("alice")),
    ));
    let mut c = claims("alice");
    c.as_object_mut().unwrap().remove("exp");
    cases.push(("no exp", sign(Algorithm::RS256, None, &rsa(), &c)));
    // alg: none, with no signature.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(claims("alice").to_string())
    );
    cases.push(("alg none", none));
    // Algorithm confusion: HS256 signed with the RSA public key's bytes as the secret.
    let confused = EncodingKey::from_secret(&fixture("rsa-public.pem"));
    cases.push((
        "HS256 against an RSA key",
        sign(Algorithm::HS256, None, &confused, &claims("alice")),
    ));
    cases.push(("garbage", "not.a.token".to_string()));
    for (case, token) in &cases {
        let r = call(&gw, "/jwt", token);
        assert_eq!(r.status, 401, "{case}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"tollgate\""),
            "{case}"
        );
    }
    assert_eq!(up.count(), 0);
}

#[test]
fn groups_from_tokens_and_consumers_authorize() {
    let up = Upstream::start("a");
    let gw = gateway(&up);
    // alice is in staff through the configuration.
    assert_eq!(
        call(
            &gw,
            "/staff",
            &sign(Algorithm::RS256, None, &rsa(), &claims("alice"))
        )
        .status,
        200
    );
    // zed is in staff through the token.
    let mut c = claims("zed");
    c["groups"] = json!(["staff"]);
    assert_eq!(
        call(&gw, "/staff", &sign(Algorithm::RS256, None, &rsa(), &c)).status,
        200
    );
    // mallory is in no allowed group.
    let r = call(
        &gw,
        "/staff",
        &sign(Algorithm::RS256, None, &rsa(), &claims("mallory")),
    );
    assert_eq!(r.status, 403);
    assert_eq!(up.count(), 2);
}

#[test]
fn bearer_is_a_jwt_where_the_route_takes_jwts() {
    let up = Upstream::start("a");
    let gw = gateway(&up);
    // On a route taking both, a bearer value is read as a JWT, never as an API key.
    assert_eq!(call(&gw, "/mixed", "alice-key-1").status, 401);
    assert_eq!(
        gw.get("/mixed", &[("x-api-key", "alice-key-1")]).status,
        200
    );
    assert_eq!(
        call(
            &gw,
            "/mixed",
            &sign(Algorithm::RS256, None, &rsa(), &claims("alice"))
        )
        .status,
        200
    );
    let r = gw.get("/mixed", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(up.count(), 2);
}
