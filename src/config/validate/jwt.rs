//! The `jwt` section's issuers: their keys (PEM file, JWKS file, an HMAC secret from the
//! environment, or a JWKS fetched over HTTPS while running, directly or through OpenID Connect
//! discovery) and which algorithms each key may verify.

use super::super::jwks::fitting;
use super::super::raw::{RawJwksRefresh, RawJwt};
use super::super::{read_jwks, JwtIssuer, JwtKey, RemoteJwks};
use super::Validator;
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

/// Where an issuer's keys come from.
enum Source<'r> {
    PemFile(&'r str),
    JwksFile(&'r str),
    Url { url: &'r str, discovery: bool },
    Secret(&'r str),
}

const DEFAULT_REFRESH_MIN: Duration = Duration::from_secs(30);
const DEFAULT_REFRESH_MAX: Duration = Duration::from_secs(3600);
const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

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
        let sources: Vec<Source> = [
            raw.public_key_file.as_deref().map(Source::PemFile),
            raw.jwks_file.as_deref().map(Source::JwksFile),
            raw.jwks_url.as_deref().map(|url| Source::Url {
                url,
                discovery: false,
            }),
            raw.discovery_url.as_deref().map(|url| Source::Url {
                url,
                discovery: true,
            }),
            raw.secret_env.as_deref().map(Source::Secret),
        ]
        .into_iter()
        .flatten()
        .collect();
        let remote = matches!(sources.as_slice(), [Source::Url { .. }]);
        if !remote {
            for (key, given) in [
                ("ca_file", raw.ca_file.is_some()),
                ("refresh", raw.refresh.is_some()),
                ("fetch_timeout", raw.fetch_timeout.is_some()),
            ] {
                if given {
                    self.error(
                        format!("{base}.{key}"),
                        "only applies to keys fetched from jwks_url or discovery_url",
                    );
                }
            }
        }
        let mut candidates: Vec<DecodingKey> = Vec::new();
        let mut keys = Vec::new();
        let mut fetched = None;
        match sources.as_slice() {
            [Source::PemFile(path)] => match self.loader.read(&self.loader.path(path)) {
                Ok(bytes) => match pem_key(&bytes) {
                    Some(k) => candidates.push(k),
                    None => self.error(
                        format!("{base}.public_key_file"),
                        format!("{path} holds no RSA, EC or Ed25519 public key in PEM form"),
                    ),
                },
                Err(e) => self.error(
                    format!("{base}.public_key_file"),
                    format!("cannot read {path}: {e}"),
                ),
            },
            [Source::JwksFile(path)] => {
                let read = self
                    .loader
                    .read(&self.loader.path(path))
                    .map_err(|e| format!("cannot read {path}: {e}"))
                    .and_then(|b| read_jwks(&b, &algorithms).map_err(|e| format!("{path}: {e}")));
                match read {
                    Ok((found, left_out)) => {
                        for note in left_out {
                            self.warn(
                                format!("{base}.jwks_file"),
                                format!("{path}: {note}; it is left out"),
                            );
                        }
                        if found.is_empty() && !algorithms.is_empty() {
                            self.error(
                                format!("{base}.jwks_file"),
                                format!("{path} holds no key that fits the algorithms"),
                            );
                        }
                        keys = found;
                    }
                    Err(m) => self.error(format!("{base}.jwks_file"), m),
                }
            }
            [Source::Url { url, discovery }] => {
                let key = if *discovery {
                    "discovery_url"
                } else {
                    "jwks_url"
                };
                fetched = self.remote_jwks(base, key, url, *discovery, &raw);
                if let Some(i) = algorithms
                    .iter()
                    .position(|a| a.family() == AlgorithmFamily::Hmac)
                {
                    self.error(
                        format!("{base}.algorithms[{i}]"),
                        "an HMAC algorithm needs a shared secret (secret_env); a published key set holds public keys",
                    );
                }
            }
            [Source::Secret(var)] => match self.loader.env(var) {
                Some(secret) if !secret.is_empty() => {
                    if secret.len() < 32 {
                        self.warn(
                            format!("{base}.secret_env"),
                            format!("the secret in {var} is shorter than 32 bytes"),
                        );
                    }
                    candidates.push(DecodingKey::from_secret(secret.as_bytes()));
                }
                _ => {
                    self.missing_secret(
                        format!("{base}.secret_env"),
                        format!("environment variable {var} is not set or empty"),
                    );
                    if self.loader.secrets_optional() {
                        // Checked only: stand in for the secret so the rest is checked.
                        candidates.push(DecodingKey::from_secret(&[0; 32]));
                    }
                }
            },
            _ => self.error(
                base.to_string(),
                "give exactly one of public_key_file, jwks_file, jwks_url, discovery_url or secret_env",
            ),
        }

        for key in candidates {
            let fitting = fitting(&algorithms, &key, None);
            if fitting.is_empty() {
                self.error(
                    format!("{base}.algorithms"),
                    format!("none of the algorithms fits {}", family_name(key.family())),
                );
                continue;
            }
            keys.push(JwtKey {
                kid: None,
                key,
                algorithms: fitting,
            });
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
            algorithms,
            audience,
            consumer_claim: raw.consumer_claim.unwrap_or_else(|| "sub".to_string()),
            groups_claim: raw.groups_claim,
            leeway,
            remote: fetched,
        })
    }

    /// The URL, trust and refresh bounds of a key set fetched while running.
    fn remote_jwks(
        &mut self,
        base: &str,
        key: &str,
        url: &str,
        discovery: bool,
        raw: &RawJwt,
    ) -> Option<RemoteJwks> {
        let place = format!("{base}.{key}");
        let parsed = match url.parse::<http::Uri>() {
            Ok(u) if u.authority().is_some_and(|a| a.as_str().contains('@')) => {
                self.error(
                    place.clone(),
                    "must not carry credentials (user:password@): they would be sent and logged with the URL",
                );
                None
            }
            Ok(u) if u.scheme_str() == Some("https") && u.host().is_some_and(|h| !h.is_empty()) => {
                Some(u)
            }
            Ok(u) if u.scheme_str() == Some("http") => {
                self.error(
                    place.clone(),
                    "must be an https:// URL: keys fetched over plain HTTP could be replaced by anyone on the path",
                );
                None
            }
            _ => {
                self.error(
                    place.clone(),
                    format!("\"{url}\" is not an https:// URL with a host"),
                );
                None
            }
        };
        let ca = raw
            .ca_file
            .as_deref()
            .and_then(|path| self.ca_bundle(&format!("{base}.ca_file"), path));
        let (min, max) = match &raw.refresh {
            Some(RawJwksRefresh { min, max }) => (
                min.as_ref().map_or(DEFAULT_REFRESH_MIN, |d| d.0),
                max.as_ref().map_or(DEFAULT_REFRESH_MAX, |d| d.0),
            ),
            None => (DEFAULT_REFRESH_MIN, DEFAULT_REFRESH_MAX),
        };
        if min < Duration::from_secs(1) {
            self.error(format!("{base}.refresh.min"), "must be at least 1s");
        }
        if max < min {
            self.error(
                format!("{base}.refresh.max"),
                "must not be shorter than refresh.min",
            );
        }
        if max > Duration::from_secs(7 * 86400) {
            self.error(
                format!("{base}.refresh.max"),
                "must be at most 168h (a week)",
            );
        }
        let timeout = raw
            .fetch_timeout
            .as_ref()
            .map_or(DEFAULT_FETCH_TIMEOUT, |d| d.0);
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            self.error(
                format!("{base}.fetch_timeout"),
                "must be more than 0s and at most 1m",
            );
        }
        Some(RemoteJwks {
            url: parsed?,
            discovery,
            ca,
            refresh_min: min,
            refresh_max: max,
            timeout,
        })
    }
}
