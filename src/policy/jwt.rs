//! JWT verification: the token's `iss` picks the configured issuer, the `kid` (if any) its key;
//! the signature, `exp`, `nbf`, `iss` and `aud` are then checked by `jsonwebtoken`. Each key
//! verifies only the configured algorithms of its own type, so `alg: none` and algorithm
//! confusion (an HS256 token against an RSA key) never verify.

use crate::config::JwtIssuer;
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;
use std::collections::HashMap;

/// What a verified token says.
#[derive(Debug)]
pub struct Claimed {
    pub name: String,
    pub groups: Vec<String>,
}

struct Key {
    kid: Option<String>,
    key: DecodingKey,
    validation: Validation,
}

struct Issuer {
    keys: Vec<Key>,
    consumer_claim: String,
    groups_claim: Option<String>,
}

/// The trusted issuers, by `iss`.
#[derive(Default)]
pub struct JwtVerifier {
    issuers: HashMap<String, Issuer>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuers", &self.issuers.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Deserialize)]
struct IssuerOnly {
    iss: String,
}

impl JwtVerifier {
    /// Compile the validated issuers.
    pub fn new(issuers: &[JwtIssuer]) -> Self {
        let issuers = issuers
            .iter()
            .map(|i| {
                let keys = i
                    .keys
                    .iter()
                    .map(|k| {
                        let mut v = Validation::new(k.algorithms[0]);
                        v.algorithms = k.algorithms.clone();
                        v.set_issuer(&[&i.issuer]);
                        if i.audience.is_empty() {
                            v.validate_aud = false;
                        } else {
                            v.set_audience(&i.audience);
                        }
                        v.validate_exp = true;
                        v.validate_nbf = true;
                        v.leeway = i.leeway.as_secs();
                        v.set_required_spec_claims(&["exp", "iss"]);
                        Key {
                            kid: k.kid.clone(),
                            key: k.key.clone(),
                            validation: v,
                        }
                    })
                    .collect();
                (
                    i.issuer.clone(),
                    Issuer {
                        keys,
                        consumer_claim: i.consumer_claim.clone(),
                        groups_claim: i.groups_claim.clone(),
                    },
                )
            })
            .collect();
        JwtVerifier { issuers }
    }

    /// Verify `token`; `None` when it is not a valid token of a trusted issuer.
    pub fn verify(&self, token: &str) -> Option<Claimed> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        // The unverified `iss` only chooses which keys to try; nothing is trusted before the
        // signature and claims are verified below.
        let iss: IssuerOnly = jsonwebtoken::dangerous::insecure_decode_claims(token).ok()?;
        let issuer = self.issuers.get(&iss.iss)?;
        let claims = issuer
            .keys
            .iter()
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .filter(|k| k.validation.algorithms.contains(&header.alg))
            .find_map(|k| {
                jsonwebtoken::decode::<serde_json::Value>(token, &k.key, &k.validation).ok()
            })?
            .claims;
        let name = claims.get(&issuer.consumer_claim)?.as_str()?.to_string();
        if name.is_empty() {
            return None;
        }
        let groups = match issuer.groups_claim.as_ref().and_then(|c| claims.get(c)) {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect(),
            Some(serde_json::Value::String(s)) => s
                .split([' ', ','])
                .filter(|g| !g.is_empty())
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        Some(Claimed { name, groups })
    }
}
