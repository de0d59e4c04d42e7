use super::*;

const PETSTORE: &str = include_str!("../../tests/fixtures/openapi/petstore.yaml");

fn ops(text: &str) -> Vec<Operation> {
    let doc = Document::parse(text).expect("a document");
    doc.operations()
        .into_iter()
        .map(|o| o.unwrap_or_else(|(place, e)| panic!("{place}: {e:?}")))
        .collect()
}

#[test]
fn a_petstore_reads_into_its_operations() {
    let doc = Document::parse(PETSTORE).expect("a document");
    assert_eq!(doc.version, Version::V30);
    assert_eq!(doc.server_path().as_deref(), Some("/v1"));
    let ops = ops(PETSTORE);
    let names: Vec<(String, &str, Option<&str>)> = ops
        .iter()
        .map(|o| (o.method.to_string(), o.path.as_str(), o.id.as_deref()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("GET".into(), "/pets", Some("listPets")),
            ("POST".into(), "/pets", Some("createPet")),
            ("GET".into(), "/pets/{petId}", Some("showPetById")),
            ("DELETE".into(), "/pets/{petId}", Some("deletePet")),
        ]
    );
    // `security: []` says no security; none written means the document's.
    assert_eq!(ops[0].security, Some(vec![]));
    let api_key = AuthUse {
        name: "apiKey".into(),
        scheme: SecurityScheme::ApiKey {
            name: "X-API-Key".into(),
            location: "header".into(),
        },
        scopes: vec![],
    };
    assert_eq!(ops[1].security, Some(vec![vec![api_key]]));
    assert_eq!(
        ops[3].security,
        Some(vec![vec![AuthUse {
            name: "basicAuth".into(),
            scheme: SecurityScheme::Basic,
            scopes: vec![],
        }]])
    );
    // The path item's shared parameter, through its $ref, and the operation's own.
    let delete = &ops[3];
    let p: Vec<(&str, Location)> = delete
        .parameters
        .iter()
        .map(|p| (p.name.as_str(), p.location))
        .collect();
    assert_eq!(
        p,
        vec![("petId", Location::Path), ("X-Reason", Location::Header)]
    );
    assert_eq!(
        delete.parameters[0].schema.as_deref(),
        Some("/components/parameters/PetId/schema")
    );
    let body = ops[1].body.as_ref().expect("a body");
    assert!(body.required);
    assert_eq!(
        body.media,
        vec![(
            "application/json".to_string(),
            Some("/paths/~1pets/post/requestBody/content/application~1json/schema".to_string())
        )]
    );
    // The response given by $ref is found where it is written.
    assert!(ops[2].responses.iter().any(|(s, _, p)| s == "default"
        && p == "/components/responses/Error/content/application~1json/schema"));
}

#[test]
fn documents_that_cannot_be_read_say_why() {
    let e = |t: &str| Document::parse(t).expect_err("refused");
    assert!(
        e("swagger: '2.0'\n").contains("Swagger 2.0"),
        "{}",
        e("swagger: '2.0'\n")
    );
    assert!(e("openapi: 2.5.0\n").contains("not read"));
    assert!(e("info: {}\n").contains("no \"openapi\""));
    assert!(e("openapi: 3.1.0\npaths: [1]\n").starts_with("paths"));
    assert!(e(": : :").contains("not YAML"));
}

#[test]
fn operations_that_cannot_be_read_are_reported_each() {
    let text = r##"
openapi: 3.1.0
info: {title: t, version: "1"}
paths:
  /a/{id}:
    get:
      operationId: noParam
      responses: {"200": {description: ok}}
  /b:
    get:
      operationId: deep
      parameters:
        - {name: filter, in: query, style: deepObject, schema: {type: object}}
      responses: {"200": {description: ok}}
    post:
      operationId: elsewhere
      requestBody: {$ref: "other.yaml#/components/requestBodies/B"}
      responses: {"200": {description: ok}}
    put:
      operationId: unknownScheme
      security: [{oauth: []}]
      responses: {"200": {description: ok}}
  /c:
    get:
      operationId: fine
      responses: {"200": {description: ok}}
"##;
    let doc = Document::parse(text).expect("a document");
    assert_eq!(doc.version, Version::V31);
    let results = doc.operations();
    let mut errors: Vec<(String, String)> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|(p, e)| (p.clone(), e.join("; ")))
        .collect();
    assert_eq!(errors.len(), 4, "{errors:?}");
    errors.sort();
    assert!(
        errors[0].0 == "paths./a/{id}.get"
            && errors[0]
                .1
                .contains("\"id\" is in the template but not described")
    );
    assert!(
        errors[1].0 == "paths./b.get" && errors[1].1.contains("style DeepObject is not read"),
        "{errors:?}"
    );
    assert!(
        errors[2].0 == "paths./b.post"
            && errors[2].1.contains("only references within the document"),
        "{errors:?}"
    );
    assert!(
        errors[3].0 == "paths./b.put" && errors[3].1.contains("does not declare"),
        "{errors:?}"
    );
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
}

#[test]
fn template_names_are_found_in_any_segment() {
    assert_eq!(template_names("/a/{x}/b.{fmt}"), vec!["x", "fmt"]);
    assert!(template_names("/plain").is_empty());
}

#[test]
fn reference_loops_and_odd_media_types_are_problems_not_crashes() {
    let text = r##"
openapi: 3.1.0
info: {title: t, version: "1"}
components:
  securitySchemes:
    loop: {$ref: "#/components/securitySchemes/loop"}
  requestBodies:
    A: {$ref: "#/components/requestBodies/A"}
  schemas:
    Self: {$ref: "#/components/schemas/Self"}
    Tree:
      type: object
      properties:
        children: {type: array, items: {$ref: "#/components/schemas/Tree"}}
paths:
  /a:
    post:
      operationId: a
      requestBody: {$ref: "#/components/requestBodies/A"}
      responses: {"200": {description: ok}}
  /b:
    post:
      operationId: b
      security: [{loop: []}]
      responses: {"200": {description: ok}}
  /c:
    post:
      operationId: c
      requestBody:
        content:
          "text/ééé+json": {schema: {$ref: "#/components/schemas/Tree"}}
          "application/json": {schema: {$ref: "#/components/schemas/Self"}}
      responses: {"200": {description: ok}}
"##;
    let doc = Document::parse(text).expect("a document");
    let results = doc.operations();
    let errors: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|(p, e)| format!("{p}: {}", e.join("; ")))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors.iter().all(|e| e.contains("too many references")),
        "{errors:?}"
    );
    // The recursive schema compiles and checks; the self-reference is refused or
    // harmless, never a crash.
    let compiler = check::Compiler::new(&doc).expect("schemas");
    let op = doc.operation("c").expect("c");
    if let Ok(rules) = RequestRules::compile(&compiler, &op, "") {
        let mut h = http::HeaderMap::new();
        h.insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        let _ = rules.check_body(&h, b"{}");
    }
    let tree = check::Compiler::new(&doc)
        .and_then(|c| c.validator("/components/schemas/Tree"))
        .expect("a recursive schema compiles");
    assert!(tree.is_valid(&serde_json::json!({"children": [{"children": []}]})));
    assert!(!tree.is_valid(&serde_json::json!({"children": [{"children": 3}]})));
}
