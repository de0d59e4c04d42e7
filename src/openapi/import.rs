//! `tollgate openapi import`: the route entries of a document's operations, and what could not
//! be mapped, item by item; and merging entries into a configuration's `routes`.

use super::{auth_methods, route_path, Document, RoutePath};
use serde_yaml::{Mapping, Value};

/// How the entries are written.
pub struct Options<'a> {
    /// The pool every route sends to.
    pub upstream: &'a str,
    /// Where the paths go (default: the document's server path).
    pub prefix: Option<&'a str>,
    /// The header the gateway reads API keys from.
    pub api_key_header: &'a str,
    /// Write references to the document (`openapi: {spec, operation}`, the requests checked
    /// against it) instead of explicit matches; the document's path as the file should say it.
    pub reference: Option<&'a str>,
}

/// The entries, and the operations that could not be mapped with why.
pub struct Imported {
    pub routes: Vec<Value>,
    pub problems: Vec<String>,
}

fn strings(items: impl IntoIterator<Item = impl Into<String>>) -> Value {
    Value::Sequence(items.into_iter().map(|s| Value::String(s.into())).collect())
}

/// The route entries of `doc`'s operations.
pub fn import(doc: &Document, opts: &Options<'_>) -> Imported {
    let mut routes = Vec::new();
    let mut problems = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let prefix = opts
        .prefix
        .map(str::to_string)
        .unwrap_or_else(|| doc.server_path().unwrap_or_default());
    for op in doc.operations() {
        let op = match op {
            Ok(op) => op,
            Err((place, why)) => {
                problems.extend(why.into_iter().map(|w| format!("{place}: {w}")));
                continue;
            }
        };
        let name = op.route_name();
        if names.contains(&name) {
            problems.push(format!(
                "{}: route name \"{name}\" is taken by another operation (give it a unique operationId)",
                op.place
            ));
            continue;
        }
        let mut route = Mapping::new();
        route.insert("name".into(), name.clone().into());
        if let Some(spec) = opts.reference {
            // The document decides match and authentication when the file is read; the
            // operation's security must still be mappable.
            if let Err(why) = auth_methods(op.security.as_deref(), opts.api_key_header, false) {
                problems.extend(why.into_iter().map(|w| format!("{}: {w}", op.place)));
                continue;
            }
            let mut o = Mapping::new();
            o.insert("spec".into(), spec.into());
            o.insert("operation".into(), op.reference().into());
            if opts.prefix.is_some() {
                o.insert("prefix".into(), prefix.clone().into());
            }
            route.insert("upstream".into(), opts.upstream.into());
            route.insert("openapi".into(), Value::Mapping(o));
        } else {
            let mut m = Mapping::new();
            match route_path(&prefix, &op.path) {
                RoutePath::Template(t) => m.insert("path_template".into(), t.into()),
                RoutePath::Regex(r) => m.insert("path_regex".into(), r.into()),
            };
            m.insert("methods".into(), strings([op.method.as_str()]));
            route.insert("match".into(), Value::Mapping(m));
            route.insert("upstream".into(), opts.upstream.into());
            match auth_methods(op.security.as_deref(), opts.api_key_header, false) {
                Ok(methods) if methods.is_empty() => {}
                Ok(methods) => {
                    route.insert("auth".into(), strings(methods));
                }
                Err(why) => {
                    problems.extend(why.into_iter().map(|w| format!("{}: {w}", op.place)));
                    continue;
                }
            }
        }
        names.push(name);
        routes.push(Value::Mapping(route));
    }
    Imported { routes, problems }
}

/// Put `routes` into a configuration document: an entry with the name of an existing route
/// replaces it in place, the others are appended. Returns how many were replaced and added.
pub fn merge(config: &mut Value, routes: Vec<Value>) -> Result<(usize, usize), String> {
    let Value::Mapping(top) = config else {
        return Err("the configuration is not a YAML mapping".into());
    };
    let list = top
        .entry("routes".into())
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if list.is_null() {
        *list = Value::Sequence(Vec::new());
    }
    let Value::Sequence(list) = list else {
        return Err("routes: is not a list".into());
    };
    let (mut replaced, mut added) = (0, 0);
    for route in routes {
        let name = route.get("name").cloned();
        match list
            .iter_mut()
            .find(|r| name.is_some() && r.get("name") == name.as_ref())
        {
            Some(existing) => {
                *existing = route;
                replaced += 1;
            }
            None => {
                list.push(route);
                added += 1;
            }
        }
    }
    Ok((replaced, added))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PETSTORE: &str = include_str!("../../tests/fixtures/openapi/petstore.yaml");

    #[test]
    fn a_petstore_imports_as_routes_with_its_security() {
        let doc = Document::parse(PETSTORE).expect("a document");
        let opts = Options {
            upstream: "pets",
            prefix: None,
            api_key_header: "x-api-key",
            reference: None,
        };
        let out = import(&doc, &opts);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let text = serde_yaml::to_string(&out.routes).expect("YAML");
        let expected = "- name: listPets\n  match:\n    path_template: /v1/pets\n    methods:\n    - GET\n  upstream: pets\n- name: createPet\n  match:\n    path_template: /v1/pets\n    methods:\n    - POST\n  upstream: pets\n  auth:\n  - api_key\n- name: showPetById\n  match:\n    path_template: /v1/pets/{petId}\n    methods:\n    - GET\n  upstream: pets\n  auth:\n  - api_key\n- name: deletePet\n  match:\n    path_template: /v1/pets/{petId}\n    methods:\n    - DELETE\n  upstream: pets\n  auth:\n  - basic\n";
        assert_eq!(text, expected);
        // Another API-key header: the operations that need it are reported, the rest kept.
        let out = import(
            &doc,
            &Options {
                api_key_header: "authorization-key",
                ..opts
            },
        );
        assert_eq!(out.routes.len(), 2);
        assert_eq!(out.problems.len(), 2, "{:?}", out.problems);
        assert!(out.problems[0]
            .starts_with("paths./pets.post: scheme \"apiKey\" takes API keys in header X-API-Key"));
        // References to the document, under a prefix.
        let out = import(
            &doc,
            &Options {
                reference: Some("specs/pets.yaml"),
                prefix: Some("/api"),
                ..opts
            },
        );
        assert_eq!(
            serde_yaml::to_string(&out.routes[0]).expect("YAML"),
            "name: listPets\nupstream: pets\nopenapi:\n  spec: specs/pets.yaml\n  operation: listPets\n  prefix: /api\n"
        );
    }

    #[test]
    fn merging_replaces_by_name_and_appends() {
        let mut config: Value = serde_yaml::from_str(
            "upstreams: {}\nroutes:\n  - {name: a, upstream: x}\n  - {name: b, upstream: x}\n",
        )
        .expect("YAML");
        let new: Vec<Value> =
            serde_yaml::from_str("- {name: b, upstream: y}\n- {name: c, upstream: y}\n")
                .expect("YAML");
        assert_eq!(merge(&mut config, new), Ok((1, 1)));
        let names: Vec<(&str, &str)> = config["routes"]
            .as_sequence()
            .expect("a list")
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap_or(""),
                    r["upstream"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(names, vec![("a", "x"), ("b", "y"), ("c", "y")]);
        let mut empty: Value = serde_yaml::from_str("routes:\n").expect("YAML");
        assert_eq!(merge(&mut empty, vec![]), Ok((0, 0)));
        let mut bad: Value = serde_yaml::from_str("routes: 3\n").expect("YAML");
        assert!(merge(&mut bad, vec![]).is_err());
        let mut list: Value = serde_yaml::from_str("[1]").expect("YAML");
        assert!(merge(&mut list, vec![]).is_err());
    }

    #[test]
    fn route_names_are_ids_or_method_and_path() {
        let doc = Document::parse("openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /a/{b}.json:\n    get:\n      parameters: [{name: b, in: path, required: true}]\n      responses: {'200': {description: ok}}\n").expect("a document");
        let out = import(
            &doc,
            &Options {
                upstream: "u",
                prefix: None,
                api_key_header: "x-api-key",
                reference: None,
            },
        );
        assert_eq!(
            serde_yaml::to_string(&out.routes).expect("YAML"),
            "- name: get__a__b_.json\n  match:\n    path_regex: /a/[^/]+\\.json\n    methods:\n    - GET\n  upstream: u\n"
        );
    }
}
