//! The `jwt` section's issuers: their keys (PEM file, JWKS file or an HMAC secret from the
//! environment, all read through the loader) and which algorithms each key may verify.

use super::super::raw::RawJwt;
use super::super::{JwtIssuer, JwtKey};
use super::Validator;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use std::str::FromStr;
use std::time::Duration;

fn family_name(f: AlgorithmFamily) -> &'static str {
    match f {
        AlgorithmFamily::Hmac => "an HMAC secret",
        AlgorithmFamily::Rsa => "an RSA key",
        AlgorithmFamily::Ec => "an EC key",
        AlgorithmFamily::Ed => "an Ed25519 key",
    }
}

/// Read a PEM public key of any supported kind.
fn pem_key(bytes: &[u8]) -> Option<DecodingKey> {
    DecodingKey::from_rsa_pem(bytes)
        .or_else(|_| DecodingKey::from_ec_pem(bytes))
        .or_else(|_| DecodingKey::from_ed_pem(bytes))
        .ok()
}

impl Validator<'_> {
    /// Validate one issuer.
    pub(super) fn issuer(&mut self, base: &str, raw: RawJwt) -> Option<JwtIssuer> {
        let before = self.errors.len();
        if raw.issuer.is_empty() {
            self.error(format!("{base}.issuer"), "must not be empty");
        }
        let mut algorithms = Vec::new();
        for (i, name) in raw.algorithms.iter().enumerate() {
            match Algorithm::from_str(name) {
            Ok(a) => algorithms.push(a),
            Err(_) => self.error(
                format!("{base}.algorithms[{i}]"),
                format!("\"{name}\" is not a supported algorithm (HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA); \"none\" is never accepted"),
            ),
        }
        }
        if raw.algorithms.is_empty() {
            self.error(
                format!("{base}.algorithms"),
                "must list at least one algorithm",
            );
        }
        let sources = [
            raw.public_key_file.is_some(),
            raw.jwks_file.is_some(),
            raw.secret_env.is_some(),
        ];
        let mut candidates: Vec<(Option<String>, DecodingKey, Option<Algorithm>)> = Vec::new();
        if sources.iter().filter(|s| **s).count() != 1 {
            self.error(
                base.to_string(),
                "give exactly one of public_key_file, jwks_file or secret_env",
            );
        } else if let Some(path) = &raw.public_key_file {
            match self.loader.read(&self.loader.path(path)) {
                Ok(bytes) => match pem_key(&bytes) {
                    Some(k) => candidates.push((None, k, None)),
                    None => self.error(
                        format!("{base}.public_key_file"),
                        format!("{path} holds no RSA, EC or Ed25519 public key in PEM form"),
                    ),
                },
                Err(e) => self.error(
                    format!("{base}.public_key_file"),
                    format!("cannot read {path}: {e}"),
                ),
            }
        } else if let Some(path) = &raw.jwks_file {
            let parsed = self
                .loader
                .read(&self.loader.path(path))
                .map_err(|e| format!("cannot read {path}: {e}"))
                .and_then(|b| {
                    serde_json::from_slice::<JwkSet>(&b)
                        .map_err(|e| format!("{path} is not a JWKS document: {e}"))
                });
            match parsed {
                Ok(set) => {
                    for (i, jwk) in set.keys.iter().enumerate() {
                        match DecodingKey::from_jwk(jwk) {
                            Ok(k) => {
                                let alg = jwk
                                    .common
                                    .key_algorithm
                                    .and_then(|ka| Algorithm::from_str(&ka.to_string()).ok());
                                candidates.push((jwk.common.key_id.clone(), k, alg));
                            }
                            Err(e) => self.warn(
                                format!("{base}.jwks_file"),
                                format!("key {i} of {path} cannot be used and is left out: {e}"),
                            ),
                        }
                    }
                    if candidates.is_empty() {
                        self.error(
                            format!("{base}.jwks_file"),
                            format!("{path} holds no usable key"),
                        );
                    }
                }
                Err(m) => self.error(format!("{base}.jwks_file"), m),
            }
        } else if let Some(var) = &raw.secret_env {
            match self.loader.env(var) {
                Some(secret) if !secret.is_empty() => {
                    if secret.len() < 32 {
                        self.warn(
                            format!("{base}.secret_env"),
                            format!("the secret in {var} is shorter than 32 bytes"),
                        );
                    }
                    candidates.push((None, DecodingKey::from_secret(secret.as_bytes()), None));
                }
                _ => {
                    self.missing_secret(
                        format!("{base}.secret_env"),
                        format!("environment variable {var} is not set or empty"),
                    );
                    if self.loader.secrets_optional() {
                        // Checked only: stand in for the secret so the rest is checked.
                        candidates.push((None, DecodingKey::from_secret(&[0; 32]), None));
                    }
                }
            }
        }

        let mut keys = Vec::new();
        for (kid, key, pinned) in candidates {
            let family = key.family();
            let fitting: Vec<Algorithm> = algorithms
                .iter()
                .copied()
                .filter(|a| a.family() == family && pinned.is_none_or(|p| p == *a))
                .collect();
            if fitting.is_empty() {
                let msg = format!(
                    "none of the algorithms fits {}{}",
                    family_name(family),
                    kid.as_deref()
                        .map(|k| format!(" (kid \"{k}\")"))
                        .unwrap_or_default()
                );
                if keys.is_empty() && raw.jwks_file.is_none() {
                    self.error(format!("{base}.algorithms"), msg);
                } else {
                    self.warn(
                        format!("{base}.algorithms"),
                        format!("{msg}; that key is left out"),
                    );
                }
                continue;
            }
            keys.push(JwtKey {
                kid,
                key,
                algorithms: fitting,
            });
        }
        if raw.jwks_file.is_some() && keys.is_empty() && self.errors.len() == before {
            self.error(
                format!("{base}.algorithms"),
                "no key of the JWKS fits any of the algorithms",
            );
        }
        for (i, alg) in algorithms.iter().enumerate() {
            if !keys.is_empty() && !keys.iter().any(|k| k.algorithms.contains(alg)) {
                self.warn(
                    format!("{base}.algorithms[{i}]"),
                    format!("no key of this issuer can verify {alg:?} tokens"),
                );
            }
        }
        let audience = raw.audience.map(|a| a.into_vec()).unwrap_or_default();
        if audience.is_empty() {
            self.warn(
                format!("{base}.audience"),
                "not set: tokens meant for any audience are accepted",
            );
        }
        let leeway = raw.leeway.map(|d| d.0).unwrap_or(Duration::from_secs(30));
        if leeway > Duration::from_secs(300) {
            self.error(format!("{base}.leeway"), "must be at most 5m");
        }
        if self.errors.len() > before {
            return None;
        }
        Some(JwtIssuer {
            issuer: raw.issuer,
            keys,
            audience,
            consumer_claim: raw.consumer_claim.unwrap_or_else(|| "sub".to_string()),
            groups_claim: raw.groups_claim,
            leeway,
        })
    }
}
