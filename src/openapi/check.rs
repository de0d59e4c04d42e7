//! An operation's request rules, compiled once per reload: its parameters (path, query,
//! header, cookie) and its request body, each with its schema compiled by the `jsonschema`
//! crate (JSON Schema 2020-12, formats checked, patterns with the linear-time `regex` engine so
//! no pattern can be made to backtrack). A request is checked in two steps: its head
//! ([`RequestRules::check_head`]) before anything else is read, its body
//! ([`RequestRules::check_body`]) once it has been read whole.

pub use super::compiler::Compiler;
use super::json::strict_json;
use super::params::{self, Location, ParamRule, Shape};
use super::Operation;
use http::{HeaderMap, HeaderName};
use jsonschema::Validator;
use serde_json::Value;
use std::borrow::Cow;

/// At most this many violations are listed in one answer.
pub const MAX_VIOLATIONS: usize = 20;

/// What is wrong with a request: where (`in`, the parameter's `name`), the JSON pointer into
/// the body or the parameter's value (`#/pets/0/name`, `#` for the whole), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub location: &'static str,
    pub name: Option<String>,
    pub pointer: String,
    pub detail: String,
}

impl Violation {
    /// The violation as a member of a problem's `errors` list.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::json!({
            "in": self.location,
            "pointer": self.pointer,
            "detail": self.detail,
        });
        if let (Some(name), Some(m)) = (&self.name, v.as_object_mut()) {
            m.insert("parameter".into(), Value::String(name.clone()));
        }
        v
    }
}

/// Why a body is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyRefusal {
    /// `400`: the body breaks the operation's schema (or is missing, or is not JSON).
    Invalid(Vec<Violation>),
    /// `415`: the operation takes no body of this media type (or an encoded one).
    UnsupportedMediaType(String),
}

/// True for JSON media types: `application/json`, `*/*+json`.
pub fn is_json(media: &str) -> bool {
    let essence = media.split(';').next().unwrap_or("").trim().as_bytes();
    essence.eq_ignore_ascii_case(b"application/json")
        || essence.len() > 5 && essence[essence.len() - 5..].eq_ignore_ascii_case(b"+json")
}

struct Param {
    rule: ParamRule,
    header: Option<HeaderName>,
    validator: Option<Validator>,
}

/// How a body of a media type is read for its schema.
enum Reading {
    /// Parsed as JSON (strictly).
    Json,
    /// `application/x-www-form-urlencoded`: an object, its members read as their schemas say.
    Form(std::collections::HashMap<String, Shape>),
    /// `text/*`: one string.
    Text,
    /// Anything else (`multipart/form-data`, images, ...): not read (said when the file is).
    Opaque,
}

struct Media {
    /// `application/json`, `application/*` or `*/*` (lowercase).
    range: String,
    reading: Reading,
    validator: Option<Validator>,
}

/// An operation's request rules.
pub struct RequestRules {
    /// The whole path (prefix and template) with one group per path parameter, and which
    /// parameter each group is.
    path: regex::Regex,
    path_params: Vec<usize>,
    params: Vec<Param>,
    body: Option<(bool, Vec<Media>)>,
}

impl std::fmt::Debug for RequestRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestRules")
            .field("path", &self.path.as_str())
            .field("params", &self.params.len())
            .finish_non_exhaustive()
    }
}

/// Headers whose description the document gives but OpenAPI says to ignore.
const IGNORED_HEADERS: [&str; 3] = ["accept", "content-type", "authorization"];

impl RequestRules {
    /// Compile `op`'s rules, its paths under `prefix` (`""` for none).
    pub fn compile(
        compiler: &Compiler,
        op: &Operation,
        prefix: &str,
    ) -> Result<RequestRules, Vec<String>> {
        let mut problems = Vec::new();
        let mut params = Vec::new();
        for rule in &op.parameters {
            let header = match rule.location {
                Location::Header => {
                    let lower = rule.name.to_ascii_lowercase();
                    if IGNORED_HEADERS.contains(&lower.as_str()) {
                        continue;
                    }
                    match HeaderName::from_bytes(lower.as_bytes()) {
                        Ok(h) => Some(h),
                        Err(_) => {
                            problems.push(format!(
                                "header parameter \"{}\" is not a valid header name",
                                rule.name
                            ));
                            continue;
                        }
                    }
                }
                _ => None,
            };
            let validator = match &rule.schema {
                Some(p) => match compiler.validator(p) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        problems.push(e);
                        None
                    }
                },
                None => None,
            };
            params.push(Param {
                rule: rule.clone(),
                header,
                validator,
            });
        }
        let mut pattern = String::from("^");
        pattern.push_str(&regex::escape(prefix.trim_end_matches('/')));
        let mut path_params = Vec::new();
        let mut rest = op.path.as_str();
        while let Some(i) = rest.find('{') {
            let Some(j) = rest[i..].find('}') else { break };
            pattern.push_str(&regex::escape(&rest[..i]));
            pattern.push_str("([^/]+)");
            let name = &rest[i + 1..i + j];
            match params
                .iter()
                .position(|p| p.rule.location == Location::Path && p.rule.name == name)
            {
                Some(k) => path_params.push(k),
                None => problems.push(format!("path parameter \"{name}\" is not described")),
            }
            rest = &rest[i + j + 1..];
        }
        pattern.push_str(&regex::escape(rest));
        pattern.push('$');
        let path = match regex::Regex::new(&pattern) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("path template {}: {e}", op.path));
                return Err(problems);
            }
        };
        let body = op.body.as_ref().map(|b| {
            let media = b
                .media
                .iter()
                .map(|(range, schema)| {
                    let range = range.split(';').next().unwrap_or("").trim().to_string();
                    let validator = match schema {
                        Some(p) => compiler.validator(p).map_err(|e| problems.push(e)).ok(),
                        None => None,
                    };
                    let reading = if is_json(&range) || range.ends_with("/*") {
                        // A range (`application/*`) may take JSON: JSON bodies under it are read.
                        Reading::Json
                    } else if range == "application/x-www-form-urlencoded" {
                        let schema = schema.as_deref().and_then(|p| compiler.doc.pointer(p));
                        let shapes = schema
                            .map(|s| params::member_shapes(s, &compiler.doc))
                            .unwrap_or_default();
                        Reading::Form(shapes)
                    } else if range.starts_with("text/") {
                        Reading::Text
                    } else {
                        Reading::Opaque
                    };
                    Media {
                        range,
                        reading,
                        validator,
                    }
                })
                .collect();
            (b.required, media)
        });
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(RequestRules {
            path,
            path_params,
            params,
            body,
        })
    }

    /// Whether the operation describes a request body (which must then be read and checked).
    pub fn checks_body(&self) -> bool {
        self.body.is_some()
    }

    /// The media types whose bodies the operation describes with a schema that the gateway
    /// cannot read (`multipart/form-data`, ...): their bodies pass unchecked.
    pub fn unchecked_media(&self) -> Vec<&str> {
        let Some((_, media)) = &self.body else {
            return Vec::new();
        };
        media
            .iter()
            .filter(|m| matches!(m.reading, Reading::Opaque) && m.validator.is_some())
            .map(|m| m.range.as_str())
            .collect()
    }

    /// Check the parameters of a request for `path` (its canonical path) with `query` and
    /// `headers`; empty when they are all valid.
    pub fn check_head(
        &self,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Vec<Violation> {
        let mut out = Vec::new();
        let mut texts: Vec<Vec<std::borrow::Cow<'_, str>>> = vec![Vec::new(); self.params.len()];
        if let Some(caps) = self.path.captures(path) {
            for (g, &k) in self.path_params.iter().enumerate() {
                let Some(m) = caps.get(g + 1) else { continue };
                match percent_encoding::percent_decode_str(m.as_str()).decode_utf8() {
                    Ok(t) => texts[k].push(t),
                    Err(_) => out.push(self.violation(k, "#", "is not valid UTF-8 once decoded")),
                }
            }
        }
        if self.body.is_none() && declares_body(headers) {
            // A body the document does not describe would reach the upstream unread.
            out.push(Violation {
                location: "body",
                name: None,
                pointer: "#".into(),
                detail: "the operation takes no request body".into(),
            });
        }
        for name in [http::header::CONTENT_TYPE, http::header::CONTENT_ENCODING] {
            if headers.get_all(&name).iter().count() > 1 {
                out.push(Violation {
                    location: "header",
                    name: Some(name.as_str().to_string()),
                    pointer: "#".into(),
                    detail: "is given more than once".into(),
                });
            }
        }
        if self
            .params
            .iter()
            .any(|p| p.rule.location == Location::Query)
        {
            self.query_texts(query.unwrap_or(""), &mut texts, &mut out);
        }
        for (k, p) in self.params.iter().enumerate() {
            match (&p.header, p.rule.location) {
                (Some(h), _) => {
                    for v in headers.get_all(h) {
                        match v.to_str() {
                            Ok(t) => texts[k].push(t.trim().into()),
                            Err(_) => out.push(self.violation(k, "#", "is not visible ASCII text")),
                        }
                    }
                }
                (None, Location::Cookie) => {
                    for v in headers.get_all(http::header::COOKIE) {
                        let Ok(t) = v.to_str() else {
                            out.push(self.violation(
                                k,
                                "#",
                                "the Cookie header is not visible ASCII text",
                            ));
                            continue;
                        };
                        for pair in t.split(';') {
                            if let Some((n, value)) = pair.split_once('=') {
                                // Names and values as servers read them: without the spaces
                                // around them, and without the quotes of a quoted value.
                                let value = value.trim();
                                let value = value
                                    .strip_prefix('"')
                                    .and_then(|v| v.strip_suffix('"'))
                                    .unwrap_or(value);
                                if n.trim() == p.rule.name {
                                    texts[k].push(value.to_string().into());
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        for (k, p) in self.params.iter().enumerate() {
            let given: Vec<&str> = texts[k].iter().map(|t| t.as_ref()).collect();
            if given.is_empty() {
                if p.rule.required {
                    out.push(self.violation(k, "#", "is required"));
                }
                continue;
            }
            let multiple = given.len() > 1 && !matches!(p.rule.shape, Shape::Array(_));
            if multiple {
                out.push(self.violation(k, "#", "is given more than once"));
                continue;
            }
            if p.rule.location == Location::Query && !p.rule.allow_empty && given == [""] {
                out.push(self.violation(k, "#", "is empty (the API allows no empty value)"));
                continue;
            }
            let Some(validator) = &p.validator else {
                continue;
            };
            let value = p.rule.value(&given);
            if !validator.is_valid(&value) {
                for e in validator.iter_errors(&value).take(MAX_VIOLATIONS) {
                    let pointer = format!("#{}", e.instance_path());
                    out.push(self.violation(k, &pointer, &e.to_string()));
                }
            }
        }
        out.truncate(MAX_VIOLATIONS);
        out
    }

    /// The texts of the query's described parameters. A query that reads differently when `;`
    /// also separates parameters (as older servers read it), a name that differs from a
    /// described one only in case (as some frameworks bind it), or a part that is not UTF-8
    /// once decoded is a violation: the upstream could read what was never checked.
    fn query_texts<'q>(
        &self,
        query: &'q str,
        texts: &mut [Vec<std::borrow::Cow<'q, str>>],
        out: &mut Vec<Violation>,
    ) {
        let Some(pairs) = params::form_pairs(query.as_bytes()) else {
            out.push(Violation {
                location: "query",
                name: None,
                pointer: "#".into(),
                detail: "is not UTF-8 once decoded".into(),
            });
            return;
        };
        if query.contains(';') {
            let split: Option<Vec<_>> = query
                .split(';')
                .map(|p| params::form_pairs(p.as_bytes()))
                .collect::<Option<Vec<_>>>()
                .map(|v| v.into_iter().flatten().collect());
            let named = |pairs: &[(Cow<'_, str>, Cow<'_, str>)], name: &str| {
                let mut v: Vec<&str> = pairs
                    .iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, v)| v.as_ref())
                    .collect();
                v.sort();
                v.join("\u{0}")
            };
            for (k, p) in self.params.iter().enumerate() {
                if p.rule.location == Location::Query
                    && split
                        .as_ref()
                        .is_none_or(|s| named(s, &p.rule.name) != named(&pairs, &p.rule.name))
                {
                    out.push(self.violation(
                        k,
                        "#",
                        "reads differently when ';' separates parameters too",
                    ));
                }
            }
        }
        for (name, value) in pairs {
            if let Some(k) = self.find(Location::Query, &name) {
                texts[k].push(value);
            } else if let Some(k) = self.params.iter().position(|p| {
                p.rule.location == Location::Query && p.rule.name.eq_ignore_ascii_case(&name)
            }) {
                out.push(self.violation(k, "#", &format!("is also given as \"{name}\"")));
            }
        }
    }

    fn find(&self, location: Location, name: &str) -> Option<usize> {
        self.params
            .iter()
            .position(|p| p.rule.location == location && p.rule.name == name)
    }

    fn violation(&self, k: usize, pointer: &str, detail: &str) -> Violation {
        let rule = &self.params[k].rule;
        Violation {
            location: rule.location.as_str(),
            name: Some(rule.name.clone()),
            pointer: pointer.to_string(),
            detail: detail.to_string(),
        }
    }

    /// Check a request body that was read whole (`headers`: the request's, for its media type
    /// and encoding).
    pub fn check_body(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), BodyRefusal> {
        let Some((required, media)) = &self.body else {
            return Ok(());
        };
        let whole = |detail: &str| {
            BodyRefusal::Invalid(vec![Violation {
                location: "body",
                name: None,
                pointer: "#".into(),
                detail: detail.into(),
            }])
        };
        if body.is_empty() {
            return if *required {
                Err(whole("a request body is required"))
            } else {
                Ok(())
            };
        }
        if let Some(coding) = headers.get(http::header::CONTENT_ENCODING) {
            if !coding.as_bytes().eq_ignore_ascii_case(b"identity") {
                return Err(BodyRefusal::UnsupportedMediaType(
                    "an encoded (compressed) body cannot be checked against the API description"
                        .into(),
                ));
            }
        }
        let given = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let Some(given) = given.filter(|g| !g.is_empty()) else {
            return Err(BodyRefusal::UnsupportedMediaType(
                "the request body has no Content-Type".into(),
            ));
        };
        let Some(m) = choose(media, &given) else {
            let known: Vec<&str> = media.iter().map(|m| m.range.as_str()).collect();
            return Err(BodyRefusal::UnsupportedMediaType(format!(
                "{given} is not accepted here (the API takes {})",
                known.join(", ")
            )));
        };
        let Some(validator) = &m.validator else {
            return Ok(());
        };
        let value = match &m.reading {
            Reading::Json if is_json(&given) => {
                strict_json(body).map_err(|e| whole(&format!("the body is not valid JSON: {e}")))?
            }
            // A JSON range given another type (`application/xml` under `application/*`).
            Reading::Json | Reading::Opaque => return Ok(()),
            Reading::Form(shapes) => {
                let pairs = params::form_pairs(body)
                    .ok_or_else(|| whole("the form is not UTF-8 once decoded"))?;
                params::form_object(pairs, shapes).map_err(|e| whole(&e))?
            }
            Reading::Text => match std::str::from_utf8(body) {
                Ok(t) => Value::String(t.to_string()),
                Err(_) => return Err(whole("the text is not UTF-8")),
            },
        };
        match body_violations(validator, &value) {
            v if v.is_empty() => Ok(()),
            v => Err(BodyRefusal::Invalid(v)),
        }
    }
}

/// What is wrong with a body's `value` by `validator` (at most [`MAX_VIOLATIONS`]); empty
/// when it is valid.
pub(super) fn body_violations(validator: &Validator, value: &Value) -> Vec<Violation> {
    if validator.is_valid(value) {
        return Vec::new();
    }
    validator
        .iter_errors(value)
        .take(MAX_VIOLATIONS)
        .map(|e| Violation {
            location: "body",
            name: None,
            pointer: format!("#{}", e.instance_path()),
            detail: e.to_string(),
        })
        .collect()
}

/// Whether a request's head says a body follows.
fn declares_body(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// The media entry for `given`: an exact type first, then `type/*`, then `*/*`.
fn choose<'a>(media: &'a [Media], given: &str) -> Option<&'a Media> {
    let major = given.split('/').next().unwrap_or("");
    media
        .iter()
        .find(|m| m.range == given)
        .or_else(|| {
            media.iter().find(|m| {
                m.range
                    .strip_suffix("/*")
                    .is_some_and(|t| t == major && t != "*")
            })
        })
        .or_else(|| media.iter().find(|m| m.range == "*/*"))
}

#[cfg(test)]
mod tests;
