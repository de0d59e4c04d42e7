//! Path templates (`/users/{id}/orders`, `/files/{*path}`), regular-expression paths, and the
//! rewrites that reuse their parameters (`/v2/customers/{id}/orders`). Both kinds match the
//! whole canonical path (see [`crate::canonical`]), never a part of it.

use std::fmt;

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Must equal the request's segment.
    Literal(String),
    /// `{name}`: any one non-empty segment.
    Param(String),
}

/// `/users/{id}/orders`: literal segments and `{name}` parameters (one whole segment each), with
/// an optional last `{*name}` taking one or more remaining segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    /// As written.
    pub source: String,
    pub segments: Vec<Segment>,
    /// The name of the trailing `{*name}`, if any.
    pub rest: Option<String>,
}

impl PathTemplate {
    /// Parse a template; `Err` says what is wrong with it.
    pub fn parse(source: &str) -> Result<PathTemplate, String> {
        let Some(body) = source.strip_prefix('/') else {
            return Err(format!("\"{source}\" must start with '/'"));
        };
        let mut segments = Vec::new();
        let mut rest = None;
        let mut names: Vec<&str> = Vec::new();
        let parts: Vec<&str> = body.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let name = if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}'))
            {
                inner
            } else if part.contains(['{', '}']) {
                return Err(format!(
                    "\"{part}\": a parameter takes a whole segment, written {{name}}"
                ));
            } else {
                segments.push(Segment::Literal((*part).to_string()));
                continue;
            };
            let (name, is_rest) = match name.strip_prefix('*') {
                Some(n) => (n, true),
                None => (name, false),
            };
            if !valid_param(name) {
                return Err(format!(
                    "\"{{{name}}}\": parameter names start with a letter or '_' and use letters, digits and '_'"
                ));
            }
            if names.contains(&name) {
                return Err(format!("parameter \"{name}\" appears twice"));
            }
            names.push(name);
            if is_rest {
                if i + 1 != parts.len() {
                    return Err(format!(
                        "{{*{name}}} takes the rest of the path: it must be the last segment"
                    ));
                }
                rest = Some(name.to_string());
            } else {
                segments.push(Segment::Param(name.to_string()));
            }
        }
        Ok(PathTemplate {
            source: source.to_string(),
            segments,
            rest,
        })
    }

    /// The parameter names, in order.
    pub fn names(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .segments
            .iter()
            .filter_map(|s| match s {
                Segment::Param(n) => Some(n.as_str()),
                Segment::Literal(_) => None,
            })
            .collect();
        out.extend(self.rest.as_deref());
        out
    }

    /// The text before the first parameter, cut back to a segment boundary (`/users` for
    /// `/users/{id}`): every path the template matches starts with it.
    pub fn literal_prefix(&self) -> String {
        let mut out = String::new();
        for s in &self.segments {
            match s {
                Segment::Literal(l) => {
                    out.push('/');
                    out.push_str(l);
                }
                Segment::Param(_) => break,
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }

    /// The parameters' values when `path` (canonical, starting with '/') matches.
    pub fn captures<'p>(&self, path: &'p str) -> Option<Vec<(&str, &'p str)>> {
        let mut rest = path.strip_prefix('/')?;
        let mut out = Vec::new();
        let n = self.segments.len();
        for (i, seg) in self.segments.iter().enumerate() {
            let last = i + 1 == n && self.rest.is_none();
            let (part, tail) = match rest.find('/') {
                Some(j) if !last => (&rest[..j], Some(&rest[j + 1..])),
                Some(_) => return None,
                None if last => (rest, None),
                None => return None,
            };
            match seg {
                Segment::Literal(l) if l == part => {}
                Segment::Param(name) if !part.is_empty() => out.push((name.as_str(), part)),
                _ => return None,
            }
            rest = tail.unwrap_or("");
        }
        match &self.rest {
            Some(name) if !rest.is_empty() => out.push((name.as_str(), rest)),
            Some(_) => return None,
            None => {}
        }
        Some(out)
    }
}

/// A regular-expression path, anchored at both ends; its named groups are parameters.
#[derive(Clone)]
pub struct PathRegex {
    /// As written.
    pub source: String,
    pub regex: regex::Regex,
}

impl PathRegex {
    /// Compile `source` to match whole paths; `Err` is the compiler's message on one line.
    pub fn parse(source: &str) -> Result<PathRegex, String> {
        let regex = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(1 << 20)
            .build()
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(_) => {
                    "the expression is too large (over 1 MiB compiled)".to_string()
                }
                e => e
                    .to_string()
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(" "),
            })?;
        Ok(PathRegex {
            source: source.to_string(),
            regex,
        })
    }

    /// The named groups.
    pub fn names(&self) -> Vec<&str> {
        self.regex.capture_names().flatten().collect()
    }

    /// The named groups' values when `path` matches (a group that took no part is empty).
    pub fn captures<'p>(&self, path: &'p str) -> Option<Vec<(&str, &'p str)>> {
        let caps = self.regex.captures(path)?;
        Some(
            self.regex
                .capture_names()
                .enumerate()
                .filter_map(|(i, n)| n.map(|n| (n, caps.get(i).map_or("", |m| m.as_str()))))
                .collect(),
        )
    }
}

impl fmt::Debug for PathRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathRegex({:?})", self.source)
    }
}

impl PartialEq for PathRegex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for PathRegex {}

/// A piece of a rewrite template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewritePart {
    Literal(String),
    /// `{name}`: the value of the match's parameter.
    Param(String),
}

/// `/v2/customers/{id}/orders`: the whole upstream path, built from the match's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteTemplate {
    pub parts: Vec<RewritePart>,
}

impl RewriteTemplate {
    /// Parse `source`, whose every `{name}` must be one of `names`.
    pub fn parse(source: &str, names: &[&str]) -> Result<RewriteTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err("a '}' without its '{'".to_string());
            }
            let Some(close) = rest[open..].find('}') else {
                return Err("a '{' without its '}'".to_string());
            };
            let name = &rest[open + 1..open + close];
            if !names.contains(&name) {
                return Err(if names.is_empty() {
                    format!("{{{name}}}: the match has no parameters to use")
                } else {
                    format!(
                        "{{{name}}} is not a parameter of the match (it has {})",
                        names.join(", ")
                    )
                });
            }
            if open > 0 {
                parts.push(RewritePart::Literal(rest[..open].to_string()));
            }
            parts.push(RewritePart::Param(name.to_string()));
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(RewritePart::Literal(rest.to_string()));
        }
        Ok(RewriteTemplate { parts })
    }

    /// The path, given the parameters' values.
    pub fn render(&self, values: &[(&str, &str)]) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                RewritePart::Literal(l) => out.push_str(l),
                RewritePart::Param(n) => {
                    if let Some((_, v)) = values.iter().find(|(k, _)| k == n) {
                        out.push_str(v);
                    }
                }
            }
        }
        out
    }
}

fn valid_param(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_capture_whole_segments() {
        let t = PathTemplate::parse("/users/{id}/orders").unwrap();
        assert_eq!(t.captures("/users/7/orders"), Some(vec![("id", "7")]));
        assert_eq!(t.captures("/users//orders"), None);
        assert_eq!(t.captures("/users/7/orders/"), None);
        assert_eq!(t.captures("/users/7"), None);
        assert_eq!(t.captures("/users/7/8/orders"), None);
        assert_eq!(t.literal_prefix(), "/users");
        let r = PathTemplate::parse("/files/{*path}").unwrap();
        assert_eq!(r.captures("/files/a/b"), Some(vec![("path", "a/b")]));
        assert_eq!(r.captures("/files/"), None);
        assert_eq!(r.captures("/files"), None);
        let slash = PathTemplate::parse("/d/{x}/").unwrap();
        assert_eq!(slash.captures("/d/1/"), Some(vec![("x", "1")]));
        assert_eq!(slash.captures("/d/1"), None);
    }

    #[test]
    fn bad_templates() {
        for (t, msg) in [
            ("users/{id}", "must start with '/'"),
            ("/users/x{id}", "takes a whole segment"),
            ("/users/{id}/{id}", "appears twice"),
            ("/users/{1d}", "parameter names"),
            ("/users/{}", "parameter names"),
            ("/f/{*rest}/x", "must be the last segment"),
        ] {
            let e = PathTemplate::parse(t).unwrap_err();
            assert!(e.contains(msg), "{t}: {e}");
        }
    }

    #[test]
    fn regexes_are_anchored_and_name_their_groups() {
        let r = PathRegex::parse("/items/(?P<id>[0-9]+)").unwrap();
        assert_eq!(r.captures("/items/42"), Some(vec![("id", "42")]));
        assert!(r.captures("/items/42/x").is_none());
        assert!(r.captures("/x/items/42").is_none());
        assert!(PathRegex::parse("/items/(")
            .unwrap_err()
            .contains("unclosed"));
        assert!(PathRegex::parse("/x{1000}{1000}")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn rewrites_use_known_parameters() {
        let r = RewriteTemplate::parse("/v2/customers/{id}/orders", &["id"]).unwrap();
        assert_eq!(r.render(&[("id", "7")]), "/v2/customers/7/orders");
        assert!(RewriteTemplate::parse("/v2/{nope}", &["id"])
            .unwrap_err()
            .contains("not a parameter"));
        assert!(RewriteTemplate::parse("/v2/{id", &["id"]).is_err());
        assert!(RewriteTemplate::parse("/v2/id}", &["id"]).is_err());
    }
}
