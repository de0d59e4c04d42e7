use super::super::Document;
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
    for twice in [
        r#"{"name":"Rex","kind":"dog","KIND":"fish"}"#,
        r#"{"name":"Rex","kind":"dog","\u006bind":"fish"}"#,
        "{\"name\":\"Rex\",\"kind\":\"dog\",\"\u{212A}ind\":\"fish\"}",
        "{\"name\":\"Rex\",\"kind\":\"dog\",\"tag\":\"a\",\"\u{17F}\u{17F}\":1,\"SS\":2}",
    ] {
        let Err(BodyRefusal::Invalid(v)) = r.check_body(&json, twice.as_bytes()) else {
            panic!("refused: {twice}")
        };
        assert!(v[0].detail.contains("appears twice"), "{twice}: {v:?}");
    }
    // Many members (the set past 16 names) still catch a repeated one.
    let many: Vec<String> = (0..40).map(|i| format!("\"m{i}\":1")).collect();
    let body = format!(
        "{{\"name\":\"a\",\"kind\":\"dog\",{},\"M39\":2}}",
        many.join(",")
    );
    let Err(BodyRefusal::Invalid(v)) = r.check_body(&json, body.as_bytes()) else {
        panic!("refused")
    };
    assert!(v[0].detail.contains("\"M39\" appears twice"), "{v:?}");
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

#[test]
fn what_two_readers_could_read_differently_is_refused() {
    let list = rules(PETSTORE, "listPets", "/v1");
    let none = HeaderMap::new();
    let one = |v: &[Violation]| {
        assert_eq!(v.len(), 1, "{v:?}");
        v[0].detail.clone()
    };
    // `;` as a separator, a name in another case, bytes that are not UTF-8.
    assert!(one(&list.check_head("/v1/pets", Some("x=;limit=1000"), &none)).contains("';'"));
    assert!(list
        .check_head("/v1/pets", Some("limit=5;"), &none)
        .iter()
        .any(|v| v.detail.contains("';'")));
    assert!(one(&list.check_head("/v1/pets", Some("LIMIT=1000"), &none)).contains("\"LIMIT\""));
    assert!(one(&list.check_head("/v1/pets", Some("limit=%FF"), &none)).contains("UTF-8"));
    // A body on an operation that takes none; two Content-Types.
    let v = list.check_head("/v1/pets", None, &headers(&[("content-length", "5")]));
    assert_eq!(one(&v), "the operation takes no request body");
    let v = list.check_head(
        "/v1/pets",
        None,
        &headers(&[("transfer-encoding", "chunked")]),
    );
    assert_eq!(one(&v), "the operation takes no request body");
    assert!(list
        .check_head("/v1/pets", None, &headers(&[("content-length", "0")]))
        .is_empty());
    let create = rules(PETSTORE, "createPet", "/v1");
    let v = create.check_head(
        "/v1/pets",
        None,
        &headers(&[
            ("content-type", "text/plain"),
            ("content-type", "application/json"),
        ]),
    );
    assert_eq!(one(&v), "is given more than once");
}

#[test]
fn cookies_forms_and_text_are_read_as_servers_read_them() {
    let text = r#"
openapi: 3.1.0
info: {title: t, version: "1"}
paths:
  /f:
    post:
      operationId: f
      parameters:
        - {name: role, in: cookie, schema: {type: string, enum: [user]}}
      requestBody:
        content:
          application/x-www-form-urlencoded:
            schema:
              allOf:
                - {type: object, required: [n], properties: {n: {type: integer, maximum: 5}}}
                - {properties: {tags: {type: array, items: {type: string}, maxItems: 2}}}
          text/plain:
            schema: {type: string, maxLength: 3}
          multipart/form-data:
            schema: {type: object}
      responses: {"200": {description: ok}}
"#;
    let r = rules(text, "f", "");
    let cookie = |c: &str| r.check_head("/f", None, &headers(&[("cookie", c)]));
    assert!(cookie("role=user").is_empty());
    assert_eq!(cookie("role=user; role =admin").len(), 1);
    assert_eq!(cookie("role=\"admin\"").len(), 1);
    assert!(cookie("role= user ").is_empty());
    let mut latin = HeaderMap::new();
    latin.insert(
        "cookie",
        HeaderValue::from_bytes(b"role=admin; x=\xe9").expect("a value"),
    );
    assert_eq!(r.check_head("/f", None, &latin).len(), 1);
    let form = headers(&[("content-type", "application/x-www-form-urlencoded")]);
    assert_eq!(r.check_body(&form, b"n=4&tags=a&tags=b"), Ok(()));
    for bad in [
        &b"n=6"[..],
        b"n=x",
        b"tags=a",
        b"n=1&n=2",
        b"n=1&tags=a&tags=b&tags=c",
        b"n=%FF",
    ] {
        assert!(
            matches!(r.check_body(&form, bad), Err(BodyRefusal::Invalid(_))),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let plain = headers(&[("content-type", "text/plain; charset=utf-8")]);
    assert_eq!(r.check_body(&plain, b"abc"), Ok(()));
    assert!(matches!(
        r.check_body(&plain, b"abcd"),
        Err(BodyRefusal::Invalid(_))
    ));
    // Multipart bodies are not read: said when the file is, passed as they are.
    assert_eq!(r.unchecked_media(), vec!["multipart/form-data"]);
    let multipart = headers(&[("content-type", "multipart/form-data; boundary=x")]);
    assert_eq!(r.check_body(&multipart, b"--x--"), Ok(()));
}
