//! Consumers (names, groups, API keys stored as digests, basic-auth users), the API key
//! header, and the JWT issuers (their keys are checked in [`super::jwt`]).

use super::super::raw::{RawCertIdentity, RawConsumer, RawJwt};
use super::super::{normalize_dn, CertIdentity, Consumer, JwtIssuer};
use super::{index_path, valid_name, Validator};
use http::HeaderName;
use serde_yaml::Value;

impl Validator<'_> {
    pub(super) fn api_key_header(&mut self, value: Option<Value>) -> HeaderName {
        let default = HeaderName::from_static("x-api-key");
        let Some(v) = value else { return default };
        let Some(text) = self.item::<String>("api_key_header", v) else {
            return default;
        };
        match HeaderName::from_bytes(text.as_bytes()) {
            Ok(h) if !crate::wire::is_framing_or_hop(&h) => h,
            _ => {
                self.error(
                    "api_key_header",
                    format!("\"{text}\" is not a usable header name"),
                );
                default
            }
        }
    }

    pub(super) fn consumers(
        &mut self,
        value: Option<Value>,
        plans: &[super::super::Plan],
        have_redis: bool,
    ) -> Vec<Consumer> {
        let items = self.sequence("consumers", value, false);
        let mut out: Vec<Consumer> = Vec::new();
        let mut keys: std::collections::HashMap<[u8; 32], String> = Default::default();
        let mut users: Vec<String> = Vec::new();
        let mut certs: Vec<(CertIdentity, String)> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let base = index_path("consumers", i);
            let Some(raw) = self.item::<RawConsumer>(&base, item) else {
                continue;
            };
            if !valid_name(&raw.name) {
                self.error(
                    format!("{base}.name"),
                    "consumer names are non-empty and use letters, digits, '_', '-' and '.' only",
                );
            }
            if out.iter().any(|c| c.name == raw.name) {
                self.error(
                    format!("{base}.name"),
                    format!("consumer \"{}\" is defined twice", raw.name),
                );
            }
            for (j, g) in raw.groups.iter().enumerate() {
                if !valid_name(g) {
                    self.error(
                        format!("{base}.groups[{j}]"),
                        "group names use letters, digits, '_', '-' and '.' only",
                    );
                }
            }
            let mut digests = Vec::new();
            for (j, key) in raw.api_keys.iter().enumerate() {
                let place = format!("{base}.api_keys[{j}]");
                let digest = match key.strip_prefix("sha256:") {
                    Some(h) => match hex::decode(h) {
                        Ok(bytes) if bytes.len() == 32 => {
                            let mut d = [0u8; 32];
                            d.copy_from_slice(&bytes);
                            Some(d)
                        }
                        _ => {
                            self.error(
                                place.clone(),
                                "a sha256: key must be 64 hexadecimal digits",
                            );
                            None
                        }
                    },
                    None if key.len() < 8 => {
                        self.error(place.clone(), "an API key must be at least 8 characters");
                        None
                    }
                    None => Some(crate::wire::key_digest(key.as_bytes())),
                };
                if let Some(d) = digest {
                    if let Some(owner) = keys.get(&d) {
                        self.error(
                            place,
                            format!("this key is already given to consumer \"{owner}\""),
                        );
                    } else {
                        keys.insert(d, raw.name.clone());
                        digests.push(d);
                    }
                }
            }
            let basic_auth = raw.basic_auth.and_then(|b| {
                let place = format!("{base}.basic_auth");
                let mut ok = true;
                if b.username.is_empty() || b.username.contains(':') {
                    self.error(
                        format!("{place}.username"),
                        "must be non-empty and contain no ':'",
                    );
                    ok = false;
                } else if users.contains(&b.username) {
                    self.error(
                        format!("{place}.username"),
                        format!(
                            "user name \"{}\" is already used by another consumer",
                            b.username
                        ),
                    );
                    ok = false;
                }
                if b.password_hash.parse::<bcrypt::HashParts>().is_err() {
                    self.error(
                        format!("{place}.password_hash"),
                        "is not a bcrypt hash ($2b$12$...); `tollgate hash-password` prints one",
                    );
                    ok = false;
                }
                users.push(b.username.clone());
                ok.then_some((b.username, b.password_hash))
            });
            let mut client_certs = Vec::new();
            for (j, c) in raw.client_certs.into_iter().enumerate() {
                let place = format!("{base}.client_certs[{j}]");
                let Some(id) = self.cert_identity(&place, c) else {
                    continue;
                };
                if let Some((_, owner)) = certs.iter().find(|(known, _)| *known == id) {
                    self.error(
                        place,
                        format!("this certificate name already identifies consumer \"{owner}\""),
                    );
                    continue;
                }
                certs.push((id.clone(), raw.name.clone()));
                client_certs.push(id);
            }
            let plan = raw.plan.as_ref().and_then(|p| {
                let found = plans.iter().position(|x| &x.name == p);
                if found.is_none() {
                    let known: Vec<&str> = plans.iter().map(|x| x.name.as_str()).collect();
                    self.error(
                        format!("{base}.plan"),
                        format!(
                            "unknown plan \"{p}\" (known: {})",
                            if known.is_empty() { "none".to_string() } else { known.join(", ") }
                        ),
                    );
                } else if !have_redis {
                    self.error(
                        format!("{base}.plan"),
                        "plans need redis: quotas are counted there, so that they hold across gateways, restarts and upgrades",
                    );
                }
                found
            });
            out.push(Consumer {
                name: raw.name,
                groups: raw.groups,
                api_key_digests: digests,
                basic_auth,
                client_certs,
                plan,
            });
        }
        out
    }

    /// One entry of a consumer's `client_certs`: exactly one kind of name.
    fn cert_identity(&mut self, place: &str, raw: RawCertIdentity) -> Option<CertIdentity> {
        let given: Vec<CertIdentity> = [
            raw.subject.map(|s| CertIdentity::Subject(normalize_dn(&s))),
            raw.cn.map(CertIdentity::CommonName),
            raw.dns.map(|d| CertIdentity::Dns(d.to_ascii_lowercase())),
            raw.uri.map(CertIdentity::Uri),
            raw.email.map(CertIdentity::Email),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut given = given.into_iter();
        match (given.next(), given.next()) {
            (Some(id), None) => {
                let value = match &id {
                    CertIdentity::Subject(v)
                    | CertIdentity::CommonName(v)
                    | CertIdentity::Dns(v)
                    | CertIdentity::Uri(v)
                    | CertIdentity::Email(v) => v,
                };
                if value.is_empty() {
                    self.error(place, "must not be empty");
                    return None;
                }
                Some(id)
            }
            _ => {
                self.error(place, "give exactly one of subject, cn, dns, uri or email");
                None
            }
        }
    }

    pub(super) fn jwt(&mut self, value: Option<Value>) -> Vec<JwtIssuer> {
        let items = self.sequence("jwt", value, false);
        let mut out: Vec<JwtIssuer> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let base = index_path("jwt", i);
            let Some(raw) = self.item::<RawJwt>(&base, item) else {
                continue;
            };
            if let Some(iss) = self.issuer(&base, raw) {
                if out.iter().any(|o| o.issuer == iss.issuer) {
                    self.error(
                        format!("{base}.issuer"),
                        format!("issuer \"{}\" is listed twice", iss.issuer),
                    );
                } else {
                    out.push(iss);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::loader::Fixed;
    use super::super::testing::*;
    use crate::config::CertIdentity;
    use crate::wire::key_digest;

    #[test]
    fn consumers_keys_and_users() {
        let hash = "$2b$04$abcdefghijklmnopqrstuuJ5zXbL0s7Cq1mH3XqkS9Vd0m9mXcQ3u";
        let c = load_with(
            &file(&format!("consumers:\n  - {{name: alice, groups: [staff], api_keys: [alice-key-1, 'sha256:{}'], basic_auth: {{username: alice, password_hash: '{hash}'}}}}\napi_key_header: X-Key\n", hex::encode(key_digest(b"other-key")))),
            &Fixed::default(),
        );
        let alice = &c.routing.consumers[0];
        assert_eq!(
            alice.api_key_digests,
            vec![key_digest(b"alice-key-1"), key_digest(b"other-key")]
        );
        assert_eq!(
            alice.basic_auth.as_ref().map(|b| b.0.as_str()),
            Some("alice")
        );
        assert_eq!(c.routing.api_key_header.as_str(), "x-key");
        let e = errors(&file("consumers:\n  - {name: a, api_keys: [short, 'sha256:zz'], basic_auth: {username: 'a:b', password_hash: plain}}\n  - {name: a, groups: ['bad group'], api_keys: [shared-key-1]}\n  - {name: c, api_keys: [shared-key-1]}\napi_key_header: content-length\n"));
        assert_reported(
            &e,
            &[
                "consumers[0].api_keys[0]: an API key must be at least 8 characters",
                "consumers[0].api_keys[1]: a sha256: key must be 64 hexadecimal digits",
                "consumers[0].basic_auth.username: must be non-empty and contain no ':'",
                "consumers[0].basic_auth.password_hash: is not a bcrypt hash",
                "consumers[1].name: consumer \"a\" is defined twice",
                "consumers[1].groups[0]: group names use letters",
                "consumers[2].api_keys[0]: this key is already given to consumer \"a\"",
                "api_key_header: \"content-length\" is not a usable header name",
            ],
        );
    }

    #[test]
    fn issuers_and_their_keys() {
        let machine = Fixed::default()
            .file(
                "rsa.pem",
                include_str!("../../../tests/fixtures/rsa-public.pem"),
            )
            .file(
                "jwks.json",
                include_str!("../../../tests/fixtures/jwks.json"),
            )
            .var("JWT_SECRET", "0123456789abcdef0123456789abcdef")
            .var("SHORT_SECRET", "short");
        let c = load_with(
            &file("jwt:\n  - {issuer: a, algorithms: [RS256], public_key_file: rsa.pem, audience: api}\n  - {issuer: b, algorithms: [HS256], secret_env: JWT_SECRET, audience: [api]}\n  - {issuer: c, algorithms: [RS256, ES256], jwks_file: jwks.json, audience: api}\n"),
            &machine,
        );
        assert_eq!(c.routing.jwt.len(), 3);
        assert_eq!(c.routing.jwt[0].keys[0].algorithms.len(), 1);
        assert_eq!(c.routing.jwt[0].consumer_claim, "sub");
        assert!(!c.routing.jwt[2].keys.is_empty());
        let e = errors_with(
            &file("jwt:\n  - {issuer: a, algorithms: [RS256], public_key_file: gone.pem}\n  - {issuer: b, algorithms: [HS256], secret_env: UNSET}\n  - {issuer: c, algorithms: [HS256], public_key_file: rsa.pem}\n  - {issuer: d, algorithms: [none], secret_env: JWT_SECRET}\n  - {issuer: a, algorithms: [HS256], secret_env: JWT_SECRET, leeway: 10m}\n"),
            &machine,
        );
        assert_reported(
            &e,
            &[
                "jwt[0].public_key_file: cannot read gone.pem",
                "jwt[1].secret_env: environment variable UNSET is not set or empty",
                "jwt[2].algorithms: none of the algorithms fits an RSA key",
                "jwt[3].algorithms[0]: \"none\" is not a supported algorithm",
                "jwt[4].leeway: must be at most 5m",
            ],
        );
        let c = load_with(
            &file("jwt: [{issuer: s, algorithms: [HS256], secret_env: SHORT_SECRET}]\n"),
            &machine,
        );
        let warnings: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
        assert_reported(
            &warnings,
            &[
                "jwt[0].secret_env: the secret in SHORT_SECRET is shorter than 32 bytes",
                "jwt[0].audience: not set",
            ],
        );
    }

    #[test]
    fn remote_key_sets() {
        let machine = Fixed::default()
            .file("ca.pem", include_str!("../../../tests/fixtures/ca.pem"))
            .file(
                "junk.pem",
                "-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n",
            );
        let c = load_with(
            &file("jwt:\n  - {issuer: a, algorithms: [ES256, RS256], jwks_url: 'https://id.example/keys', audience: api}\n  - {issuer: b, algorithms: [ES256], discovery_url: 'https://id.example/.well-known/openid-configuration', ca_file: ca.pem, refresh: {min: 10s, max: 10m}, fetch_timeout: 2s, audience: api}\n"),
            &machine,
        );
        let a = c.routing.jwt[0].remote.as_ref().unwrap();
        assert!(!a.discovery);
        assert_eq!(
            (a.refresh_min.as_secs(), a.refresh_max.as_secs()),
            (30, 3600)
        );
        assert!(c.routing.jwt[0].keys.is_empty());
        let b = c.routing.jwt[1].remote.as_ref().unwrap();
        assert!(b.discovery && b.ca.is_some());
        assert_eq!(
            (
                b.refresh_min.as_secs(),
                b.refresh_max.as_secs(),
                b.timeout.as_secs()
            ),
            (10, 600, 2)
        );
        let e = errors_with(
            &file("jwt:\n  - {issuer: a, algorithms: [ES256], jwks_url: 'http://id.example/keys'}\n  - {issuer: b, algorithms: [ES256], jwks_url: 'id.example/keys'}\n  - {issuer: c, algorithms: [HS256], jwks_url: 'https://id.example/keys'}\n  - {issuer: d, algorithms: [ES256], jwks_url: 'https://id.example/keys', discovery_url: 'https://id.example/d'}\n  - {issuer: e, algorithms: [ES256], jwks_url: 'https://i/k', refresh: {min: 0s, max: 200h}, fetch_timeout: 0s, ca_file: none.pem}\n  - {issuer: f, algorithms: [ES256], jwks_url: 'https://i/k', refresh: {min: 1m, max: 30s}}\n  - {issuer: g, algorithms: [ES256], jwks_file: jwks.json, ca_file: ca.pem, refresh: {min: 1s}}\n  - {issuer: h, algorithms: [ES256], jwks_url: 'https://u:p@id.example/keys', ca_file: junk.pem}\n"),
            &machine,
        );
        assert_reported(
            &e,
            &[
                "jwt[0].jwks_url: must be an https:// URL",
                "jwt[1].jwks_url: \"id.example/keys\" is not an https:// URL",
                "jwt[2].algorithms[0]: an HMAC algorithm needs a shared secret",
                "jwt[3]: give exactly one of public_key_file, jwks_file, jwks_url, discovery_url or secret_env",
                "jwt[4].refresh.min: must be at least 1s",
                "jwt[4].refresh.max: must be at most 168h",
                "jwt[4].fetch_timeout: must be more than 0s",
                "jwt[4].ca_file: cannot read /conf/none.pem",
                "jwt[5].refresh.max: must not be shorter than refresh.min",
                "jwt[6].ca_file: only applies to keys fetched",
                "jwt[6].refresh: only applies to keys fetched",
                "jwt[7].jwks_url: must not carry credentials",
                "jwt[7].ca_file: certificate 1 of /conf/junk.pem is not a valid X.509 certificate",
            ],
        );
    }

    #[test]
    fn client_certificate_names() {
        let c = load_with(
            &file("consumers:\n  - {name: a, client_certs: [{cn: alice}, {subject: 'cn = alice , o=Acme'}, {dns: Svc.Example.org}, {uri: 'spiffe://acme/a'}, {email: a@acme.example}]}\n"),
            &Fixed::default(),
        );
        assert_eq!(
            c.routing.consumers[0].client_certs,
            vec![
                CertIdentity::CommonName("alice".into()),
                CertIdentity::Subject("cn=alice,o=Acme".into()),
                CertIdentity::Dns("svc.example.org".into()),
                CertIdentity::Uri("spiffe://acme/a".into()),
                CertIdentity::Email("a@acme.example".into()),
            ]
        );
        let e = errors(&format!("{LISTENER}{POOL}consumers:\n  - {{name: a, client_certs: [{{cn: alice, dns: a.test}}, {{}}, {{cn: ''}}, {{cn: bob}}]}}\n  - {{name: b, client_certs: [{{cn: bob}}]}}\nroutes: [{{name: m, match: {{}}, upstream: a, auth: [mtls]}}]\n"));
        assert_reported(
            &e,
            &[
                "consumers[0].client_certs[0]: give exactly one of subject, cn, dns, uri or email",
                "consumers[0].client_certs[1]: give exactly one of",
                "consumers[0].client_certs[2]: must not be empty",
                "consumers[1].client_certs[0]: this certificate name already identifies consumer \"a\"",
                "routes[0].auth: mtls needs a TLS listener with tls.client_auth",
            ],
        );
    }
}
