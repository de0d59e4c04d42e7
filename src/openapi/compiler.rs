//! The schemas of one document compiled into validators: JSON Schema 2020-12, `$ref`s resolved
//! within the document, formats checked, patterns on the linear-time `regex` engine.

use super::Document;
use jsonschema::{Draft, PatternOptions, Registry, Validator};
use serde_json::Value;

/// The document's URI among the validator's resources.
const DOCUMENT_URI: &str = "urn:tollgate:openapi";

/// The validators of one document: its schemas, `$ref`s resolved within it.
pub struct Compiler {
    registry: Registry<'static>,
    /// The document, for the shapes of form members.
    pub(super) doc: Value,
}

impl Compiler {
    /// Prepare the document's schemas for compiling.
    pub fn new(doc: &Document) -> Result<Compiler, String> {
        let resource = Draft::Draft202012.create_resource(doc.raw.clone());
        let registry = Registry::new()
            .add(DOCUMENT_URI, resource)
            .and_then(|b| b.prepare())
            .map_err(|e| e.to_string())?;
        Ok(Compiler {
            registry,
            doc: doc.raw.clone(),
        })
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
