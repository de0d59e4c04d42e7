//! Consumers (names, groups, API keys stored as digests, basic-auth users), the API key
//! header, and the JWT issuers (their keys are checked in [`super::jwt`]).

use super::super::raw::{RawConsumer, RawJwt};
use super::super::{Consumer, JwtIssuer};
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

    pub(super) fn consumers(&mut self, value: Option<Value>) -> Vec<Consumer> {
        let items = self.sequence("consumers", value, false);
        let mut out: Vec<Consumer> = Vec::new();
        let mut keys: std::collections::HashMap<[u8; 32], String> = Default::default();
        let mut users: Vec<String> = Vec::new();
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
            out.push(Consumer {
                name: raw.name,
                groups: raw.groups,
                api_key_digests: digests,
                basic_auth,
            });
        }
        out
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
