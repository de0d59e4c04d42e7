//! Routes from an OpenAPI document (`routes[].openapi`): a route that names an operation takes
//! its method and path from it (under a prefix: the document's server path unless given), its
//! authentication methods from the operation's security unless the route gives `auth`, and
//! the operation's request checks; a route without `operation` stands for one route per
//! operation of the document. The document is read when the file is, so a reload reads it
//! again.

use super::super::super::raw::{RawAuthMethod, RawMatch, RawOpenapi, RawResponseCheck};
use super::super::super::ApiRoute;
use super::super::Validator;
use crate::openapi::{self, Document, Operation, RequestRules, RoutePath};
use serde_yaml::Value;
use std::rc::Rc;
use std::sync::Arc;

/// The largest body the checks read whole: Pingora keeps up to 64 KiB of a request body to
/// send to the upstream after it was read, and a checked body must reach the upstream whole.
pub(in super::super) const MAX_CHECKED_BODY: u64 = 64 * 1024;

/// A document read once per file check, with its compiled schemas.
pub(in super::super) struct LoadedSpec {
    doc: Document,
    compiler: openapi::check::Compiler,
    operations: Vec<Operation>,
}

/// What an `openapi` route turns into: its match, its authentication methods when the
/// operation says (`None`: the route's own), and its API.
pub(super) struct FromSpec {
    pub(super) matcher: RawMatch,
    pub(super) auth: Option<Vec<RawAuthMethod>>,
    pub(super) api: ApiRoute,
}

impl Validator<'_> {
    /// The document at `path` (as written at `place`), read and compiled once per file.
    fn spec(&mut self, place: &str, path: &str) -> Option<Rc<LoadedSpec>> {
        if let Some(known) = self.specs.get(path) {
            return known.clone();
        }
        let loaded = self.load_spec(place, path).map(Rc::new);
        self.specs.insert(path.to_string(), loaded.clone());
        loaded
    }

    fn load_spec(&mut self, place: &str, path: &str) -> Option<LoadedSpec> {
        let full = self.loader.path(path);
        let text = match self.loader.read(&full) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(_) => {
                    self.error(place, format!("{} is not UTF-8 text", full.display()));
                    return None;
                }
            },
            Err(e) => {
                self.error(place, format!("cannot read {}: {e}", full.display()));
                return None;
            }
        };
        let doc = match Document::parse(&text) {
            Ok(d) => d,
            Err(e) => {
                self.error(place, format!("{}: {e}", full.display()));
                return None;
            }
        };
        let compiler = match openapi::check::Compiler::new(&doc) {
            Ok(c) => c,
            Err(e) => {
                self.error(place, format!("{}: {e}", full.display()));
                return None;
            }
        };
        let mut operations = Vec::new();
        for op in doc.operations() {
            match op {
                Ok(op) => operations.push(op),
                Err((at, problems)) => {
                    for p in problems {
                        self.error(place, format!("{} {at}: {p}", full.display()));
                    }
                }
            }
        }
        Some(LoadedSpec {
            doc,
            compiler,
            operations,
        })
    }

    /// A route item with `openapi.spec` and no `openapi.operation`, as one item per operation
    /// (named `NAME.OPERATION`); any other item as it is.
    pub(super) fn expand_openapi(&mut self, base: &str, item: Value) -> Vec<Value> {
        let spec_path = item
            .get("openapi")
            .filter(|o| o.get("operation").is_none())
            .and_then(|o| o.get("spec"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let Some(path) = spec_path else {
            return vec![item];
        };
        let Some(spec) = self.spec(&format!("{base}.openapi.spec"), &path) else {
            return Vec::new();
        };
        let name = item.get("name").and_then(Value::as_str).unwrap_or("");
        let mut out = Vec::new();
        for op in &spec.operations {
            let mut copy = item.clone();
            if let Some(m) = copy.as_mapping_mut() {
                m.insert("name".into(), format!("{name}.{}", op.route_name()).into());
                if let Some(Value::Mapping(o)) = m.get_mut("openapi") {
                    o.insert("operation".into(), op.reference().into());
                }
            }
            out.push(copy);
        }
        if out.is_empty() {
            self.error(
                format!("{base}.openapi.spec"),
                format!("{path} describes no operation the gateway can route"),
            );
        }
        out
    }

    /// The match, authentication and checks an `openapi` route takes from its operation.
    pub(super) fn operation_route(
        &mut self,
        base: &str,
        o: RawOpenapi,
        matcher: Option<RawMatch>,
        own_auth: bool,
        own_groups: bool,
        api_key_header: &str,
    ) -> Option<FromSpec> {
        let obase = format!("{base}.openapi");
        let mut m = matcher.unwrap_or_default();
        for (key, given) in [
            ("path_prefix", m.path_prefix.is_some()),
            ("path_exact", m.path_exact.is_some()),
            ("path_template", m.path_template.is_some()),
            ("path_regex", m.path_regex.is_some()),
            ("methods", m.methods.is_some()),
        ] {
            if given {
                self.error(
                    format!("{base}.match.{key}"),
                    "comes from the OpenAPI operation (use openapi.prefix to put its paths under a prefix)",
                );
            }
        }
        let max_body_size = match o.max_body_size.map(|s| s.0) {
            Some(n) if n > MAX_CHECKED_BODY => {
                self.error(
                    format!("{obase}.max_body_size"),
                    "must be at most 64KiB: a checked body is read whole before the upstream is asked, and Pingora keeps at most 64 KiB of it to send on",
                );
                MAX_CHECKED_BODY
            }
            Some(n) => n,
            None => MAX_CHECKED_BODY,
        };
        let spec = self.spec(&format!("{obase}.spec"), &o.spec)?;
        let Some(wanted) = o.operation else {
            // An item expanded per operation when there were none: reported there.
            return None;
        };
        let Some(op) = spec.operations.iter().find(|op| op.reference() == wanted) else {
            let known: Vec<String> = spec.operations.iter().map(Operation::reference).collect();
            self.error(
                format!("{obase}.operation"),
                format!(
                    "{} has no operation \"{wanted}\"{}",
                    o.spec,
                    super::super::did_you_mean(&wanted, known.iter().map(String::as_str))
                ),
            );
            return None;
        };
        let prefix = match o.prefix {
            Some(p) if p.starts_with('/') || p.is_empty() => p,
            Some(p) => {
                self.error(
                    format!("{obase}.prefix"),
                    format!("\"{p}\" must start with '/'"),
                );
                return None;
            }
            None => spec.doc.server_path().unwrap_or_default(),
        };
        match openapi::route_path(&prefix, &op.path) {
            RoutePath::Template(t) => m.path_template = Some(t),
            RoutePath::Regex(r) => m.path_regex = Some(r),
        }
        m.methods = Some(vec![op.method.to_string()]);
        let security = openapi::auth_methods(op.security.as_deref(), api_key_header, own_groups);
        let auth = match security {
            _ if own_auth => None,
            Ok(names) => Some(
                names
                    .into_iter()
                    .filter_map(|n| match n {
                        "api_key" => Some(RawAuthMethod::ApiKey),
                        "basic" => Some(RawAuthMethod::Basic),
                        "jwt" => Some(RawAuthMethod::Jwt),
                        "mtls" => Some(RawAuthMethod::Mtls),
                        _ => None,
                    })
                    .collect(),
            ),
            Err(problems) => {
                for p in problems {
                    self.error(
                        format!("{obase}.operation"),
                        format!(
                            "{} {}: {p} (or give the route its own auth)",
                            o.spec, op.place
                        ),
                    );
                }
                None
            }
        };
        let rules = if o.validate.unwrap_or(true) {
            match RequestRules::compile(&spec.compiler, op, &prefix) {
                Ok(r) => {
                    for media in r.unchecked_media() {
                        self.warn(
                            format!("{obase}.operation"),
                            format!("{} {}: bodies of type {media} are not read by the gateway: they pass unchecked", o.spec, op.place),
                        );
                    }
                    Some(Arc::new(r))
                }
                Err(problems) => {
                    for p in problems {
                        self.error(
                            format!("{obase}.operation"),
                            format!("{} {}: {p}", o.spec, op.place),
                        );
                    }
                    return None;
                }
            }
        } else {
            None
        };
        let responses = match o.responses {
            Some(RawResponseCheck::Report) => {
                match openapi::answer::ResponseRules::compile(&spec.compiler, op) {
                    Ok(r) => Some(Arc::new(r)),
                    Err(problems) => {
                        for p in problems {
                            self.error(
                                format!("{obase}.responses"),
                                format!("{} {}: {p}", o.spec, op.place),
                            );
                        }
                        return None;
                    }
                }
            }
            Some(RawResponseCheck::Off) | None => None,
        };
        Some(FromSpec {
            matcher: m,
            auth,
            api: ApiRoute {
                spec: o.spec,
                operation: wanted,
                rules,
                max_body_size,
                responses,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::super::loader::Fixed;
    use super::super::super::super::PathMatch;
    use super::super::super::testing::*;

    const PETSTORE: &[u8] = include_bytes!("../../../../tests/fixtures/openapi/petstore.yaml");

    fn loader() -> Fixed {
        let mut l = Fixed::default();
        l.files.insert("/conf/pets.yaml".into(), PETSTORE.to_vec());
        l.files.insert(
            "/conf/oauth.yaml".into(),
            b"openapi: 3.1.0\ninfo: {title: t, version: '1'}\ncomponents: {securitySchemes: {o: {type: oauth2, flows: {}}}}\npaths:\n  /o:\n    get: {operationId: o, security: [{o: []}], responses: {'200': {description: ok}}}\n".to_vec(),
        );
        l.files
            .insert("/conf/bad.yaml".into(), b"swagger: '2.0'\n".to_vec());
        l.files.insert(
            "/conf/scoped.yaml".into(),
            b"openapi: 3.1.0\ninfo: {title: t, version: '1'}\ncomponents: {securitySchemes: {k: {type: apiKey, in: header, name: X-API-Key}}}\npaths:\n  /s:\n    get: {operationId: s, security: [{k: [admin]}], responses: {'200': {description: ok}}}\n".to_vec(),
        );
        l
    }

    fn file(routes: &str) -> String {
        format!("{LISTENER}{POOL}api_key_header: X-API-Key\nconsumers: [{{name: alice, api_keys: [alice-key-1]}}]\nroutes:\n{routes}")
    }

    #[test]
    fn a_whole_document_becomes_one_route_per_operation() {
        let c = load_with(
            &file("  - {name: pets, upstream: a, openapi: {spec: pets.yaml}}\n"),
            &loader(),
        );
        let names: Vec<&str> = c.routing.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "pets.listPets",
                "pets.createPet",
                "pets.showPetById",
                "pets.deletePet"
            ]
        );
        let show = &c.routing.routes[2];
        assert_eq!(show.methods, vec![http::Method::GET]);
        assert!(matches!(&show.path, PathMatch::Template(t) if t.source == "/v1/pets/{petId}"));
        // Security from the document: the global API key, none, basic.
        use super::super::super::super::AuthMethod;
        assert_eq!(show.auth, vec![AuthMethod::ApiKey]);
        assert!(c.routing.routes[0].auth.is_empty());
        assert_eq!(c.routing.routes[3].auth, vec![AuthMethod::Basic]);
        let api = show.api.as_ref().expect("an API");
        assert_eq!(
            (api.operation.as_str(), api.max_body_size),
            ("showPetById", 65536)
        );
        assert!(api.rules.is_some());
        // One operation, under another prefix, unchecked, with the route's own auth.
        let c = load_with(&file("  - {name: one, upstream: a, auth: [api_key], match: {hosts: [api.example.com]}, openapi: {spec: pets.yaml, operation: deletePet, prefix: /api, validate: false, max_body_size: 1KiB}}\n"), &loader());
        let r = &c.routing.routes[0];
        assert!(matches!(&r.path, PathMatch::Template(t) if t.source == "/api/pets/{petId}"));
        assert_eq!(r.auth, vec![AuthMethod::ApiKey]);
        assert_eq!(r.hosts.len(), 1);
        let api = r.api.as_ref().expect("an API");
        assert!(api.rules.is_none() && api.max_body_size == 1024);
    }

    #[test]
    fn every_problem_of_an_openapi_route_is_reported_at_its_place() {
        let e = errors_with(
            &file("  - {name: a, upstream: a, openapi: {spec: missing.yaml}}\n  - {name: b, upstream: a, openapi: {spec: pets.yaml, operation: listPet}}\n  - {name: c, upstream: a, match: {path_prefix: /x, methods: [GET]}, openapi: {spec: pets.yaml, operation: listPets, max_body_size: 1MiB}}\n  - {name: d, upstream: a, openapi: {spec: oauth.yaml}}\n  - {name: e, upstream: a, openapi: {spec: bad.yaml, operation: x}}\n  - {name: f, upstream: a}\n  - {name: g, upstream: a, openapi: {spec: pets.yaml, operation: listPets, prefix: api}}\n  - {name: h, upstream: a, openapi: {spec: scoped.yaml}}\n"),
            &loader(),
        );
        assert_reported(
            &e,
            &[
                "routes[0].openapi.spec: cannot read /conf/missing.yaml",
                "routes[1].openapi.operation: pets.yaml has no operation \"listPet\" (did you mean \"listPets\"?)",
                "routes[2].match.path_prefix: comes from the OpenAPI operation",
                "routes[2].match.methods: comes from the OpenAPI operation",
                "routes[2].openapi.max_body_size: must be at most 64KiB",
                "routes[3].openapi.operation: oauth.yaml paths./o.get: scheme \"o\" is OAuth 2",
                "routes[4].openapi.spec: /conf/bad.yaml: a Swagger 2.0 document",
                "routes[5].match: is required",
                "routes[6].openapi.prefix: \"api\" must start with '/'",
                "routes[7].openapi.operation: scoped.yaml paths./s.get: security asks scheme \"k\" for admin",
            ],
        );
        // With group rules of its own, the route decides who holds the role.
        let c = load_with(
            &file("  - {name: h, upstream: a, allow_groups: [admins], openapi: {spec: scoped.yaml}}\n"),
            &loader(),
        );
        assert_eq!(
            c.routing.routes[0].auth,
            vec![super::super::super::super::AuthMethod::ApiKey]
        );
        // The OAuth operation is fine once the route gives its own auth.
        let c = load_with(&file("  - {name: d, upstream: a, auth: [jwt], openapi: {spec: oauth.yaml}}\njwt: [{issuer: i, algorithms: [HS256], secret_env: S}]\n"), &{
            let mut l = loader();
            l.vars.insert("S".into(), "0123456789abcdef0123456789abcdef".into());
            l
        });
        assert_eq!(c.routing.routes[0].name, "d.o");
    }
}
