//! Security schemes and requirements: who the document says may call an operation.

use serde_json::Value;

/// A security scheme, as far as a gateway can tell them apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityScheme {
    /// An API key in a header, query parameter or cookie (`location`), named `name`.
    ApiKey { name: String, location: String },
    /// HTTP basic authentication.
    Basic,
    /// HTTP bearer tokens (`bearerFormat`, when given).
    Bearer { format: Option<String> },
    /// Another HTTP authentication scheme (`digest`, ...).
    OtherHttp(String),
    /// OAuth 2 flows.
    OAuth2,
    /// OpenID Connect discovery.
    OpenIdConnect,
    /// Client certificates.
    MutualTls,
}

impl SecurityScheme {
    pub(super) fn from_spec(s: &oas3::spec::SecurityScheme) -> SecurityScheme {
        use oas3::spec::SecurityScheme as S;
        match s {
            S::ApiKey { name, location, .. } => SecurityScheme::ApiKey {
                name: name.clone(),
                location: location.clone(),
            },
            S::Http {
                scheme,
                bearer_format,
                ..
            } => match scheme.to_ascii_lowercase().as_str() {
                "basic" => SecurityScheme::Basic,
                "bearer" => SecurityScheme::Bearer {
                    format: bearer_format.clone(),
                },
                other => SecurityScheme::OtherHttp(other.to_string()),
            },
            S::OAuth2 { .. } => SecurityScheme::OAuth2,
            S::OpenIdConnect { .. } => SecurityScheme::OpenIdConnect,
            S::MutualTls { .. } => SecurityScheme::MutualTls,
        }
    }
}

/// One scheme a requirement names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUse {
    /// The scheme's name in the document.
    pub name: String,
    pub scheme: SecurityScheme,
    /// The scopes (or roles) the requirement asks of it.
    pub scopes: Vec<String>,
}

/// A `security` list: alternatives, each the schemes that must all pass.
pub(super) fn requirements(
    value: &Value,
    schemes: &[(String, Result<SecurityScheme, String>)],
) -> Result<Vec<Vec<AuthUse>>, String> {
    let Value::Array(list) = value else {
        return Err("security: must be a list of requirements".into());
    };
    let mut out = Vec::new();
    for requirement in list {
        let Value::Object(names) = requirement else {
            return Err("security: each requirement is a map of scheme names".into());
        };
        let mut all = Vec::new();
        for (name, scopes) in names {
            let scopes = scopes
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            match schemes.iter().find(|(n, _)| n == name) {
                Some((_, Ok(scheme))) => all.push(AuthUse {
                    name: name.clone(),
                    scheme: scheme.clone(),
                    scopes,
                }),
                Some((_, Err(e))) => return Err(format!("security scheme \"{name}\": {e}")),
                None => {
                    return Err(format!(
                    "security names \"{name}\", which components.securitySchemes does not declare"
                ))
                }
            }
        }
        out.push(all);
    }
    Ok(out)
}

/// The gateway's authentication methods (`api_key`, `basic`, `jwt`, `mtls`) that carry out an
/// operation's security, any one of which admits a caller; every requirement that cannot be
/// carried out is said, one message each. API keys are read from `api_key_header`. Scopes or
/// roles a requirement asks for are not checked by an authentication method: unless
/// `scopes_decided` (the route has its own group rules), they are a problem too, since the
/// route would admit any authenticated caller.
pub fn auth_methods(
    security: Option<&[Vec<AuthUse>]>,
    api_key_header: &str,
    scopes_decided: bool,
) -> Result<Vec<&'static str>, Vec<String>> {
    let mut methods = Vec::new();
    let mut problems = Vec::new();
    let alternatives = security.unwrap_or_default();
    if alternatives.len() > 1 && alternatives.iter().any(|a| a.is_empty()) {
        problems.push(
            "security makes authentication optional ({} beside other requirements): a route either requires one of its methods or none"
                .into(),
        );
    }
    for all in alternatives {
        let [one] = all.as_slice() else {
            if all.len() > 1 {
                let names: Vec<&str> = all.iter().map(|u| u.name.as_str()).collect();
                problems.push(format!(
                    "security requires {} together: a route accepts any one of its methods, not several at once",
                    names.join(" and ")
                ));
            }
            continue;
        };
        let method = match &one.scheme {
            SecurityScheme::ApiKey { name, location } if location == "header" => {
                if name.eq_ignore_ascii_case(api_key_header) {
                    Ok("api_key")
                } else {
                    Err(format!(
                        "scheme \"{}\" takes API keys in header {name}, but the gateway reads them from {api_key_header} (set api_key_header: {name})",
                        one.name
                    ))
                }
            }
            SecurityScheme::ApiKey { location, .. } => Err(format!(
                "scheme \"{}\" takes API keys in the {location}: the gateway reads them from a header only",
                one.name
            )),
            SecurityScheme::Basic => Ok("basic"),
            SecurityScheme::Bearer { format } => match format.as_deref() {
                None => Ok("jwt"),
                Some(f) if f.eq_ignore_ascii_case("jwt") => Ok("jwt"),
                Some(f) => Err(format!(
                    "scheme \"{}\" takes bearer tokens of format {f}: the gateway checks JWTs only",
                    one.name
                )),
            },
            SecurityScheme::OpenIdConnect => Ok("jwt"),
            SecurityScheme::MutualTls => Ok("mtls"),
            SecurityScheme::OtherHttp(s) => Err(format!(
                "scheme \"{}\" is HTTP {s} authentication, which the gateway does not implement",
                one.name
            )),
            SecurityScheme::OAuth2 => Err(format!(
                "scheme \"{}\" is OAuth 2 (its tokens may be opaque, checked by introspection), which the gateway does not implement; describe JWT access tokens as http bearer (bearerFormat: JWT) or openIdConnect",
                one.name
            )),
        };
        let method = method.and_then(|m| {
            if one.scopes.is_empty() || scopes_decided {
                return Ok(m);
            }
            Err(format!(
                "security asks scheme \"{}\" for {}, which authentication alone does not check: give the route allow_groups (or allow_consumers)",
                one.name,
                one.scopes.join(", ")
            ))
        });
        match method {
            Ok(m) if !methods.contains(&m) => methods.push(m),
            Ok(_) => {}
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() {
        Ok(methods)
    } else {
        Err(problems)
    }
}
