//! OpenAPI 3.0's schema dialect read as JSON Schema 2020-12 (what OpenAPI 3.1 uses and the
//! validator checks): `nullable: true` becomes a `null` type, boolean `exclusiveMinimum` and
//! `exclusiveMaximum` become the bounds themselves, and a `$ref`'s siblings, which 3.0
//! ignores, are dropped. Only places that hold schemas are rewritten, so a property that
//! happens to be named `nullable` is left alone.

use serde_json::{Map, Value};

/// Rewrite every schema of a 3.0 document in place.
pub fn upgrade_document(doc: &mut Value) {
    if let Some(Value::Object(components)) = doc.get_mut("components") {
        if let Some(Value::Object(schemas)) = components.get_mut("schemas") {
            schemas.values_mut().for_each(upgrade);
        }
        for section in ["parameters", "headers"] {
            if let Some(Value::Object(items)) = components.get_mut(section) {
                items.values_mut().for_each(parameter_like);
            }
        }
        if let Some(Value::Object(bodies)) = components.get_mut("requestBodies") {
            bodies.values_mut().for_each(with_content);
        }
        if let Some(Value::Object(responses)) = components.get_mut("responses") {
            responses.values_mut().for_each(response);
        }
    }
    if let Some(Value::Object(paths)) = doc.get_mut("paths") {
        for item in paths.values_mut() {
            let Value::Object(item) = item else { continue };
            for (key, value) in item.iter_mut() {
                if key == "parameters" {
                    each(value, parameter_like);
                } else if let Value::Object(op) = value {
                    if let Some(p) = op.get_mut("parameters") {
                        each(p, parameter_like);
                    }
                    if let Some(b) = op.get_mut("requestBody") {
                        with_content(b);
                    }
                    if let Some(Value::Object(rs)) = op.get_mut("responses") {
                        rs.values_mut().for_each(response);
                    }
                }
            }
        }
    }
}

fn each(list: &mut Value, f: fn(&mut Value)) {
    if let Value::Array(items) = list {
        items.iter_mut().for_each(f);
    }
}

/// A parameter or header object: its `schema`, or the schemas of its `content`.
fn parameter_like(p: &mut Value) {
    if let Some(s) = p.get_mut("schema") {
        upgrade(s);
    }
    with_content(p);
}

/// An object with `content: { media: { schema } }`.
fn with_content(o: &mut Value) {
    if let Some(Value::Object(content)) = o.get_mut("content") {
        for media in content.values_mut() {
            if let Some(s) = media.get_mut("schema") {
                upgrade(s);
            }
        }
    }
}

fn response(r: &mut Value) {
    with_content(r);
    if let Some(Value::Object(headers)) = r.get_mut("headers") {
        headers.values_mut().for_each(parameter_like);
    }
}

/// Rewrite one 3.0 schema (and the schemas inside it) as 2020-12.
pub fn upgrade(schema: &mut Value) {
    let Value::Object(s) = schema else { return };
    if s.contains_key("$ref") {
        s.retain(|k, _| k == "$ref");
        return;
    }
    for key in ["exclusiveMinimum", "exclusiveMaximum"] {
        let bound = if key == "exclusiveMinimum" {
            "minimum"
        } else {
            "maximum"
        };
        match s.get(key) {
            Some(Value::Bool(true)) => {
                if let Some(b) = s.remove(bound) {
                    s.insert(key.into(), b);
                } else {
                    s.remove(key);
                }
            }
            Some(Value::Bool(false)) => {
                s.remove(key);
            }
            _ => {}
        }
    }
    for key in ["items", "not", "additionalProperties"] {
        if let Some(v) = s.get_mut(key) {
            upgrade(v);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(list)) = s.get_mut(key) {
            list.iter_mut().for_each(upgrade);
        }
    }
    for key in ["properties", "patternProperties"] {
        if let Some(Value::Object(props)) = s.get_mut(key) {
            props.values_mut().for_each(upgrade);
        }
    }
    if s.remove("nullable") == Some(Value::Bool(true)) {
        nullable(s);
    }
}

/// Let a schema also accept `null`.
fn nullable(s: &mut Map<String, Value>) {
    if let Some(Value::Array(values)) = s.get_mut("enum") {
        if !values.contains(&Value::Null) {
            values.push(Value::Null);
        }
    }
    match s.get_mut("type") {
        Some(Value::String(t)) => {
            let t = std::mem::take(t);
            s.insert("type".into(), Value::Array(vec![t.into(), "null".into()]));
        }
        Some(_) => {}
        None => {
            // No type to widen (e.g. only `allOf`): either the schema or null.
            let rest = Value::Object(std::mem::take(s));
            let null = serde_json::json!({"type": "null"});
            s.insert("anyOf".into(), Value::Array(vec![rest, null]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_30_schema_reads_as_2020_12() {
        let mut s = json!({
            "type": "object",
            "nullable": false,
            "properties": {
                "nullable": {"type": "string", "nullable": true},
                "age": {"type": "integer", "minimum": 0, "exclusiveMinimum": true, "maximum": 9, "exclusiveMaximum": false},
                "kind": {"type": "string", "enum": ["a"], "nullable": true},
                "pet": {"$ref": "#/components/schemas/Pet", "description": "ignored in 3.0"},
                "any": {"allOf": [{"type": "string"}], "nullable": true},
                "tags": {"type": "array", "items": {"type": "integer", "nullable": true}}
            }
        });
        upgrade(&mut s);
        assert_eq!(
            s,
            json!({
                "type": "object",
                "properties": {
                    "nullable": {"type": ["string", "null"]},
                    "age": {"type": "integer", "exclusiveMinimum": 0, "maximum": 9},
                    "kind": {"type": ["string", "null"], "enum": ["a", null]},
                    "pet": {"$ref": "#/components/schemas/Pet"},
                    "any": {"anyOf": [{"allOf": [{"type": "string"}]}, {"type": "null"}]},
                    "tags": {"type": "array", "items": {"type": ["integer", "null"]}}
                }
            })
        );
    }

    #[test]
    fn only_schema_places_of_a_document_change() {
        let mut doc = json!({
            "paths": {"/p": {
                "parameters": [{"name": "a", "in": "query", "schema": {"type": "integer", "nullable": true}}],
                "post": {
                    "requestBody": {"content": {"application/json": {"schema": {"type": "string", "nullable": true}}}},
                    "responses": {"200": {"description": "x", "content": {"application/json": {"schema": {"type": "number", "nullable": true}}}}},
                    "x-nullable": {"nullable": true}
                }
            }},
            "components": {"schemas": {"S": {"type": "boolean", "nullable": true}}}
        });
        upgrade_document(&mut doc);
        assert_eq!(
            doc.pointer("/paths/~1p/parameters/0/schema/type"),
            Some(&json!(["integer", "null"]))
        );
        assert_eq!(
            doc.pointer("/paths/~1p/post/requestBody/content/application~1json/schema/type"),
            Some(&json!(["string", "null"]))
        );
        assert_eq!(
            doc.pointer("/paths/~1p/post/responses/200/content/application~1json/schema/type"),
            Some(&json!(["number", "null"]))
        );
        assert_eq!(
            doc.pointer("/components/schemas/S/type"),
            Some(&json!(["boolean", "null"]))
        );
        assert_eq!(
            doc.pointer("/paths/~1p/post/x-nullable"),
            Some(&json!({"nullable": true}))
        );
    }
}
