//! What the validators' unit tests share: a minimal valid file in parts, and validation
//! through a [`Fixed`](super::super::loader::Fixed) loader.

use super::super::loader::Fixed;
use super::super::{parse_with, Config};

/// One listener.
pub const LISTENER: &str = "listeners: [{address: 127.0.0.1:1}]\n";
/// One pool, `a`.
pub const POOL: &str = "upstreams: {a: {peers: [127.0.0.1:2]}}\n";
/// One route to `a`.
pub const ROUTE: &str = "routes: [{name: r, match: {}, upstream: a}]\n";

/// The listener, pool and route with `extra` top-level settings.
pub fn file(extra: &str) -> String {
    format!("{LISTENER}{POOL}{ROUTE}{extra}")
}

/// Every problem of `text` read through `loader`, as printed.
pub fn errors_with(text: &str, loader: &Fixed) -> Vec<String> {
    match parse_with(text, loader) {
        Ok(_) => Vec::new(),
        Err(e) => e.iter().map(|e| e.to_string()).collect(),
    }
}

/// Every problem of `text`, with nothing on the machine.
pub fn errors(text: &str) -> Vec<String> {
    errors_with(text, &Fixed::default())
}

/// The valid configuration `text`.
pub fn load_with(text: &str, loader: &Fixed) -> Config {
    match parse_with(text, loader) {
        Ok(c) => c,
        Err(e) => panic!("{e:?}"),
    }
}

/// Assert that one of `errors` starts with each of `expected`.
pub fn assert_reported(errors: &[String], expected: &[&str]) {
    for e in expected {
        assert!(
            errors.iter().any(|m| m.starts_with(e)),
            "{e:?} not in {errors:#?}"
        );
    }
}
