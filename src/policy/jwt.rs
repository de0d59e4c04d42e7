//! JWT verification: the token's `iss` picks the configured issuer, the `kid` (if any) its key;
//! the signature, `exp`, `nbf`, `iss` and `aud` are then checked by `jsonwebtoken`. Each key
//! verifies only the configured algorithms of its own type, so `alg: none` and algorithm
//! confusion (an HS256 token against an RSA key) never verify. An issuer's keys are in the
//! file or fetched while running ([`super::jwks`]).

use super::jwks::RemoteKeys;
use crate::config::{JwtIssuer, JwtKey};
use jsonwebtoken::{AlgorithmFamily, Header, Validation};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

/// What a verified token says.
#[derive(Debug)]
pub struct Claimed {
    pub name: String,
    pub groups: Vec<String>,
}

struct Issuer {
    keys: Vec<JwtKey>,
    remote: Option<Arc<RemoteKeys>>,
    /// The claim checks, one per key type (`jsonwebtoken` wants every algorithm of a
    /// validation to fit the key).
    validations: Vec<(AlgorithmFamily, Validation)>,
    consumer_claim: String,
    groups_claim: Option<String>,
}

/// What trying a token against a set of keys found.
enum Tried {
    Verified(serde_json::Value),
    /// Keys that could verify it refused it.
    Refused,
    /// No key has the token's `kid` and algorithm.
    NoKey,
}

impl Issuer {
    fn try_keys(&self, keys: &[JwtKey], header: &Header, token: &str) -> Tried {
        let mut candidates = keys
            .iter()
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .filter(|k| k.algorithms.contains(&header.alg))
            .peekable();
        if candidates.peek().is_none() {
            return Tried::NoKey;
        }
        for k in candidates {
            let family = k.key.family();
            let Some((_, v)) = self.validations.iter().find(|(f, _)| *f == family) else {
                continue;
            };
            if let Ok(d) = jsonwebtoken::decode::<serde_json::Value>(token, &k.key, v) {
                return Tried::Verified(d.claims);
            }
        }
        Tried::Refused
    }
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

/// The claim checks of an issuer for the keys of one type.
fn validation(i: &JwtIssuer, family: AlgorithmFamily) -> Option<Validation> {
    let algorithms: Vec<_> = i
        .algorithms
        .iter()
        .copied()
        .filter(|a| a.family() == family)
        .collect();
    let mut v = Validation::new(*algorithms.first()?);
    v.algorithms = algorithms;
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
    Some(v)
}

impl JwtVerifier {
    /// Compile the validated issuers; fetched key sets of `previous` with the same source are
    /// kept, with their keys and schedule.
    pub fn new(issuers: &[JwtIssuer], previous: Option<&JwtVerifier>) -> Self {
        let issuers = issuers
            .iter()
            .map(|i| {
                let remote = i.remote.as_ref().map(|source| {
                    let before = previous.into_iter().flat_map(|p| p.remote_sets());
                    let mut same_keys = None;
                    for r in before {
                        if r.same_source(&i.issuer, source, &i.algorithms) {
                            return r;
                        }
                        if r.same_keys(&i.issuer, source) {
                            same_keys = Some(r);
                        }
                    }
                    // Other settings for the same key set: the keys held stay usable.
                    Arc::new(match same_keys {
                        Some(r) => RemoteKeys::succeeding(&r, source, &i.algorithms),
                        None => RemoteKeys::new(&i.issuer, source, &i.algorithms),
                    })
                });
                let validations = [
                    AlgorithmFamily::Hmac,
                    AlgorithmFamily::Rsa,
                    AlgorithmFamily::Ec,
                    AlgorithmFamily::Ed,
                ]
                .into_iter()
                .filter_map(|f| Some((f, validation(i, f)?)))
                .collect();
                (
                    i.issuer.clone(),
                    Issuer {
                        keys: i.keys.clone(),
                        remote,
                        validations,
                        consumer_claim: i.consumer_claim.clone(),
                        groups_claim: i.groups_claim.clone(),
                    },
                )
            })
            .collect();
        JwtVerifier { issuers }
    }

    /// The key sets fetched while running.
    pub fn remote_sets(&self) -> impl Iterator<Item = Arc<RemoteKeys>> + '_ {
        self.issuers.values().filter_map(|i| i.remote.clone())
    }

    /// Verify `token`; `None` when it is not a valid token of a trusted issuer. A token whose
    /// key a fetched set lacks makes the set fetched again (rate-limited) before it is judged.
    pub async fn verify(&self, token: &str) -> Option<Claimed> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        // The unverified `iss` only chooses which keys to try; nothing is trusted before the
        // signature and claims are verified below.
        let iss: IssuerOnly = jsonwebtoken::dangerous::insecure_decode_claims(token).ok()?;
        let issuer = self.issuers.get(&iss.iss)?;
        let tried = match &issuer.remote {
            None => issuer.try_keys(&issuer.keys, &header, token),
            Some(remote) => match issuer.try_keys(&remote.keys(), &header, token) {
                // Boxed: a fetch's future is large; every verification would carry it.
                Tried::NoKey if Box::pin(remote.refetch_for_unknown_key()).await => {
                    issuer.try_keys(&remote.keys(), &header, token)
                }
                tried => tried,
            },
        };
        let Tried::Verified(claims) = tried else {
            return None;
        };
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
