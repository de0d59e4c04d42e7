//! Parameters: where each is read from (path, query, header, cookie), how its text is split
//! (OpenAPI's styles) and which JSON value its text stands for before its schema is asked.

use serde_json::Value;
use std::borrow::Cow;

/// Where a parameter is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Path,
    Query,
    Header,
    Cookie,
}

impl Location {
    /// The name the document and the problem report use.
    pub fn as_str(self) -> &'static str {
        match self {
            Location::Path => "path",
            Location::Query => "query",
            Location::Header => "header",
            Location::Cookie => "cookie",
        }
    }
}

/// How an array parameter's items are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Query and cookie: `?id=1&id=2` (exploded) or `?id=1,2`.
    Form,
    /// Path and header: `1,2`.
    Simple,
    /// Query: `?id=1%202`.
    SpaceDelimited,
    /// Query: `?id=1|2`.
    PipeDelimited,
}

/// The JSON type a parameter's text is read as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    Text,
    Integer,
    Number,
    Boolean,
    Array(Box<Shape>),
}

/// A parameter as the document describes it.
#[derive(Debug, Clone)]
pub struct ParamRule {
    pub name: String,
    pub location: Location,
    pub required: bool,
    /// `allowEmptyValue`: `?flag=` is accepted (query only).
    pub allow_empty: bool,
    pub style: Style,
    pub explode: bool,
    pub shape: Shape,
    /// JSON pointer to its schema, if it has one.
    pub schema: Option<String>,
}

/// Follow `$ref`s (within the document) from `schema`, at most a few times.
pub(super) fn resolved<'a>(mut schema: &'a Value, doc: &'a Value) -> &'a Value {
    for _ in 0..16 {
        match schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
        {
            Some(p) => match doc.pointer(p) {
                Some(s) => schema = s,
                None => break,
            },
            None => break,
        }
    }
    schema
}

/// The first non-null type a schema names.
fn type_of(schema: &Value) -> Option<&str> {
    match schema.get("type")? {
        Value::String(t) => Some(t),
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        _ => None,
    }
}

/// How a parameter with `schema` is read; objects are refused (not read by the gateway).
pub fn shape_of(schema: &Value, doc: &Value) -> Result<Shape, String> {
    let schema = resolved(schema, doc);
    Ok(match type_of(schema) {
        Some("integer") => Shape::Integer,
        Some("number") => Shape::Number,
        Some("boolean") => Shape::Boolean,
        Some("array") => {
            let item = match schema.get("items") {
                Some(items) => shape_of(items, doc)?,
                None => Shape::Text,
            };
            if matches!(item, Shape::Array(_)) {
                return Err("an array of arrays as a parameter is not read".into());
            }
            Shape::Array(Box::new(item))
        }
        Some("object") => {
            return Err("an object as a parameter (deepObject or exploded form) is not read".into())
        }
        _ => Shape::Text,
    })
}

/// The JSON value one text stands for: a number or boolean when it reads as one, else the
/// text itself (so that the schema reports the wrong type).
pub(super) fn scalar(text: &str, shape: &Shape) -> Value {
    match shape {
        // A sign of `+` reads differently from one framework to the next: left as text.
        Shape::Integer if text.starts_with('+') => Value::String(text.to_string()),
        Shape::Integer => text
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| text.parse::<u64>().map(Value::from))
            .unwrap_or_else(|_| Value::String(text.to_string())),
        Shape::Number => serde_json::from_str::<serde_json::Number>(text)
            .ok()
            .filter(|_| !text.starts_with('+') && !text.is_empty())
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(text.to_string())),
        Shape::Boolean => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(text.to_string()),
        },
        _ => Value::String(text.to_string()),
    }
}

impl ParamRule {
    /// The JSON value of the parameter's texts (several for an exploded form array).
    pub fn value(&self, texts: &[&str]) -> Value {
        match &self.shape {
            Shape::Array(item) => {
                let parts: Vec<&str> = match texts {
                    [one] if !self.explode_form() => {
                        let sep = match self.style {
                            Style::SpaceDelimited => ' ',
                            Style::PipeDelimited => '|',
                            Style::Form | Style::Simple => ',',
                        };
                        one.split(sep).collect()
                    }
                    _ => texts.to_vec(),
                };
                Value::Array(parts.iter().map(|t| scalar(t, item)).collect())
            }
            shape => scalar(texts.first().copied().unwrap_or(""), shape),
        }
    }

    /// Items given as repeated `name=value` pairs.
    fn explode_form(&self) -> bool {
        self.style == Style::Form && self.explode
    }
}

/// The pairs of a form (`a=1&b=x+y`, as a query string or an
/// `application/x-www-form-urlencoded` body), decoded strictly: `None` when a name or value is
/// not UTF-8 once decoded (other readers would replace the bytes, or refuse). Parts without
/// escapes are borrowed.
pub(super) fn form_pairs(text: &[u8]) -> Option<Vec<(Cow<'_, str>, Cow<'_, str>)>> {
    fn decode(part: &[u8]) -> Option<Cow<'_, str>> {
        if !part.iter().any(|&b| b == b'%' || b == b'+') {
            return std::str::from_utf8(part).ok().map(Cow::Borrowed);
        }
        let plus: Vec<u8> = part
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        let bytes: Vec<u8> = percent_encoding::percent_decode(&plus).collect();
        String::from_utf8(bytes).ok().map(Cow::Owned)
    }
    text.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            Some((decode(name)?, decode(value)?))
        })
        .collect()
}

/// The JSON object a form stands for, its members read as `shapes` say (an array member may
/// repeat; any other member given twice is an error, named).
pub(super) fn form_object(
    pairs: Vec<(Cow<'_, str>, Cow<'_, str>)>,
    shapes: &std::collections::HashMap<String, Shape>,
) -> Result<Value, String> {
    let mut out = serde_json::Map::new();
    for (name, value) in pairs {
        match shapes.get(name.as_ref()) {
            Some(Shape::Array(item)) => {
                let entry = out.entry(name).or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(items) = entry {
                    items.push(scalar(&value, item));
                }
            }
            shape => {
                if out.contains_key(name.as_ref()) {
                    return Err(format!("member \"{name}\" is given more than once"));
                }
                let v = scalar(&value, shape.unwrap_or(&Shape::Text));
                out.insert(name.into_owned(), v);
            }
        }
    }
    Ok(Value::Object(out))
}

/// The shapes of the members of an object schema (its `properties`, and those of its `allOf`
/// parts), for reading a form.
pub(super) fn member_shapes(
    schema: &Value,
    doc: &Value,
) -> std::collections::HashMap<String, Shape> {
    let mut out = std::collections::HashMap::new();
    let schema = resolved(schema, doc);
    let parts: Vec<&Value> = schema
        .get("allOf")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|s| resolved(s, doc)).collect())
        .unwrap_or_default();
    for s in std::iter::once(schema).chain(parts) {
        if let Some(Value::Object(props)) = s.get("properties") {
            for (name, p) in props {
                out.insert(name.clone(), shape_of(p, doc).unwrap_or(Shape::Text));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(shape: Shape, style: Style, explode: bool) -> ParamRule {
        ParamRule {
            name: "p".into(),
            location: Location::Query,
            required: false,
            allow_empty: false,
            style,
            explode,
            shape,
            schema: None,
        }
    }

    #[test]
    fn texts_read_as_their_schema_types() {
        let int = rule(Shape::Integer, Style::Form, true);
        assert_eq!(int.value(&["42"]), json!(42));
        assert_eq!(int.value(&["-7"]), json!(-7));
        assert_eq!(int.value(&["4.5"]), json!("4.5"));
        assert_eq!(int.value(&["+4"]), json!("+4"));
        assert_eq!(int.value(&["18446744073709551615"]), json!(u64::MAX));
        assert_eq!(
            int.value(&["99999999999999999999"]),
            json!("99999999999999999999")
        );
        let num = rule(Shape::Number, Style::Form, true);
        assert_eq!(num.value(&["4.5"]), json!(4.5));
        assert_eq!(num.value(&["+4"]), json!("+4"));
        assert_eq!(num.value(&["NaN"]), json!("NaN"));
        let b = rule(Shape::Boolean, Style::Form, true);
        assert_eq!(b.value(&["true"]), json!(true));
        assert_eq!(b.value(&["yes"]), json!("yes"));
        let ints = Shape::Array(Box::new(Shape::Integer));
        assert_eq!(
            rule(ints.clone(), Style::Form, true).value(&["1", "x"]),
            json!([1, "x"])
        );
        assert_eq!(
            rule(ints.clone(), Style::Form, false).value(&["1,2"]),
            json!([1, 2])
        );
        assert_eq!(
            rule(ints.clone(), Style::PipeDelimited, false).value(&["1|2"]),
            json!([1, 2])
        );
        assert_eq!(
            rule(ints.clone(), Style::SpaceDelimited, false).value(&["1 2"]),
            json!([1, 2])
        );
        assert_eq!(
            rule(ints, Style::Simple, false).value(&["3,4"]),
            json!([3, 4])
        );
    }

    #[test]
    fn shapes_follow_references_and_refuse_objects() {
        let doc = json!({"components": {"schemas": {"Id": {"type": ["integer", "null"]}}}});
        let s = json!({"$ref": "#/components/schemas/Id"});
        assert_eq!(shape_of(&s, &doc), Ok(Shape::Integer));
        let a = json!({"type": "array", "items": {"$ref": "#/components/schemas/Id"}});
        assert_eq!(
            shape_of(&a, &doc),
            Ok(Shape::Array(Box::new(Shape::Integer)))
        );
        assert!(shape_of(&json!({"type": "object"}), &doc).is_err());
        let aa = json!({"type": "array", "items": {"type": "array"}});
        assert!(shape_of(&aa, &doc).is_err());
        // A reference loop ends.
        let doc = json!({"a": {"$ref": "#/a"}});
        assert_eq!(shape_of(&json!({"$ref": "#/a"}), &doc), Ok(Shape::Text));
    }
}
