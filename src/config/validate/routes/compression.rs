//! `routes[].compression`: known codings, a size, and content types written as `type/subtype`
//! or `type/*`.

use super::super::super::raw::RawCompression;
use super::super::super::{Coding, Compression, DEFAULT_CONTENT_TYPES};
use super::super::Validator;

impl Validator<'_> {
    pub(super) fn compression(&mut self, base: &str, raw: RawCompression) -> Option<Compression> {
        let place = format!("{base}.compression");
        let before = self.errors.len();
        let mut codings = Vec::new();
        for (i, name) in raw.algorithms.unwrap_or_default().iter().enumerate() {
            match Coding::from_token(name) {
                Some(c) if !codings.contains(&c) => codings.push(c),
                Some(_) => self.error(
                    format!("{place}.algorithms[{i}]"),
                    format!("\"{name}\" is listed twice"),
                ),
                None => self.error(
                    format!("{place}.algorithms[{i}]"),
                    format!(
                        "\"{name}\" is not a coding the gateway compresses with (zstd, br, gzip)"
                    ),
                ),
            }
        }
        if codings.is_empty() {
            codings = vec![Coding::Zstd, Coding::Brotli, Coding::Gzip];
        }
        let mut content_types = Vec::new();
        let given = raw.content_types.is_some();
        for (i, t) in raw.content_types.unwrap_or_default().iter().enumerate() {
            let lower = t.trim().to_ascii_lowercase();
            let valid = lower.split_once('/').is_some_and(|(a, b)| {
                let token = |s: &str| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|c| c.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&c))
                };
                token(a) && (b == "*" || token(b))
            });
            if valid {
                content_types.push(lower);
            } else {
                self.error(
                    format!("{place}.content_types[{i}]"),
                    format!("\"{t}\" is not a media type (type/subtype or type/*)"),
                );
            }
        }
        if !given {
            content_types = DEFAULT_CONTENT_TYPES
                .iter()
                .map(|t| t.to_string())
                .collect();
        }
        if self.errors.len() > before {
            return None;
        }
        Some(Compression {
            codings,
            min_size: raw.min_size.map_or(1024, |s| s.0),
            content_types,
        })
    }
}
