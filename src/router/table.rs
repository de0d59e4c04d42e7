//! The routes of one host level, indexed by path: exact paths in a hash map, templates in a
//! tree of segments, regular expressions in a list, prefixes in a hash map probed once per
//! segment of the request path.

use super::Candidate;
use crate::config::pattern::Segment;
use crate::config::{PathMatch, PathTemplate};
use std::collections::HashMap;

/// The router's maps, keyed by host or path segment: looked up with the client's strings on
/// every request, built only from the configuration (nothing a client sends is inserted, so no
/// flooding), hashed with foldhash (per-process seed) instead of SipHash: a path's three probes
/// cost about 520 instructions with SipHash.
pub(super) type Map<V> = HashMap<Box<str>, V, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
pub(super) struct PathTable {
    exact: Map<Vec<Candidate>>,
    templates: TemplateNode,
    has_templates: bool,
    /// One entry per distinct expression, in order of first appearance in the file.
    regexes: Vec<(regex::Regex, Vec<Candidate>)>,
    prefix: Map<Vec<Candidate>>,
    /// The lengths of the prefixes in `prefix` (bit `n` of the bitmap: some prefix is `n` bytes
    /// long; `long`: some is 256 bytes or more): a request path's ancestors of other lengths are
    /// not looked up (a table of a few prefixes probed three or four times per request
    /// otherwise, each a hash and a look-up).
    prefix_lengths: [u64; 4],
    long_prefix: bool,
}

/// A node of the template tree: the routes whose template ends here, or takes the rest of the
/// path from here, and the next segment as a literal or a parameter.
#[derive(Debug, Default)]
struct TemplateNode {
    literal: Map<TemplateNode>,
    param: Option<Box<TemplateNode>>,
    end: Vec<Candidate>,
    rest: Vec<Candidate>,
}

impl PathTable {
    pub(super) fn insert(&mut self, path: &PathMatch, c: Candidate) {
        let bucket = match path {
            PathMatch::Exact(p) => self.exact.entry(p.as_str().into()).or_default(),
            PathMatch::Prefix(p) => {
                self.note_prefix_length(p.len());
                self.prefix.entry(p.as_str().into()).or_default()
            }
            PathMatch::Any => {
                self.note_prefix_length(1);
                self.prefix.entry("/".into()).or_default()
            }
            PathMatch::Template(t) => {
                self.has_templates = true;
                self.templates.bucket(t)
            }
            PathMatch::Regex(r) => {
                match self
                    .regexes
                    .iter()
                    .position(|(re, _)| re.as_str() == r.regex.as_str())
                {
                    Some(i) => &mut self.regexes[i].1,
                    None => {
                        self.regexes.push((r.regex.clone(), Vec::new()));
                        let last = self.regexes.len() - 1;
                        &mut self.regexes[last].1
                    }
                }
            }
        };
        bucket.push(c);
        bucket.sort_by_key(|c| std::cmp::Reverse(c.rank));
    }

    fn note_prefix_length(&mut self, n: usize) {
        match self.prefix_lengths.get_mut(n / 64) {
            Some(word) => *word |= 1 << (n % 64),
            None => self.long_prefix = true,
        }
    }

    /// Whether some prefix is `n` bytes long (or may be).
    fn has_prefix_length(&self, n: usize) -> bool {
        match self.prefix_lengths.get(n / 64) {
            Some(word) => word & (1 << (n % 64)) != 0,
            None => self.long_prefix,
        }
    }

    /// Visit candidate buckets from most to least specific path (exact, templates, regular
    /// expressions, longest prefix first); stop when `visit` says so.
    pub(super) fn walk<'a>(&'a self, path: &str, mut visit: impl FnMut(&'a [Candidate]) -> bool) {
        if !self.exact.is_empty() {
            if let Some(v) = self.exact.get(path) {
                if visit(v) {
                    return;
                }
            }
        }
        if self.has_templates {
            if let Some(body) = path.strip_prefix('/') {
                if self.templates.walk(Some(body), &mut visit) {
                    return;
                }
            }
        }
        for (re, v) in &self.regexes {
            if re.is_match(path) && visit(v) {
                return;
            }
        }
        if self.prefix.is_empty() {
            return;
        }
        let mut p = path.trim_end_matches('/');
        while !p.is_empty() {
            if self.has_prefix_length(p.len()) {
                if let Some(v) = self.prefix.get(p) {
                    if visit(v) {
                        return;
                    }
                }
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => break,
            }
        }
        if self.has_prefix_length(1) {
            if let Some(v) = self.prefix.get("/") {
                visit(v);
            }
        }
    }
}

impl TemplateNode {
    /// The bucket of the routes with template `t`.
    fn bucket(&mut self, t: &PathTemplate) -> &mut Vec<Candidate> {
        let mut node = self;
        for s in &t.segments {
            node = match s {
                Segment::Literal(l) => node.literal.entry(l.as_str().into()).or_default(),
                Segment::Param(_) => node.param.get_or_insert_with(Default::default),
            };
        }
        if t.rest.is_some() {
            &mut node.rest
        } else {
            &mut node.end
        }
    }

    /// Visit the buckets of templates matching the path's remaining segments (`None`: none
    /// left), a literal segment before a parameter before the rest of the path; true when
    /// `visit` stopped the walk. The depth is the longest template's, whatever the path.
    fn walk<'a>(
        &'a self,
        rest: Option<&str>,
        visit: &mut impl FnMut(&'a [Candidate]) -> bool,
    ) -> bool {
        let Some(r) = rest else {
            return !self.end.is_empty() && visit(&self.end);
        };
        let (segment, tail) = match r.find('/') {
            Some(i) => (&r[..i], Some(&r[i + 1..])),
            None => (r, None),
        };
        if let Some(child) = (!self.literal.is_empty())
            .then(|| self.literal.get(segment))
            .flatten()
        {
            if child.walk(tail, visit) {
                return true;
            }
        }
        if let Some(child) = &self.param {
            if !segment.is_empty() && child.walk(tail, visit) {
                return true;
            }
        }
        !self.rest.is_empty() && !r.is_empty() && visit(&self.rest)
    }
}
