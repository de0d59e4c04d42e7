//! `${NAME}`, `${NAME:-default}` and `${file:PATH}` in the file's values: secrets and
//! per-machine settings stay out of the file. References are replaced inside string values
//! after the YAML is read, never in its text, so a value can never add keys or entries; a
//! value that is one reference alone is read as a YAML scalar (`threads: ${THREADS}` is a
//! number). `$${` writes `${`. A variable that is not set, or a file that cannot be read, is a
//! problem at its place; `tollgate -t` reports it as a warning and keeps the reference, so a
//! file's shape can be checked where its secrets are not. Values are never printed.

use super::Validator;
use serde_yaml::Value;

impl Validator<'_> {
    /// `doc` with every reference replaced.
    pub(super) fn substitute(&mut self, doc: Value) -> Value {
        self.walk(String::new(), doc)
    }

    fn walk(&mut self, place: String, v: Value) -> Value {
        match v {
            Value::String(s) if s.contains('$') => self.scalar(&place, s),
            Value::Sequence(items) => Value::Sequence(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| self.walk(format!("{place}[{i}]"), item))
                    .collect(),
            ),
            Value::Mapping(map) => Value::Mapping(
                map.into_iter()
                    .map(|(k, item)| {
                        let name = k.as_str().map_or_else(|| format!("{k:?}"), str::to_string);
                        let at = if place.is_empty() {
                            name
                        } else {
                            format!("{place}.{name}")
                        };
                        (k, self.walk(at, item))
                    })
                    .collect(),
            ),
            Value::Tagged(t) => {
                let tagged = *t;
                Value::Tagged(Box::new(serde_yaml::value::TaggedValue {
                    tag: tagged.tag,
                    value: self.walk(place, tagged.value),
                }))
            }
            other => other,
        }
    }

    /// One string value with its references replaced.
    fn scalar(&mut self, place: &str, s: String) -> Value {
        let mut out = String::with_capacity(s.len());
        let mut rest = s.as_str();
        let mut references = 0;
        let mut whole = false;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(escaped) = after.strip_prefix("${") {
                out.push_str("${");
                rest = escaped;
                continue;
            }
            let Some(body) = after.strip_prefix('{') else {
                out.push('$');
                rest = after;
                continue;
            };
            let Some(end) = body.find('}') else {
                self.error(place, "a \"${\" without its \"}\"");
                return Value::String(s);
            };
            let reference = &body[..end];
            if reference.contains("${") {
                self.error(place, "a reference inside a reference is not read: write one `${NAME:-default}` with a plain default");
                return Value::String(s);
            }
            whole = i == 0 && end + 3 == rest.len() && references == 0 && out.is_empty();
            references += 1;
            match self.resolve_reference(place, reference) {
                Some(value) => {
                    out.push_str(&value);
                    self.substituted.push((value, format!("${{{reference}}}")));
                }
                None => {
                    out.push_str("${");
                    out.push_str(reference);
                    out.push('}');
                }
            }
            rest = &body[end + 1..];
        }
        out.push_str(rest);
        // A value that is one reference alone, written without quotes, takes the type its text
        // has in YAML (`threads: ${THREADS}`), but only as a scalar: it never adds structure.
        let quoted = |q: char| self.source.contains(&format!("{q}{s}{q}"));
        if whole && !quoted('"') && !quoted('\'') {
            if let Ok(v @ (Value::Number(_) | Value::Bool(_))) = serde_yaml::from_str(&out) {
                return v;
            }
        }
        Value::String(out)
    }

    /// The value of `NAME`, `NAME:-default` or `file:PATH`; `None` (reported) when missing.
    fn resolve_reference(&mut self, place: &str, reference: &str) -> Option<String> {
        if let Some(path) = reference.strip_prefix("file:") {
            let full = self.loader.path(path);
            return match self.loader.read(&full) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => Some(text.trim_end_matches(['\n', '\r']).to_string()),
                    Err(_) => {
                        self.error(
                            place,
                            format!("${{file:{path}}}: the file is not UTF-8 text"),
                        );
                        None
                    }
                },
                Err(e) => {
                    self.missing(
                        place,
                        format!("${{file:{path}}}: cannot read {}: {e}", full.display()),
                    );
                    None
                }
            };
        }
        let (name, default) = match reference.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (reference, None),
        };
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            self.error(
                place,
                format!("${{{reference}}}: a variable name uses letters, digits and '_' (or write ${{file:PATH}})"),
            );
            return None;
        }
        match (self.loader.env(name), default) {
            (Some(v), _) => Some(v),
            (None, Some(d)) => Some(d.to_string()),
            (None, None) => {
                self.missing(
                    place,
                    format!("environment variable {name} (in ${{{name}}}) is not set: it must be set where the gateway runs"),
                );
                None
            }
        }
    }

    /// A reference that cannot be read: a problem, or a warning when only checking the file.
    fn missing(&mut self, place: &str, message: String) {
        if self.loader.secrets_optional() {
            self.warn(place, message);
            self.unresolved.push(place.to_string());
        } else {
            self.error(place, message);
        }
    }

    /// Once the file is checked: no message quotes a value a reference put in (it names the
    /// reference instead), and, when only checking the file, problems at a place whose
    /// reference could not be read are left to its warning.
    pub(crate) fn settle_references(&mut self) {
        let unresolved = std::mem::take(&mut self.unresolved);
        self.errors.retain(|e| {
            !unresolved.iter().any(|p| {
                e.path == *p
                    || e.path
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.starts_with(['.', '[']))
            })
        });
        let mut values = std::mem::take(&mut self.substituted);
        // Longer values first, so a value that contains another is replaced whole.
        values.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
        for e in self.errors.iter_mut().chain(self.warnings.iter_mut()) {
            for (value, reference) in &values {
                if value.len() >= 4 {
                    e.message = e.message.replace(value.as_str(), reference);
                }
            }
        }
    }
}
