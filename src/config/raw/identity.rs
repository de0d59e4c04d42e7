//! The file's image of who callers are: consumers, their credentials, the authentication
//! methods a route accepts and the trusted JWT issuers.

use super::super::units::ConfDuration;
use serde::Deserialize;

/// One entry of `consumers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsumer {
    pub name: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub api_keys: Vec<String>,
    pub basic_auth: Option<RawBasicAuth>,
    #[serde(default)]
    pub client_certs: Vec<RawCertIdentity>,
    pub plan: Option<String>,
}

/// One name a client certificate may carry: exactly one of these keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertIdentity {
    pub subject: Option<String>,
    pub cn: Option<String>,
    pub dns: Option<String>,
    pub uri: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    pub username: String,
    pub password_hash: String,
}

/// The authentication methods a route may accept.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawAuthMethod {
    ApiKey,
    Basic,
    Jwt,
    Mtls,
}

/// A single value or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// One entry of `jwt`: a token issuer and how its signatures are checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    pub issuer: String,
    pub algorithms: Vec<String>,
    pub public_key_file: Option<String>,
    pub jwks_file: Option<String>,
    pub jwks_url: Option<String>,
    pub discovery_url: Option<String>,
    pub ca_file: Option<String>,
    pub refresh: Option<RawJwksRefresh>,
    pub fetch_timeout: Option<ConfDuration>,
    pub secret_env: Option<String>,
    pub audience: Option<OneOrMany>,
    pub consumer_claim: Option<String>,
    pub groups_claim: Option<String>,
    pub leeway: Option<ConfDuration>,
}

/// `jwt[].refresh`: how often a remote JWKS is fetched again.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwksRefresh {
    pub min: Option<ConfDuration>,
    pub max: Option<ConfDuration>,
}
