//! The configuration: one YAML file, read into its serde image ([`raw`]), checked by one
//! validator per domain ([`validate`]) into the model below. Validation never stops at the
//! first mistake: every problem is reported as a [`ConfigError`] with its place in the file
//! (`routes[0].upstream`), and nothing starts unless the list is empty. Whatever validation
//! reads from the machine goes through a [`Loader`].
//!
//! The model has two halves: [`Process`] (sockets and process settings, changed by an upgrade)
//! and [`Routing`] (pools, routes, consumers, limits: swapped by a reload).

mod compression;
mod cors;
mod error;
mod forward_auth;
mod identity;
mod jwks;
pub mod loader;
pub mod pattern;
mod plans;
mod process;
mod raw;
mod routing;
pub mod units;
mod validate;

pub use compression::{Coding, Compression, DEFAULT_CONTENT_TYPES};
pub use cors::{Cors, OriginPattern};
pub use error::ConfigError;
pub use forward_auth::ForwardAuth;
pub use identity::*;
pub use jwks::read_jwks;
pub use loader::Loader;
pub use pattern::{PathRegex, PathTemplate, RewriteTemplate};
pub use plans::{Period, Plan, Quota, TimeZone};
pub use process::*;
pub use routing::*;
use serde_yaml::Value;
use std::path::{Path, PathBuf};

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// What needs an upgrade to change.
    pub process: Process,
    /// What a reload replaces.
    pub routing: Routing,
    /// Settings that are valid but probably not what was meant.
    pub warnings: Vec<ConfigError>,
    /// SHA-256 of the file's text, in hex.
    pub checksum: String,
    /// The file's text.
    pub text: std::sync::Arc<str>,
}

/// Read and validate a configuration file; relative paths in it are relative to the current
/// directory.
pub fn load_file(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    load_file_in(path, &base)
}

/// Read and validate a configuration file; relative paths in it are relative to `base` (a
/// reload uses the directory the process started in, whatever its current directory is now).
pub fn load_file_in(path: &Path, base: &Path) -> Result<Config, Vec<ConfigError>> {
    parse_in(&read(path, base)?, base)
}

/// The text of the file at `path` (relative to `base`).
fn read(path: &Path, base: &Path) -> Result<String, Vec<ConfigError>> {
    let path = base.join(path);
    std::fs::read_to_string(&path).map_err(|e| {
        vec![ConfigError::new(
            "",
            format!("cannot read {}: {e}", path.display()),
        )]
    })
}

/// [`load_file_in`] for a reload: a peer name that cannot be looked up now keeps the addresses
/// in `known` (what the running gateway has for it, by name as printed), with a warning.
pub fn reload_file_in(
    path: &Path,
    base: &Path,
    known: std::collections::HashMap<String, crate::dns::Resolved>,
) -> Result<Config, Vec<ConfigError>> {
    parse_with(
        &read(path, base)?,
        &loader::System::remembering(base, known),
    )
}

/// Check a configuration file without starting anything (`tollgate -t`): as
/// [`load_file_in`], except that secrets read from the environment (the admin token, JWT
/// secrets) may be missing where the check runs: they are reported as warnings.
/// A refused file's warnings come back with its problems.
pub fn check_file_in(
    path: &Path,
    base: &Path,
) -> Result<Config, (Vec<ConfigError>, Vec<ConfigError>)> {
    let path = base.join(path);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        (
            vec![ConfigError::new(
                "",
                format!("cannot read {}: {e}", path.display()),
            )],
            Vec::new(),
        )
    })?;
    parse_reporting(&text, &loader::System::checking(base))
}

/// Validate configuration text, relative paths being relative to the current directory.
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    parse_in(text, &base)
}

/// Validate configuration text, relative paths being relative to `base`.
pub fn parse_in(text: &str, base: &Path) -> Result<Config, Vec<ConfigError>> {
    parse_with(text, &loader::System::new(base))
}

/// Validate configuration text, reading files, names and the environment through `loader`.
pub fn parse_with(text: &str, loader: &dyn Loader) -> Result<Config, Vec<ConfigError>> {
    parse_reporting(text, loader).map_err(|(errors, _)| errors)
}

/// [`parse_with`], a refused file's warnings coming back with its problems.
pub fn parse_reporting(
    text: &str,
    loader: &dyn Loader,
) -> Result<Config, (Vec<ConfigError>, Vec<ConfigError>)> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| {
        (
            vec![ConfigError::new("", format!("invalid YAML: {e}"))],
            Vec::new(),
        )
    })?;
    let mut v = validate::Validator::new(loader);
    v.source = text;
    let model = v.document(doc);
    v.settle_references();
    // A route that stands for each operation of an OpenAPI document repeats its own problems
    // once per operation: each is said once.
    for list in [&mut v.errors, &mut v.warnings] {
        let mut seen = std::collections::HashSet::new();
        list.retain(|e| seen.insert(e.to_string()));
    }
    match model {
        Some((process, routing)) if v.errors.is_empty() => Ok(Config {
            process,
            routing,
            warnings: v.warnings,
            checksum: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes())),
            text: std::sync::Arc::from(text),
        }),
        _ => Err((v.errors, v.warnings)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../conf/tollgate.yaml");

    fn errors(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn example_loads() {
        let c = match parse(EXAMPLE) {
            Ok(c) => c,
            Err(e) => panic!("{e:?}"),
        };
        assert_eq!(c.process.server.threads, 2);
        assert!(!c.process.server.work_stealing);
        assert_eq!(c.process.server.grace_period_seconds, Some(1));
        assert_eq!(c.routing.upstreams.len(), 2);
        assert_eq!(c.routing.upstreams[0].peers[1].weight, 2);
        assert_eq!(c.routing.upstreams[0].retries, 2);
        assert_eq!(
            c.routing.routes[0].rewrite,
            PathRewrite::Strip("/api".into())
        );
        assert_eq!(
            c.routing.routes[0].hosts,
            vec![
                HostPattern::Exact("api.example.com".into()),
                HostPattern::Suffix(".example.org".into())
            ]
        );
        assert_eq!(c.routing.routes[0].max_body_size, Some(1 << 20));
        assert_eq!(
            c.process.client_keepalive_timeout,
            std::time::Duration::from_secs(60)
        );
    }

    #[test]
    fn defaults_differ_from_pingora() {
        let c = parse("listeners: [{address: 127.0.0.1:1}]\nupstreams: {a: {peers: [127.0.0.1:2]}}\nroutes: [{name: r, match: {}, upstream: a}]\n")
            .expect("valid");
        assert!(!c.process.server.work_stealing);
        assert!(c.process.server.threads >= 1);
        assert_eq!(c.process.server.grace_period_seconds, Some(5));
        assert_eq!(c.process.server.graceful_shutdown_timeout_seconds, Some(10));
    }

    #[test]
    fn client_keepalive_timeout() {
        let base = "listeners: [{address: 127.0.0.1:1}]\nupstreams: {a: {peers: [127.0.0.1:2]}}\nroutes: [{name: r, match: {}, upstream: a}]\n";
        let c = parse(base).expect("valid");
        assert_eq!(
            c.process.client_keepalive_timeout,
            std::time::Duration::from_secs(60)
        );
        let c = parse(&format!("{base}client_keepalive_timeout: 2m\n")).expect("valid");
        assert_eq!(
            c.process.client_keepalive_timeout,
            std::time::Duration::from_secs(120)
        );
        for (value, message) in [
            ("0s", "must be at least 1s"),
            ("1500ms", "must be a whole number of seconds"),
            ("2h", "must be at most 1h"),
        ] {
            let e = errors(&format!("{base}client_keepalive_timeout: {value}\n"));
            assert_eq!(
                e,
                vec![format!("client_keepalive_timeout: {message}")],
                "{value}"
            );
        }
        let e = errors(&format!("{base}client_keepalive_timeout: soon\n"));
        assert!(
            e.len() == 1 && e[0].starts_with("client_keepalive_timeout:"),
            "{e:?}"
        );
    }

    #[test]
    fn reports_every_problem() {
        let e = errors(
            "listeners: [{address: nope}]\nthreds: 2\nupstreams: {a: {peers: []}}\nroutes:\n  - {name: r, match: {path_prefix: x}, upstream: b}\n  - {name: s, match: {pathprefix: /x}, upstream: a}\n",
        );
        assert!(
            e.iter().any(|m| m.starts_with("listeners[0].address:")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("threds: unknown key (did you mean \"threads\"?)")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("upstreams.a.peers: must list")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("routes[0].match.path_prefix:")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("routes[0].upstream: unknown upstream \"b\"")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|m| m.starts_with(
                "routes[1].match.pathprefix: unknown key (did you mean \"path_prefix\"?)"
            )),
            "{e:?}"
        );
    }

    #[test]
    fn segment_prefixes() {
        assert!(segment_prefix("/api/users", "/api"));
        assert!(segment_prefix("/api", "/api"));
        assert!(!segment_prefix("/apix", "/api"));
        assert!(segment_prefix("/x", "/"));
    }
}
