//! The process-wide settings: Pingora's own (`threads`, `pid_file`, ...), how slowly a client
//! may send a request, header size, path normalisation and the access log.

use super::super::raw::{
    RawAccessLog, RawEscapedSlashes, RawLogFormat, RawPathNormalization, RawSemicolons,
};
use super::super::units;
use super::super::{AccessLogConfig, ClientTimeouts, LogFormat};
use super::Validator;
use crate::canonical::{EscapedSlashes, PathOptions};
use pingora_core::server::configuration::ServerConf;
use serde_yaml::{Mapping, Value};
use std::path::Path;
use std::time::Duration;

/// Pingora refuses header sections at or over this size itself (with a bare 400).
const PINGORA_MAX_HEADER_SIZE: u64 = 1_048_575;

impl Validator<'_> {
    pub(super) fn server_conf(&mut self, mut map: Mapping) -> Option<ServerConf> {
        let mut set_default = |key: &str, value: Value| {
            let k = Value::String(key.to_string());
            if !map.contains_key(&k) {
                map.insert(k, value);
            }
        };
        let cpus = self.loader.cpus();
        let runtime_dir = self
            .loader
            .env("RUNTIME_DIRECTORY")
            .and_then(|d| d.split(':').next().map(str::to_string))
            .filter(|d| d.starts_with('/'))
            .or_else(|| {
                // The service's runtime directory, also for `tollgate -s` run from outside it.
                let service = Path::new("/run/tollgate");
                self.loader
                    .is_dir(service)
                    .then(|| service.to_string_lossy().into_owned())
            });
        set_default("version", Value::from(1));
        set_default("threads", Value::from(cpus as u64));
        set_default("work_stealing", Value::from(false));
        set_default("grace_period_seconds", Value::from(5));
        set_default("graceful_shutdown_timeout_seconds", Value::from(10));
        // Under systemd with `RuntimeDirectory=tollgate`, the runtime files go there (systemd
        // names it in RUNTIME_DIRECTORY; `PrivateTmp` would hide /tmp from `tollgate -s`);
        // elsewhere in /tmp.
        let runtime = runtime_dir.as_deref().unwrap_or("/tmp");
        let prefix = if runtime_dir.is_some() {
            ""
        } else {
            "tollgate-"
        };
        set_default("pid_file", Value::from(format!("{runtime}/tollgate.pid")));
        set_default(
            "upgrade_sock",
            Value::from(format!("{runtime}/{prefix}upgrade.sock")),
        );
        let mut conf: ServerConf = self.item("", Value::Mapping(map))?;
        if conf.version != 1 {
            self.error(
                "version",
                format!(
                    "unsupported configuration version {} (this build reads version 1)",
                    conf.version
                ),
            );
        }
        if conf.threads == 0 {
            self.error("threads", "must be at least 1");
        }
        for (key, value) in [
            ("pid_file", &mut conf.pid_file),
            ("upgrade_sock", &mut conf.upgrade_sock),
        ] {
            if value.is_empty() {
                self.error(key, "must not be empty");
            } else if Path::new(value.as_str()).is_relative() {
                // Pingora changes directory when it daemonizes: pin relative paths now.
                *value = self
                    .loader
                    .path(value.as_str())
                    .to_string_lossy()
                    .into_owned();
            }
        }
        if let Some(log) = &mut conf.error_log {
            if Path::new(log.as_str()).is_relative() {
                *log = self
                    .loader
                    .path(log.as_str())
                    .to_string_lossy()
                    .into_owned();
            }
        }
        // Where the process writes: checked now, so that a start never ends in Pingora's panic.
        let written = [
            ("pid_file", Some(conf.pid_file.clone())),
            ("upgrade_sock", Some(conf.upgrade_sock.clone())),
            ("error_log", conf.error_log.clone()),
        ];
        for (key, path) in written {
            if let Some(p) = path.filter(|p| !p.is_empty()) {
                self.writable_parent(key, Path::new(&p));
            }
        }
        Some(conf)
    }

    pub(super) fn client_keepalive(&mut self, value: Option<Value>) -> std::time::Duration {
        const DEFAULT: std::time::Duration = std::time::Duration::from_secs(60);
        const KEY: &str = "client_keepalive_timeout";
        let Some(v) = value else { return DEFAULT };
        let Some(units::ConfDuration(d)) = self.item::<units::ConfDuration>(KEY, v) else {
            return DEFAULT;
        };
        // Pingora counts keep-alive time in whole seconds, and reads 0 as "forever".
        if d < std::time::Duration::from_secs(1) {
            self.error(KEY, "must be at least 1s");
        } else if d.subsec_nanos() != 0 {
            self.error(KEY, "must be a whole number of seconds");
        } else if d > std::time::Duration::from_secs(3600) {
            self.error(KEY, "must be at most 1h");
        }
        d
    }

    pub(super) fn max_header(&mut self, value: Option<Value>) -> usize {
        const DEFAULT: usize = 64 * 1024;
        let Some(v) = value else { return DEFAULT };
        let Some(units::ConfSize(n)) = self.item::<units::ConfSize>("max_request_header_size", v)
        else {
            return DEFAULT;
        };
        if n < 1024 {
            self.error("max_request_header_size", "must be at least 1KiB");
        } else if n >= PINGORA_MAX_HEADER_SIZE {
            self.error(
                "max_request_header_size",
                "must be below 1MiB (the HTTP parser's own limit)",
            );
        }
        n as usize
    }

    fn timeout(&mut self, key: &str, value: Option<Value>, default: Duration) -> Duration {
        let Some(v) = value else { return default };
        let Some(units::ConfDuration(d)) = self.item::<units::ConfDuration>(key, v) else {
            return default;
        };
        if d < Duration::from_millis(100) {
            self.error(key, "must be at least 100ms");
        } else if d > Duration::from_secs(3600) {
            self.error(key, "must be at most 1h");
        }
        d
    }

    pub(super) fn client_timeouts(
        &mut self,
        header: Option<Value>,
        body: Option<Value>,
        min_rate: Option<Value>,
        send: Option<Value>,
    ) -> ClientTimeouts {
        let d = ClientTimeouts::default();
        let header = self.timeout("client_header_timeout", header, d.header);
        let body = self.timeout("client_body_timeout", body, d.body);
        let send = self.timeout("client_send_timeout", send, d.send);
        let body_min_rate = match min_rate {
            None => d.body_min_rate,
            Some(v) => match self.item::<units::ConfSize>("client_body_min_rate", v) {
                Some(units::ConfSize(n)) => n,
                None => d.body_min_rate,
            },
        };
        ClientTimeouts {
            header,
            body,
            body_min_rate,
            send,
        }
    }

    pub(super) fn path_normalization(&mut self, value: Option<Value>) -> PathOptions {
        let raw = match value {
            None | Some(Value::Null) => RawPathNormalization::default(),
            Some(v) => self
                .item::<RawPathNormalization>("path_normalization", v)
                .unwrap_or_default(),
        };
        let defaults = PathOptions::default();
        PathOptions {
            merge_slashes: raw.merge_slashes.unwrap_or(defaults.merge_slashes),
            escaped_slashes: match raw.escaped_slashes {
                None => defaults.escaped_slashes,
                Some(RawEscapedSlashes::Reject) => EscapedSlashes::Reject,
                Some(RawEscapedSlashes::Keep) => EscapedSlashes::Keep,
                Some(RawEscapedSlashes::Decode) => EscapedSlashes::Decode,
            },
            semicolons: match raw.semicolons {
                None => defaults.semicolons,
                Some(RawSemicolons::Reject) => false,
                Some(RawSemicolons::Keep) => true,
            },
        }
    }

    /// `path`'s directory must exist and be writable by this process.
    fn writable_parent(&mut self, key: &str, path: &Path) -> bool {
        let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
            return true;
        };
        if !self.loader.is_dir(dir) {
            self.error(key, format!("directory {} does not exist", dir.display()));
            false
        } else if !self.loader.writable_dir(dir) {
            self.error(
                key,
                format!("directory {} is not writable by this user", dir.display()),
            );
            false
        } else {
            true
        }
    }

    pub(super) fn access_log(&mut self, value: Value) -> Option<AccessLogConfig> {
        let raw = self.item::<RawAccessLog>("access_log", value)?;
        let format = match raw.format.unwrap_or(RawLogFormat::Json) {
            RawLogFormat::Json => LogFormat::Json,
            RawLogFormat::Ecs => LogFormat::Ecs,
        };
        let query = raw.query.unwrap_or(true);
        let config = |path: String| AccessLogConfig {
            path,
            format,
            query,
        };
        if raw.path.is_empty() {
            self.error("access_log.path", "must be a file path or \"stdout\"");
            return None;
        }
        if raw.path != "stdout" {
            let joined = self.loader.path(&raw.path);
            let path = joined.as_path();
            if !self.writable_parent("access_log.path", path) {
                return None;
            }
            // Pingora changes directory when it daemonizes: the path is pinned now.
            return Some(config(path.to_string_lossy().into_owned()));
        }
        Some(config(raw.path))
    }
}

#[cfg(test)]
mod front_door_tests {
    use crate::canonical::EscapedSlashes;
    use crate::config::parse;
    use std::time::Duration;

    const BASE: &str =
        "upstreams: {a: {peers: [127.0.0.1:2]}}\nroutes: [{name: r, match: {}, upstream: a}]\n";

    fn errors(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn defaults() {
        let c = parse(&format!("listeners: [{{address: 127.0.0.1:1}}]\n{BASE}")).unwrap();
        assert_eq!(c.process.client_timeouts.header, Duration::from_secs(10));
        assert_eq!(c.process.client_timeouts.body, Duration::from_secs(30));
        assert_eq!(c.process.client_timeouts.body_min_rate, 500);
        assert_eq!(c.process.client_timeouts.send, Duration::from_secs(60));
        assert!(!c.routing.path_normalization.semicolons);
        assert!(c.routing.path_normalization.merge_slashes);
        assert_eq!(
            c.routing.path_normalization.escaped_slashes,
            EscapedSlashes::Reject
        );
        let l = &c.process.listeners[0];
        assert!(l.trusted_proxies.is_empty() && !l.proxy_protocol);
        assert_eq!(l.max_connections_per_ip, None);
    }

    #[test]
    fn timeouts_and_paths() {
        let c = parse(&format!(
            "listeners: [{{address: 127.0.0.1:1}}]\nclient_header_timeout: 2s\nclient_body_timeout: 500ms\nclient_body_min_rate: 1KiB\nclient_send_timeout: 5s\npath_normalization: {{merge_slashes: false, escaped_slashes: decode, semicolons: keep}}\n{BASE}"
        ))
        .unwrap();
        assert_eq!(c.process.client_timeouts.header, Duration::from_secs(2));
        assert_eq!(c.process.client_timeouts.body, Duration::from_millis(500));
        assert_eq!(c.process.client_timeouts.body_min_rate, 1024);
        assert_eq!(c.process.client_timeouts.send, Duration::from_secs(5));
        assert!(c.routing.path_normalization.semicolons);
        assert!(!c.routing.path_normalization.merge_slashes);
        assert_eq!(
            c.routing.path_normalization.escaped_slashes,
            EscapedSlashes::Decode
        );
        let e = errors(&format!(
            "listeners: [{{address: 127.0.0.1:1}}]\nclient_header_timeout: 10ms\nclient_body_timeout: 2h\npath_normalization: {{escaped_slashes: forward, merge: true}}\n{BASE}"
        ));
        for place in [
            "client_header_timeout: must be at least 100ms",
            "client_body_timeout: must be at most 1h",
            "path_normalization.escaped_slashes:",
            "path_normalization.merge:",
        ] {
            assert!(e.iter().any(|m| m.starts_with(place)), "{place} in {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::loader::Fixed;
    use super::super::super::LogFormat;
    use super::super::testing::*;

    #[test]
    fn process_defaults_come_from_the_machine_and_relative_paths_are_pinned() {
        let mut machine = Fixed::default();
        machine.cpus = 7;
        machine.dirs.push("/conf/run".into());
        let c = load_with(&file("pid_file: run/t.pid\n"), &machine);
        assert_eq!(c.process.server.threads, 7);
        assert_eq!(c.process.server.pid_file, "/conf/run/t.pid");
        assert_eq!(c.process.server.upgrade_sock, "/tmp/tollgate-upgrade.sock");
        assert_reported(
            &errors(&file("threads: 0\nversion: 2\npid_file: ''\n")),
            &[
                "threads: must be at least 1",
                "version: unsupported configuration version 2",
                "pid_file: must not be empty",
            ],
        );
    }

    #[test]
    fn runtime_files_go_to_the_services_runtime_directory() {
        let c = load_with(&file(""), &Fixed::default());
        assert_eq!(c.process.server.pid_file, "/tmp/tollgate.pid");
        assert_eq!(c.process.server.upgrade_sock, "/tmp/tollgate-upgrade.sock");
        let mut under_systemd = Fixed::default().var("RUNTIME_DIRECTORY", "/run/tollgate");
        under_systemd.dirs.push("/run/tollgate".into());
        let c = load_with(&file(""), &under_systemd);
        assert_eq!(c.process.server.pid_file, "/run/tollgate/tollgate.pid");
        assert_eq!(c.process.server.upgrade_sock, "/run/tollgate/upgrade.sock");
        let mut outside = Fixed::default();
        outside.dirs.push("/run/tollgate".into());
        let c = load_with(&file(""), &outside);
        assert_eq!(c.process.server.pid_file, "/run/tollgate/tollgate.pid");
    }

    #[test]
    fn header_size_and_keepalive_bounds() {
        assert_eq!(
            load_with(&file(""), &Fixed::default())
                .routing
                .max_request_header_size,
            64 * 1024
        );
        assert_reported(
            &errors(&file("max_request_header_size: 100\n")),
            &["max_request_header_size: must be at least 1KiB"],
        );
        assert_reported(
            &errors(&file("max_request_header_size: 2MiB\n")),
            &["max_request_header_size: must be below 1MiB"],
        );
    }

    #[test]
    fn where_the_process_writes_must_be_writable() {
        let mut machine = Fixed::default();
        machine.read_only.push("/etc".into());
        assert_reported(
            &errors_with(
                &file("pid_file: /etc/t.pid\nerror_log: /var/log/nowhere/error.log\nupgrade_sock: run/u.sock\naccess_log: {path: /etc/a.log}\n"),
                &machine,
            ),
            &[
                "pid_file: directory /etc is not writable by this user",
                "error_log: directory /var/log/nowhere does not exist",
                "upgrade_sock: directory /conf/run does not exist",
                "access_log.path: directory /etc is not writable by this user",
            ],
        );
        let c = load_with(&file("error_log: logs.txt\n"), &machine);
        assert_eq!(
            c.process.server.error_log.as_deref(),
            Some("/conf/logs.txt")
        );
    }

    #[test]
    fn the_access_log_directory_must_exist() {
        let machine = Fixed::default();
        let c = load_with(&file("access_log: {path: access.log}\n"), &machine);
        let log = c.process.access_log.expect("access log");
        assert_eq!(log.path, "/conf/access.log");
        assert_eq!((log.format, log.query), (LogFormat::Json, true));
        let c = load_with(
            &file("access_log: {path: stdout, format: ecs, query: false}\n"),
            &machine,
        );
        let log = c.process.access_log.expect("access log");
        assert_eq!(log.path, "stdout");
        assert_eq!((log.format, log.query), (LogFormat::Ecs, false));
        assert_reported(
            &errors_with(&file("access_log: {path: logs/access.log}\n"), &machine),
            &["access_log.path: directory /conf/logs does not exist"],
        );
        assert_reported(
            &errors(&file("access_log: {path: ''}\n")),
            &["access_log.path: must be a file path or \"stdout\""],
        );
    }
}
