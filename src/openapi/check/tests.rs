use super::*;
use http::HeaderValue;

const PETSTORE: &str = include_str!("../../../tests/fixtures/openapi/petstore.yaml");

fn rules(text: &str, id: &str, prefix: &str) -> RequestRules {
    let doc = Document::parse(text).expect("a document");
    let compiler = Compiler::new(&doc).expect("a compiler");
    let op = doc.operation(id).expect("the operation");
    RequestRules::compile(&compiler, &op, prefix).expect("compiles")
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(*n, HeaderValue::from_str(v).expect("a value"));
    }
    h
}

fn details(v: &[Violation]) -> Vec<(String, String, String)> {
    v.iter()
        .map(|v| {
            (
                format!("{}:{}", v.location, v.name.clone().unwrap_or_default()),
                v.pointer.clone(),
                v.detail.clone(),
            )
        })
        .collect()
}

#[test]
fn query_parameters_are_checked_by_type_range_and_enum() {
    let r = rules(PETSTORE, "listPets", "/v1");
    let h = HeaderMap::new();
    assert!(r.check_head("/v1/pets", None, &h).is_empty());
    assert!(r
        .check_head("/v1/pets", Some("limit=10&tags=dog&tags=cat"), &h)
        .is_empty());
    let v = r.check_head("/v1/pets", Some("limit=abc"), &h);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(
        (v[0].location, v[0].name.as_deref(), v[0].pointer.as_str()),
        ("query", Some("limit"), "#")
    );
    assert!(v[0].detail.contains("integer"), "{v:?}");
    let v = r.check_head("/v1/pets", Some("limit=0&tags=dog&tags=fish"), &h);
    let d = details(&v);
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(
        d[0].0 == "query:limit" && d[0].2.contains("minimum"),
        "{d:?}"
    );
    assert!(d[1].0 == "query:tags" && d[1].1 == "#/1", "{d:?}");
    // Repeated scalar, empty value.
    let v = r.check_head("/v1/pets", Some("limit=1&limit=2"), &h);
    assert!(v[0].detail.contains("more than once"), "{v:?}");
    let v = r.check_head("/v1/pets", Some("limit="), &h);
    assert!(v[0].detail.contains("empty"), "{v:?}");
    // Percent-encoded and '+' forms are decoded first.
    assert!(r
        .check_head("/v1/pets", Some("limit=%31%30"), &h)
        .is_empty());
    let v = r.check_head("/v1/pets", Some("limit=1%2B1"), &h);
    assert_eq!(v.len(), 1, "{v:?}");
}

#[test]
fn path_and_header_parameters_are_checked() {
    let r = rules(PETSTORE, "deletePet", "");
    let ok = headers(&[("x-reason", "sold")]);
    assert!(r.check_head("/pets/7", None, &ok).is_empty());
    let d = details(&r.check_head("/pets/0", None, &HeaderMap::new()));
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(
        d[0].0 == "path:petId" && d[0].2.contains("minimum"),
        "{d:?}"
    );
    assert!(
        d[1].0 == "header:X-Reason" && d[1].2 == "is required",
        "{d:?}"
    );
    let d = details(&r.check_head("/pets/x", None, &headers(&[("x-reason", "no")])));
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(d[1].2.contains("shorter than 3"), "{d:?}");
    // A path segment that decodes to bytes that are not UTF-8.
    let d = details(&r.check_head("/pets/%FF", None, &ok));
    assert!(d[0].2.contains("UTF-8"), "{d:?}");
}

#[test]
fn bodies_are_checked_against_their_schema_with_pointers() {
    let r = rules(PETSTORE, "createPet", "/v1");
    assert!(r.checks_body());
    let json = headers(&[("content-type", "application/json; charset=utf-8")]);
    assert_eq!(
        r.check_body(&json, br#"{"name":"Rex","kind":"dog","tag":null,"age":2}"#),
        Ok(())
    );
    let Err(BodyRefusal::Invalid(v)) =
        r.check_body(&json, br#"{"name":"","kind":"fish","age":0,"extra":1}"#)
    else {
        panic!("refused")
    };
    let mut pointers: Vec<&str> = v.iter().map(|v| v.pointer.as_str()).collect();
    pointers.sort();
    // additionalProperties: false is reported at the object; the rest at their members.
    assert_eq!(pointers, vec!["#", "#/age", "#/kind", "#/name"], "{v:?}");
    assert!(v.iter().all(|v| v.location == "body" && v.name.is_none()));
    let Err(BodyRefusal::Invalid(v)) = r.check_body(&json, br#"{"kind":"dog"}"#) else {
        panic!("refused")
    };
    assert!(
        v[0].detail.contains("\"name\" is a required property"),
        "{v:?}"
    );
    // Not JSON, or nested past serde's depth limit.
    let Err(BodyRefusal::Invalid(v)) = r.check_body(&json, b"{\"name\": ") else {
        panic!("refused")
    };
    assert!(v[0].detail.contains("not valid JSON"), "{v:?}");
    // The same member twice: parsers disagree on which counts, so it is refused.
    let Err(BodyRefusal::Invalid(v)) =
        r.check_body(&json, br#"{"name":"Rex","kind":"dog","kind":"fish"}"#)
    else {
        panic!("refused")
    };
    assert!(v[0].detail.contains("\"kind\" appears twice"), "{v:?}");
    // Nested members of the same name in different objects are fine; escapes are decoded.
    assert_eq!(
        r.check_body(&json, br#"{"name":"R\u00e9x","kind":"dog","tag":"a"}"#),
        Ok(())
    );
    let deep = "[".repeat(10_000);
    assert!(matches!(
        r.check_body(&json, deep.as_bytes()),
        Err(BodyRefusal::Invalid(_))
    ));
    // Required and missing.
    let Err(BodyRefusal::Invalid(v)) = r.check_body(&json, b"") else {
        panic!("refused")
    };
    assert_eq!(v[0].detail, "a request body is required");
    // Media types the operation does not take, none, and encoded bodies.
    for (h, why) in [
        (
            headers(&[("content-type", "text/plain")]),
            "text/plain is not accepted here",
        ),
        (HeaderMap::new(), "no Content-Type"),
        (
            headers(&[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ]),
            "encoded",
        ),
    ] {
        match r.check_body(&h, b"{}") {
            Err(BodyRefusal::UnsupportedMediaType(m)) => assert!(m.contains(why), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    // Case does not matter in the media type.
    let upper = headers(&[("content-type", "Application/JSON")]);
    assert!(matches!(
        r.check_body(&upper, b"{}"),
        Err(BodyRefusal::Invalid(_))
    ));
}

#[test]
fn many_violations_are_capped() {
    let text = r#"
openapi: 3.1.0
info: {title: t, version: "1"}
paths:
  /n:
    post:
      operationId: nums
      requestBody:
        content:
          application/json:
            schema: {type: array, items: {type: integer}}
      responses: {"200": {description: ok}}
"#;
    let r = rules(text, "nums", "");
    let body = format!("[{}]", vec!["\"x\""; 1000].join(","));
    let json = headers(&[("content-type", "application/json")]);
    let Err(BodyRefusal::Invalid(v)) = r.check_body(&json, body.as_bytes()) else {
        panic!("refused")
    };
    assert_eq!(v.len(), MAX_VIOLATIONS);
    // An optional body may be left out.
    assert_eq!(r.check_body(&json, b""), Ok(()));
}

#[test]
fn patterns_run_in_linear_time_and_media_ranges_match() {
    let text = r#"
openapi: 3.1.0
info: {title: t, version: "1"}
paths:
  /r:
    post:
      operationId: r
      parameters:
        - {name: q, in: query, schema: {type: string, pattern: "^(a+)+$"}}
        - {name: sid, in: cookie, required: true, schema: {type: string, format: uuid}}
      requestBody:
        content:
          application/*:
            schema: {type: object, required: [a]}
          text/plain: {}
      responses: {"200": {description: ok}}
"#;
    let r = rules(text, "r", "");
    let evil = format!("{}b", "a".repeat(50_000));
    let h = headers(&[("cookie", "x=1; sid=4b7e8d8e-6a53-4c3a-9a57-0f3c0c6d5a10")]);
    let v = r.check_head("/r", Some(&format!("q={evil}")), &h);
    assert_eq!(v.len(), 1, "{v:?}");
    let v = r.check_head("/r", None, &headers(&[("cookie", "sid=nope")]));
    assert!(
        v[0].name.as_deref() == Some("sid") && v[0].detail.contains("uuid"),
        "{v:?}"
    );
    let v = r.check_head("/r", None, &HeaderMap::new());
    assert_eq!(v[0].detail, "is required");
    // application/problem+json falls under application/*, and is JSON.
    let pj = headers(&[("content-type", "application/problem+json")]);
    assert!(matches!(
        r.check_body(&pj, b"{}"),
        Err(BodyRefusal::Invalid(_))
    ));
    assert_eq!(r.check_body(&pj, br#"{"a":1}"#), Ok(()));
    // Text is taken as it is.
    let text_plain = headers(&[("content-type", "text/plain")]);
    assert_eq!(r.check_body(&text_plain, b"anything"), Ok(()));
}

#[test]
fn violations_render_as_problem_members() {
    let v = Violation {
        location: "query",
        name: Some("limit".into()),
        pointer: "#".into(),
        detail: "d".into(),
    };
    assert_eq!(
        v.to_json(),
        serde_json::json!({"in": "query", "parameter": "limit", "pointer": "#", "detail": "d"})
    );
}
