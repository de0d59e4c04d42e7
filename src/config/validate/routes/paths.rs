//! A route's path: `path_prefix`, `path_exact`, `path_template` or `path_regex` (one at most),
//! each written so that a canonical request path can match it, and the rewrite that derives the
//! upstream path from it.

use super::super::super::pattern::Segment;
use super::super::super::raw::RawMatch;
use super::super::super::{
    segment_prefix, PathMatch, PathRegex, PathRewrite, PathTemplate, RewriteTemplate,
};
use super::super::Validator;
use crate::canonical::PathOptions;

impl Validator<'_> {
    /// The path part of `match` (at `mbase`).
    pub(super) fn match_path(
        &mut self,
        mbase: &str,
        m: &RawMatch,
        opts: &PathOptions,
    ) -> PathMatch {
        let given: Vec<&str> = [
            ("path_prefix", m.path_prefix.is_some()),
            ("path_exact", m.path_exact.is_some()),
            ("path_template", m.path_template.is_some()),
            ("path_regex", m.path_regex.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| *k)
        .collect();
        if given.len() > 1 {
            self.error(
                mbase,
                format!("give one path condition, not {}", given.join(" and ")),
            );
            return PathMatch::Any;
        }
        if let Some(p) = &m.path_prefix {
            return match check_match_path(p, opts) {
                Ok(()) => {
                    let trimmed = p.trim_end_matches('/');
                    PathMatch::Prefix(if trimmed.is_empty() { "/" } else { trimmed }.to_string())
                }
                Err(msg) => {
                    self.error(format!("{mbase}.path_prefix"), msg);
                    PathMatch::Any
                }
            };
        }
        if let Some(p) = &m.path_exact {
            return match check_match_path(p, opts) {
                Ok(()) => PathMatch::Exact(p.clone()),
                Err(msg) => {
                    self.error(format!("{mbase}.path_exact"), msg);
                    PathMatch::Any
                }
            };
        }
        if let Some(p) = &m.path_template {
            let checked = PathTemplate::parse(p).and_then(|t| {
                // Its literal parts must be canonical: check the path it matches with every
                // parameter set to a plain segment.
                check_match_path(&sample(&t), opts)
                    .map(|()| t)
                    .map_err(|_| format!("\"{p}\" is not in canonical form, so no request would match it: requests are matched after their path is normalised (see path_normalization)"))
            });
            return match checked {
                Ok(t) => PathMatch::Template(t),
                Err(msg) => {
                    self.error(format!("{mbase}.path_template"), msg);
                    PathMatch::Any
                }
            };
        }
        if let Some(p) = &m.path_regex {
            return match PathRegex::parse(p) {
                Ok(r) => PathMatch::Regex(r),
                Err(msg) => {
                    self.error(format!("{mbase}.path_regex"), msg);
                    PathMatch::Any
                }
            };
        }
        PathMatch::Any
    }

    /// How the upstream path is derived from the matched one.
    pub(super) fn rewrite(
        &mut self,
        base: &str,
        path: &PathMatch,
        strip_prefix: Option<String>,
        rewrite: Option<String>,
    ) -> PathRewrite {
        let params = match path {
            PathMatch::Template(t) => Some(t.names()),
            PathMatch::Regex(r) => Some(r.names()),
            _ => None,
        };
        let matched_path = match path {
            PathMatch::Prefix(p) | PathMatch::Exact(p) => Some(p.clone()),
            _ => None,
        };
        match (strip_prefix, rewrite) {
            (Some(_), Some(_)) => {
                self.error(base, "give either strip_prefix or rewrite, not both");
                PathRewrite::None
            }
            (Some(strip), None) => {
                let strip_trimmed = strip.trim_end_matches('/').to_string();
                match &matched_path {
                    _ if check_path(&strip).is_err() => {
                        self.error(format!("{base}.strip_prefix"), "must start with '/'");
                        PathRewrite::None
                    }
                    None if params.is_some() => {
                        self.error(
                            format!("{base}.strip_prefix"),
                            "a template or regex match is rewritten with rewrite: and its parameters (\"/v2/{id}\")",
                        );
                        PathRewrite::None
                    }
                    None => {
                        self.error(
                            format!("{base}.strip_prefix"),
                            "needs match.path_prefix or match.path_exact to strip from",
                        );
                        PathRewrite::None
                    }
                    Some(mp) if !segment_prefix(mp, &strip_trimmed) => {
                        self.error(
                            format!("{base}.strip_prefix"),
                            format!("\"{strip}\" is not a leading part of the matched path \"{mp}\", so it would never apply"),
                        );
                        PathRewrite::None
                    }
                    Some(_) => PathRewrite::Strip(strip_trimmed),
                }
            }
            (None, Some(to)) => {
                if let Err(msg) = check_path(&to) {
                    self.error(format!("{base}.rewrite"), msg);
                    return PathRewrite::None;
                }
                if let Some(names) = params {
                    return match RewriteTemplate::parse(&to, &names) {
                        Ok(t) => PathRewrite::Template(t),
                        Err(msg) => {
                            self.error(format!("{base}.rewrite"), msg);
                            PathRewrite::None
                        }
                    };
                }
                match matched_path {
                    _ if to.contains(['{', '}']) => {
                        self.error(
                            format!("{base}.rewrite"),
                            "{parameters} need match.path_template or match.path_regex",
                        );
                        PathRewrite::None
                    }
                    None => {
                        self.error(
                            format!("{base}.rewrite"),
                            "needs match.path_prefix, path_exact, path_template or path_regex to replace",
                        );
                        PathRewrite::None
                    }
                    Some(from) => PathRewrite::Replace { from, to },
                }
            }
            (None, None) => PathRewrite::None,
        }
    }
}

/// A path the template matches: every parameter replaced by a plain segment.
fn sample(t: &PathTemplate) -> String {
    let mut out = String::new();
    for s in &t.segments {
        out.push('/');
        match s {
            Segment::Literal(l) => out.push_str(l),
            Segment::Param(_) => out.push('p'),
        }
    }
    if t.rest.is_some() {
        out.push_str("/p");
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

pub(super) fn check_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("\"{p}\" must start with '/'"));
    }
    if p.bytes()
        .any(|b| b <= b' ' || b == 0x7f || b == b'?' || b == b'#')
    {
        return Err(format!(
            "\"{p}\" must not contain spaces, control characters, '?' or '#'"
        ));
    }
    Ok(())
}

/// A route's match path: a valid path, written in the canonical form requests are matched in
/// (otherwise it could never match).
fn check_match_path(p: &str, opts: &PathOptions) -> Result<(), String> {
    check_path(p)?;
    match crate::canonical::path(p, opts) {
        Ok(c) if c == p => Ok(()),
        Ok(c) => Err(format!(
            "\"{p}\" is not in canonical form, so no request would match it: requests are matched after their path is normalised (see path_normalization); write \"{c}\""
        )),
        Err(e) => Err(format!("\"{p}\" can never match a request: {}", e.describe())),
    }
}
