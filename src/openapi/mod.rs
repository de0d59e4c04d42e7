//! API descriptions: an OpenAPI 3.0 or 3.1 document (YAML or JSON) read into the operations a
//! gateway can route and check. The document's structure (paths, operations, parameters,
//! request bodies, security schemes) is read with the `oas3` crate; its schemas stay JSON,
//! converted from OpenAPI 3.0's dialect to JSON Schema 2020-12 where the two differ
//! ([`schema`]), and are compiled with the `jsonschema` crate ([`check`]).
//!
//! A leaf module: it knows nothing of routes or requests in flight; the configuration turns
//! its operations into routes, and the proxy asks the compiled [`check::RequestRules`].

pub mod answer;
pub mod check;
mod compiler;
pub mod import;
mod json;
mod params;
pub mod schema;
mod security;

pub use check::{RequestRules, Violation};
pub use params::{Location, ParamRule, Style};
pub use security::{auth_methods, AuthUse, SecurityScheme};

use http::Method;
use oas3::spec::{Parameter, ParameterIn, ParameterStyle};
use serde_json::Value;

/// The OpenAPI versions read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V30,
    V31,
}

/// A parsed API description.
pub struct Document {
    spec: oas3::Spec,
    /// The document as JSON, its schemas in JSON Schema 2020-12 form.
    pub raw: Value,
    pub version: Version,
}

impl std::fmt::Debug for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Document")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// One operation of the document: a method on a path template.
#[derive(Debug, Clone)]
pub struct Operation {
    /// `operationId`, when the document gives one.
    pub id: Option<String>,
    pub method: Method,
    /// The path template as written in the document (`/pets/{petId}`).
    pub path: String,
    /// Where it is in the document, as a person reads it: `paths./pets/{petId}.get`.
    pub place: String,
    /// JSON pointer to the operation object.
    pub pointer: String,
    /// Alternatives (any one suffices), each a set of schemes that must all pass. `None`: the
    /// document says nothing (neither the operation nor the document); `Some(vec![])`: no
    /// security (`security: []`).
    pub security: Option<Vec<Vec<AuthUse>>>,
    pub parameters: Vec<ParamRule>,
    pub body: Option<BodyRule>,
    /// `(status or "default", media type, JSON pointer to the schema)` of each JSON response.
    pub responses: Vec<(String, String, String)>,
    /// Every response status the operation describes (`200`, `2XX`, `default`).
    pub statuses: Vec<String>,
}

impl Operation {
    /// How a configuration names the operation: its id, else `METHOD /path`.
    pub fn reference(&self) -> String {
        self.id
            .clone()
            .unwrap_or_else(|| format!("{} {}", self.method, self.path))
    }

    /// The route name of the operation: its id, else `method_path`, characters other than
    /// letters, digits, `_`, `-` and `.` written as `_`.
    pub fn route_name(&self) -> String {
        let text = match &self.id {
            Some(id) => id.clone(),
            None => format!(
                "{}_{}",
                self.method.as_str().to_ascii_lowercase(),
                self.path
            ),
        };
        let name: String = text
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        name.trim_matches('_').to_string()
    }
}

/// An operation's request body, as the document describes it.
#[derive(Debug, Clone)]
pub struct BodyRule {
    pub required: bool,
    /// Media types (or ranges: `application/*`, `*/*`) and the pointer to each one's schema.
    pub media: Vec<(String, Option<String>)>,
}

/// JSON pointer escaping of one reference token.
pub fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// The JSON pointer a local `$ref` (`#/components/...`) names; `Err` for another document.
fn local_ref(reference: &str) -> Result<String, String> {
    match reference.strip_prefix('#') {
        Some(p) if p.is_empty() || p.starts_with('/') => Ok(p.to_string()),
        _ => Err(format!(
            "\"{reference}\": only references within the document (#/...) are read"
        )),
    }
}

impl Document {
    /// The object a `$ref` names within the document, and its pointer; references to
    /// references are followed a few times (a loop is an error, never a crash).
    fn follow(&self, reference: &str) -> Result<(String, &Value), String> {
        let mut pointer = local_ref(reference)?;
        for _ in 0..8 {
            let value = self
                .at(&pointer)
                .ok_or_else(|| format!("\"{reference}\" names nothing in the document"))?;
            match value.get("$ref").and_then(Value::as_str) {
                Some(next) => pointer = local_ref(next)?,
                None => return Ok((pointer, value)),
            }
        }
        Err(format!(
            "\"{reference}\": too many references in a row (a loop?)"
        ))
    }

    /// An object the document gives in place or by `$ref` (`at`: where it is written).
    fn object<T: serde::de::DeserializeOwned>(
        &self,
        value: Option<&Value>,
        at: &str,
    ) -> Result<(String, T), String> {
        let value = value.ok_or_else(|| format!("nothing at {at}"))?;
        let (pointer, value) = match value.get("$ref").and_then(Value::as_str) {
            Some(r) => self.follow(r)?,
            None => (at.to_string(), value),
        };
        let t = serde_json::from_value(value.clone()).map_err(|e| format!("{pointer}: {e}"))?;
        Ok((pointer, t))
    }

    /// Read a document from its text (YAML or JSON).
    pub fn parse(text: &str) -> Result<Document, String> {
        let mut raw: Value =
            serde_yaml::from_str(text).map_err(|e| format!("not YAML or JSON: {e}"))?;
        let version = match raw.get("openapi").and_then(Value::as_str) {
            Some(v) if v.starts_with("3.0.") || v == "3.0" => Version::V30,
            Some(v) if v.starts_with("3.1.") || v == "3.1" => Version::V31,
            Some(v) => {
                return Err(format!(
                    "OpenAPI {v} is not read: OpenAPI 3.0 and 3.1 documents are"
                ))
            }
            None if raw.get("swagger").is_some() => return Err(
                "a Swagger 2.0 document: convert it to OpenAPI 3 first (e.g. with swagger2openapi)"
                    .into(),
            ),
            None => return Err("no \"openapi\" version field: not an OpenAPI document".into()),
        };
        if version == Version::V30 {
            schema::upgrade_document(&mut raw);
        }
        let spec: oas3::Spec = serde_path_to_error::deserialize(&raw)
            .map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
        Ok(Document { spec, raw, version })
    }

    /// The value at a JSON pointer.
    pub fn at(&self, pointer: &str) -> Option<&Value> {
        self.raw.pointer(pointer)
    }

    /// The first server's URL path (`/v1` of `https://api.example.com/v1`), when it has one
    /// and no variables: the prefix of every path of the document.
    pub fn server_path(&self) -> Option<String> {
        let url = &self.spec.servers.first()?.url;
        if url.contains('{') {
            return None;
        }
        let path = match url.find("://") {
            Some(i) => url[i + 3..].find('/').map(|j| &url[i + 3 + j..])?,
            None => url.as_str(),
        };
        let path = path.trim_end_matches('/');
        (path.starts_with('/') && path.len() > 1).then(|| path.to_string())
    }

    /// The security schemes the document declares, by name.
    pub fn security_schemes(&self) -> Vec<(String, Result<SecurityScheme, String>)> {
        let Some(Value::Object(schemes)) = self.at("/components/securitySchemes") else {
            return Vec::new();
        };
        schemes
            .iter()
            .map(|(name, value)| {
                let at = format!("/components/securitySchemes/{}", escape_pointer(name));
                let scheme = self
                    .object::<oas3::spec::SecurityScheme>(Some(value), &at)
                    .map(|(_, s)| SecurityScheme::from_spec(&s));
                (name.clone(), scheme)
            })
            .collect()
    }

    /// Every operation, in document order; an operation that cannot be read is returned as
    /// its place and the problems found.
    pub fn operations(&self) -> Vec<Result<Operation, (String, Vec<String>)>> {
        let mut out = Vec::new();
        let Some(paths) = &self.spec.paths else {
            return out;
        };
        let schemes = self.security_schemes();
        for (path, item) in paths.iter() {
            let item_pointer = format!("/paths/{}", escape_pointer(path));
            if item.reference.is_some() {
                out.push(Err((
                    format!("paths.{path}"),
                    vec!["a path item given by $ref is not read".into()],
                )));
                continue;
            }
            for (method, op) in item.methods() {
                let lower = method.as_str().to_ascii_lowercase();
                let pointer = format!("{item_pointer}/{lower}");
                let place = format!("paths.{path}.{lower}");
                let mut problems = Vec::new();
                let mut parameters: Vec<ParamRule> = Vec::new();
                let shared =
                    (0..item.parameters.len()).map(|i| format!("{item_pointer}/parameters/{i}"));
                let own = (0..op.parameters.len()).map(|i| format!("{pointer}/parameters/{i}"));
                for at in shared.chain(own) {
                    match self.parameter(&at) {
                        Ok(rule) => {
                            // An operation's parameter replaces the path item's of the same
                            // name and location.
                            parameters
                                .retain(|r| !(r.name == rule.name && r.location == rule.location));
                            parameters.push(rule);
                        }
                        Err(e) => problems.push(e),
                    }
                }
                for name in template_names(path) {
                    if !parameters
                        .iter()
                        .any(|p| p.location == Location::Path && p.name == name)
                    {
                        problems.push(format!(
                            "path parameter \"{name}\" is in the template but not described"
                        ));
                    }
                }
                let body = match &op.request_body {
                    None => None,
                    Some(_) => match self.body(&format!("{pointer}/requestBody")) {
                        Ok(b) => Some(b),
                        Err(e) => {
                            problems.push(e);
                            None
                        }
                    },
                };
                let security = match self.at(&pointer).and_then(|o| o.get("security")) {
                    Some(s) => Some(s),
                    None => self.raw.get("security"),
                };
                let security = security.map(|s| security::requirements(s, &schemes));
                let security = match security {
                    Some(Ok(s)) => Some(s),
                    Some(Err(e)) => {
                        problems.push(e);
                        None
                    }
                    None => None,
                };
                if !problems.is_empty() {
                    out.push(Err((place, problems)));
                    continue;
                }
                out.push(Ok(Operation {
                    id: op.operation_id.clone(),
                    method,
                    path: path.clone(),
                    place,
                    responses: self.responses(&pointer),
                    statuses: self
                        .at(&format!("{pointer}/responses"))
                        .and_then(Value::as_object)
                        .map(|r| r.keys().cloned().collect())
                        .unwrap_or_default(),
                    pointer,
                    security,
                    parameters,
                    body,
                }));
            }
        }
        out
    }

    /// The operation a configuration names (see [`Operation::reference`]), if it can be read.
    pub fn operation(&self, reference: &str) -> Option<Operation> {
        self.operations()
            .into_iter()
            .filter_map(Result::ok)
            .find(|op| op.reference() == reference)
    }

    /// A parameter (`at`: where it is written), its `$ref` followed.
    fn parameter(&self, at: &str) -> Result<ParamRule, String> {
        let (at, param) = self.object::<Parameter>(self.at(at), at)?;
        let location = match param.location {
            ParameterIn::Path => Location::Path,
            ParameterIn::Query => Location::Query,
            ParameterIn::Header => Location::Header,
            ParameterIn::Cookie => Location::Cookie,
        };
        let style = match (param.style, location) {
            (None, Location::Query | Location::Cookie) => Style::Form,
            (None, Location::Path | Location::Header) => Style::Simple,
            (Some(ParameterStyle::Form), Location::Query | Location::Cookie) => Style::Form,
            (Some(ParameterStyle::Simple), Location::Path | Location::Header) => Style::Simple,
            (Some(ParameterStyle::SpaceDelimited), Location::Query) => Style::SpaceDelimited,
            (Some(ParameterStyle::PipeDelimited), Location::Query) => Style::PipeDelimited,
            (Some(s), _) => {
                return Err(format!(
                    "parameter \"{}\": style {s:?} is not read (form, simple, spaceDelimited and pipeDelimited are)",
                    param.name
                ))
            }
        };
        if param.content.is_some() {
            return Err(format!(
                "parameter \"{}\": a parameter described by content (not schema) is not read",
                param.name
            ));
        }
        let schema = self.at(&at).and_then(|v| v.get("schema"));
        let schema_pointer = schema.map(|_| format!("{at}/schema"));
        let shape = schema.map(|s| params::shape_of(s, &self.raw)).transpose()?;
        if location == Location::Path && param.required != Some(true) {
            return Err(format!(
                "path parameter \"{}\" must be required (OpenAPI: required: true)",
                param.name
            ));
        }
        Ok(ParamRule {
            name: param.name.clone(),
            location,
            required: param.required.unwrap_or(false),
            allow_empty: param.allow_empty_value.unwrap_or(false),
            style,
            explode: param.explode.unwrap_or(style == Style::Form),
            shape: shape.unwrap_or(params::Shape::Text),
            schema: schema_pointer,
        })
    }

    /// A request body (`at`: where it is written), its `$ref` followed.
    fn body(&self, at: &str) -> Result<BodyRule, String> {
        let (at, body) = self.object::<oas3::spec::RequestBody>(self.at(at), at)?;
        let media = body
            .content
            .iter()
            .map(|(media, m)| {
                let pointer = format!("{at}/content/{}/schema", escape_pointer(media));
                (
                    media.to_ascii_lowercase(),
                    m.schema.as_ref().map(|_| pointer),
                )
            })
            .collect();
        Ok(BodyRule {
            required: body.required.unwrap_or(false),
            media,
        })
    }

    /// The JSON response schemas of the operation at `pointer`.
    fn responses(&self, pointer: &str) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        let Some(Value::Object(responses)) = self.at(&format!("{pointer}/responses")) else {
            return out;
        };
        for (status, response) in responses {
            let mut at = format!("{pointer}/responses/{}", escape_pointer(status));
            let mut response = response;
            if let Some(r) = response.get("$ref").and_then(Value::as_str) {
                let Ok((p, v)) = self.follow(r) else { continue };
                (at, response) = (p, v);
            }
            let Some(Value::Object(content)) = response.get("content") else {
                continue;
            };
            for (media, m) in content {
                if m.get("schema").is_some() && check::is_json(media) {
                    let schema = format!("{at}/content/{}/schema", escape_pointer(media));
                    out.push((status.clone(), media.to_ascii_lowercase(), schema));
                }
            }
        }
        out
    }
}

/// How a route matches an operation's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutePath {
    /// A path template (`/v1/pets/{petId}`).
    Template(String),
    /// A regular expression over the whole path, for parameters that take part of a segment
    /// (`/files/{name}.json`) or have names a template does not take (`{pet-id}`).
    Regex(String),
}

/// The route path of the operation at `path` under `prefix` (`""`: none).
pub fn route_path(prefix: &str, path: &str) -> RoutePath {
    let prefix = prefix.trim_end_matches('/');
    let whole = path.split('/').all(|seg| {
        !seg.contains(['{', '}'])
            || seg
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .is_some_and(|name| {
                    name.chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
    });
    if whole {
        return RoutePath::Template(format!("{prefix}{path}"));
    }
    let mut regex = regex::escape(prefix);
    let mut rest = path;
    while let Some(i) = rest.find('{') {
        let Some(j) = rest[i..].find('}') else { break };
        regex.push_str(&regex::escape(&rest[..i]));
        regex.push_str("[^/]+");
        rest = &rest[i + j + 1..];
    }
    regex.push_str(&regex::escape(rest));
    RoutePath::Regex(regex)
}

/// The parameter names of a path template (`/pets/{petId}` → `petId`).
pub fn template_names(path: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = path;
    while let Some(i) = rest.find('{') {
        let Some(j) = rest[i..].find('}') else { break };
        out.push(&rest[i + 1..i + j]);
        rest = &rest[i + j + 1..];
    }
    out
}

#[cfg(test)]
mod tests;
