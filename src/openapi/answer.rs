//! Answers compared with the document, report-only: whether the operation describes the
//! upstream's status and media type, and whether a JSON body matches the schema described for
//! them. What does not match is counted and logged by the caller, never refused: this catches
//! drift between the document and the service.

use super::check::{body_violations, is_json, Compiler, Violation};
use super::json::strict_json;
use super::Operation;
use jsonschema::Validator;
use std::sync::atomic::{AtomicU64, Ordering};

/// The largest answer body read for the comparison; a longer one is passed on unchecked.
pub const MAX_CHECKED_ANSWER: usize = 1 << 20;

struct Described {
    /// `200`, `2XX` (upper case) or `default`.
    status: String,
    /// The media type's essence, lower case.
    media: String,
    validator: Validator,
}

/// The answers an operation describes with a JSON schema.
pub struct ResponseRules {
    described: Vec<Described>,
    /// Every status the operation describes (with a schema or not).
    statuses: Vec<String>,
    /// When a mismatch was last logged (seconds since the Unix epoch): at most one line per
    /// route every 10 seconds, whatever the service does.
    last_logged: AtomicU64,
}

impl std::fmt::Debug for ResponseRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseRules")
            .field("statuses", &self.statuses)
            .finish_non_exhaustive()
    }
}

/// What an answer's head says about the comparison.
#[derive(Debug, PartialEq, Eq)]
pub enum Expect {
    /// Compare the body with described answer `i` once it is read.
    Body(usize),
    /// The head already differs from the document (why).
    Mismatch(String),
    /// Nothing to compare (described without a JSON schema, or not JSON).
    Nothing,
}

impl ResponseRules {
    /// Compile the JSON schemas of `op`'s answers.
    pub fn compile(compiler: &Compiler, op: &Operation) -> Result<ResponseRules, Vec<String>> {
        let mut described = Vec::new();
        let mut problems = Vec::new();
        for (status, media, pointer) in &op.responses {
            match compiler.validator(pointer) {
                Ok(validator) => described.push(Described {
                    status: status.to_ascii_uppercase().replace("DEFAULT", "default"),
                    media: media.split(';').next().unwrap_or("").trim().to_string(),
                    validator,
                }),
                Err(e) => problems.push(e),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(ResponseRules {
            described,
            statuses: op
                .statuses
                .iter()
                .map(|s| s.to_ascii_uppercase().replace("DEFAULT", "default"))
                .collect(),
            last_logged: AtomicU64::new(0),
        })
    }

    /// The status key of the document that covers `status`: itself, its range, `default`.
    fn key(&self, status: u16) -> Option<String> {
        let exact = status.to_string();
        let range = format!("{}XX", status / 100);
        [exact, range, "default".to_string()]
            .into_iter()
            .find(|k| self.statuses.contains(k))
    }

    /// What to compare for an answer with `status` and `content_type` (and a body or not).
    pub fn expect(&self, status: u16, content_type: Option<&str>, has_body: bool) -> Expect {
        if self.statuses.is_empty() || (100..200).contains(&status) {
            return Expect::Nothing;
        }
        let Some(key) = self.key(status) else {
            return Expect::Mismatch(format!("status {status} is not described"));
        };
        let with_schema: Vec<usize> = (0..self.described.len())
            .filter(|&i| self.described[i].status == key)
            .collect();
        if with_schema.is_empty() || !has_body {
            return Expect::Nothing;
        }
        let given = content_type
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        if let Some(&i) = with_schema
            .iter()
            .find(|&&i| self.described[i].media == given)
        {
            return Expect::Body(i);
        }
        if is_json(&given) {
            // Described as JSON under another name (`application/json` vs `*+json`).
            return Expect::Body(with_schema[0]);
        }
        Expect::Mismatch(format!(
            "a {status} answer of type {} is described only as {}",
            if given.is_empty() { "(none)" } else { &given },
            with_schema
                .iter()
                .map(|&i| self.described[i].media.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    /// Compare a whole answer body with described answer `i`.
    pub fn check(&self, i: usize, body: &[u8]) -> Vec<Violation> {
        let Some(d) = self.described.get(i) else {
            return Vec::new();
        };
        let value = match strict_json(body) {
            Ok(v) => v,
            Err(e) => {
                return vec![Violation {
                    location: "body",
                    name: None,
                    pointer: "#".into(),
                    detail: format!("the body is not valid JSON: {e}"),
                }]
            }
        };
        body_violations(&d.validator, &value)
    }

    /// Whether a mismatch seen now should be logged (at most once per 10 seconds).
    pub fn should_log(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_logged.load(Ordering::Relaxed);
        now >= last + 10
            && self
                .last_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Document;
    use super::*;

    const PETSTORE: &str = include_str!("../../tests/fixtures/openapi/petstore.yaml");

    fn rules(id: &str) -> ResponseRules {
        let doc = Document::parse(PETSTORE).expect("a document");
        let compiler = Compiler::new(&doc).expect("schemas");
        let op = doc.operation(id).expect("the operation");
        ResponseRules::compile(&compiler, &op).expect("compiles")
    }

    #[test]
    fn answers_are_compared_with_the_status_and_media_type_described() {
        let r = rules("showPetById");
        let json = Some("application/json; charset=utf-8");
        let Expect::Body(ok) = r.expect(200, json, true) else {
            panic!("a body to compare")
        };
        assert!(r
            .check(ok, br#"{"id":7,"name":"Rex","kind":"dog"}"#)
            .is_empty());
        let v = r.check(ok, br#"{"id":"7","name":"Rex","kind":"dog"}"#);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].pointer, "#/id");
        assert!(!r.check(ok, b"not json").is_empty());
        // `default` covers other statuses, with its own schema.
        let Expect::Body(err) = r.expect(500, json, true) else {
            panic!("the default answer")
        };
        assert!(r.check(err, br#"{"message":"down"}"#).is_empty());
        assert!(!r.check(err, br#"{}"#).is_empty());
        // Not JSON where JSON is described; no body; informational.
        assert!(
            matches!(r.expect(200, Some("text/html"), true), Expect::Mismatch(m) if m.contains("described only as application/json"))
        );
        assert_eq!(r.expect(200, json, false), Expect::Nothing);
        assert_eq!(r.expect(103, None, false), Expect::Nothing);
        // A status the operation does not describe, without `default`.
        let r = rules("deletePet");
        assert_eq!(r.expect(204, None, false), Expect::Nothing);
        assert!(
            matches!(r.expect(200, json, true), Expect::Mismatch(m) if m == "status 200 is not described")
        );
    }

    #[test]
    fn mismatches_are_logged_at_most_every_ten_seconds() {
        let r = rules("showPetById");
        assert!(r.should_log());
        assert!(!r.should_log());
    }
}
