//! The error log: `env_logger` (`RUST_LOG`, `info` by default), with Pingora's messages about
//! things that are expected on healthy traffic moved down to `debug`, so that a line at `WARN` or
//! above is always worth an operator's attention:
//!
//! - "failed to acquire reusable stream": an idle upstream connection was picked up while its
//!   idle watcher still held it; Pingora opens another connection (nothing fails);
//! - "No incoming socket transfer, sleep ... and try again": a new process waiting for the
//!   running one to hand over its sockets during an upgrade;
//! - "no header compression dictionary loaded": cache metadata is stored uncompressed, as
//!   intended;
//! - "Graceful shutdown: grace period Ns starts/ends": Pingora's own grace period, set past
//!   Tollgate's drain (see `server::Lifecycle`), which logs the real one.

use log::{Level, Log, Metadata, Record};

/// Messages that are expected on healthy traffic: (target, start of the message).
const EXPECTED: &[(&str, &str)] = &[
    (
        "pingora_core::connectors",
        "failed to acquire reusable stream",
    ),
    (
        "pingora_core::server::transfer_fd",
        "No incoming socket transfer",
    ),
    (
        "pingora_cache::meta",
        "no header compression dictionary loaded",
    ),
    ("pingora_core::server", "Graceful shutdown: grace period"),
];

/// Whether a record is one of the expected messages.
fn expected(record: &Record) -> bool {
    let target = record.target();
    if !EXPECTED.iter().any(|(t, _)| *t == target) {
        return false;
    }
    let text = match record.args().as_str() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(record.args().to_string()),
    };
    EXPECTED
        .iter()
        .any(|(t, m)| *t == target && text.starts_with(m))
}

/// `env_logger` with the expected messages at `debug`.
struct Quiet(env_logger::Logger);

impl Log for Quiet {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if record.level() > Level::Debug || !expected(record) {
            return self.0.log(record);
        }
        let lowered = Metadata::builder()
            .level(Level::Debug)
            .target(record.target())
            .build();
        if self.0.enabled(&lowered) {
            self.0.log(
                &Record::builder()
                    .args(*record.args())
                    .metadata(lowered)
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .build(),
            );
        }
    }

    fn flush(&self) {
        self.0.flush()
    }
}

/// Install the error log (once, at start).
pub fn init() {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Quiet(inner))).is_ok() {
        log::set_max_level(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(target: &'a str, args: std::fmt::Arguments<'a>) -> Record<'a> {
        Record::builder()
            .level(Level::Error)
            .target(target)
            .args(args)
            .build()
    }

    #[test]
    fn only_the_expected_messages_are_lowered() {
        assert!(expected(&record(
            "pingora_core::connectors",
            format_args!("failed to acquire reusable stream")
        )));
        let secs = 1;
        assert!(expected(&record(
            "pingora_core::server::transfer_fd",
            format_args!("No incoming socket transfer, sleep {secs}s and try again")
        )));
        assert!(!expected(&record(
            "pingora_core::connectors",
            format_args!("connection refused")
        )));
        assert!(!expected(&record(
            "tollgate::proxy",
            format_args!("failed to acquire reusable stream")
        )));
    }
}
