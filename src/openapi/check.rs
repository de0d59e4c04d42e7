//! An operation's request rules, compiled once per reload: its parameters (path, query,
//! header, cookie) and its request body, each with its schema compiled by the `jsonschema`
//! crate (JSON Schema 2020-12, formats checked, patterns with the linear-time `regex` engine so
//! no pattern can be made to backtrack). A request is checked in two steps: its head
//! ([`RequestRules::check_head`]) before anything else is read, its body
//! ([`RequestRules::check_body`]) once it has been read whole.

use super::params::{Location, ParamRule, Shape};
use super::{Document, Operation};
use http::{HeaderMap, HeaderName};
use jsonschema::{Draft, PatternOptions, Registry, Validator};
use serde_json::Value;

/// The document's URI among the validator's resources.
const DOCUMENT_URI: &str = "urn:tollgate:openapi";

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

/// The validators of one document: its schemas, `$ref`s resolved within it.
pub struct Compiler {
    registry: Registry<'static>,
}

impl Compiler {
    /// Prepare the document's schemas for compiling.
    pub fn new(doc: &Document) -> Result<Compiler, String> {
        let resource = Draft::Draft202012.create_resource(doc.raw.clone());
        let registry = Registry::new()
            .add(DOCUMENT_URI, resource)
            .and_then(|b| b.prepare())
            .map_err(|e| e.to_string())?;
        Ok(Compiler { registry })
    }

    /// The validator of the schema at `pointer`.
    pub fn validator(&self, pointer: &str) -> Result<Validator, String> {
        let fragment = percent_encoding::utf8_percent_encode(pointer, FRAGMENT).to_string();
        let schema = serde_json::json!({ "$ref": format!("{DOCUMENT_URI}#{fragment}") });
        jsonschema::options()
            .with_draft(Draft::Draft202012)
            .with_registry(&self.registry)
            .with_pattern_options(PatternOptions::regex())
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|e| format!("schema at {pointer}: {e}"))
    }
}

/// What a JSON pointer may not carry unescaped in a URI fragment.
const FRAGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// True for JSON media types: `application/json`, `*/*+json`.
pub fn is_json(media: &str) -> bool {
    let essence = media.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence.len() > 5 && essence[essence.len() - 5..].eq_ignore_ascii_case("+json")
}

struct Param {
    rule: ParamRule,
    header: Option<HeaderName>,
    validator: Option<Validator>,
}

struct Media {
    /// `application/json`, `application/*` or `*/*` (lowercase).
    range: String,
    json: bool,
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
                    let json = is_json(range);
                    // A range (`application/*`) may take JSON types too: compiled whenever a
                    // schema is given, asked only of JSON bodies.
                    let validator = match schema {
                        Some(p) => compiler.validator(p).map_err(|e| problems.push(e)).ok(),
                        None => None,
                    };
                    Media {
                        range: range.split(';').next().unwrap_or("").trim().to_string(),
                        json,
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
        if self
            .params
            .iter()
            .any(|p| p.rule.location == Location::Query)
        {
            for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
                if let Some(k) = self.find(Location::Query, &name) {
                    texts[k].push(value);
                }
            }
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
                        let Ok(t) = v.to_str() else { continue };
                        for pair in t.split(';') {
                            if let Some((n, value)) = pair.trim().split_once('=') {
                                if n == p.rule.name {
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
        if !(m.json || is_json(&given)) {
            return Ok(());
        }
        let Some(validator) = &m.validator else {
            return Ok(());
        };
        let value =
            strict_json(body).map_err(|e| whole(&format!("the body is not valid JSON: {e}")))?;
        if validator.is_valid(&value) {
            return Ok(());
        }
        let violations = validator
            .iter_errors(&value)
            .take(MAX_VIOLATIONS)
            .map(|e| Violation {
                location: "body",
                name: None,
                pointer: format!("#{}", e.instance_path()),
                detail: e.to_string(),
            })
            .collect();
        Err(BodyRefusal::Invalid(violations))
    }
}

/// A JSON value read strictly: an object with the same member twice is refused, since
/// parsers disagree on which one counts (the gateway would check one value and the upstream
/// could act on the other).
fn strict_json(body: &[u8]) -> Result<Value, serde_json::Error> {
    use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};
    struct Strict(Value);
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Strict;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
            Ok(Strict(Value::Bool(v)))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
            Ok(Strict(Value::from(v)))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
            Ok(Strict(Value::from(v)))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
            Ok(Strict(Value::from(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
            Ok(Strict(Value::String(v.to_string())))
        }
        fn visit_string<E>(self, v: String) -> Result<Strict, E> {
            Ok(Strict(Value::String(v)))
        }
        fn visit_unit<E>(self) -> Result<Strict, E> {
            Ok(Strict(Value::Null))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(Strict(v)) = seq.next_element()? {
                items.push(v);
            }
            Ok(Strict(Value::Array(items)))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
            let mut members = serde_json::Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let Strict(v) = map.next_value()?;
                match members.entry(key) {
                    serde_json::map::Entry::Vacant(e) => {
                        e.insert(v);
                    }
                    serde_json::map::Entry::Occupied(e) => {
                        let key = e.key();
                        return Err(A::Error::custom(format_args!(
                            "member \"{key}\" appears twice"
                        )));
                    }
                }
            }
            Ok(Strict(Value::Object(members)))
        }
    }
    impl<'de> Deserialize<'de> for Strict {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
            d.deserialize_any(V)
        }
    }
    serde_json::from_slice::<Strict>(body).map(|s| s.0)
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
