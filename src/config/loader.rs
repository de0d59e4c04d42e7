//! The one way validation reaches outside the file: reading key and certificate files,
//! resolving peer names and reading the environment. [`System`] does it for real; tests give
//! validators a [`Fixed`] loader with the files, names and variables they need.

use crate::dns::{Answer, Name, Resolver};
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// What validation may read from the machine.
pub trait Loader {
    /// The directory relative paths in the file are relative to.
    fn base(&self) -> &Path;
    /// The whole content of the file at `path` (absolute, see [`Loader::path`]).
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Whether `path` is an existing directory.
    fn is_dir(&self, path: &Path) -> bool;
    /// Whether this process may create files in the directory `path`.
    fn writable_dir(&self, path: &Path) -> bool;
    /// The peers `name` resolves to now (asking `servers`, or the system's resolver without
    /// any), each with its own weight when the name gives one (SRV).
    fn resolve(&self, name: &Name, servers: &[SocketAddr]) -> Result<Answer, String>;
    /// The addresses the running gateway has for `name`, when a reload cannot look it up: the
    /// pool keeps them rather than the reload failing while DNS does.
    fn last_known(&self, _name: &Name) -> Option<crate::dns::Resolved> {
        None
    }
    /// The value of an environment variable, when set (and Unicode).
    fn env(&self, name: &str) -> Option<String>;
    /// How many CPUs the process may use.
    fn cpus(&self) -> usize;
    /// Whether the file is only being checked (`tollgate -t`), where secrets that come from the
    /// environment may be missing: they are reported, not refused.
    fn secrets_optional(&self) -> bool {
        false
    }

    /// `path` made absolute against [`Loader::base`].
    fn path(&self, path: &str) -> PathBuf {
        self.base().join(path)
    }
}

/// The machine itself: files, the system resolver and the process environment.
#[derive(Debug, Clone)]
pub struct System {
    base: PathBuf,
    check_only: bool,
    /// What the running gateway's names resolve to (a reload's fallback), by name.
    known: std::collections::HashMap<String, crate::dns::Resolved>,
}

impl System {
    /// Relative paths are relative to `base`.
    pub fn new(base: &Path) -> System {
        System {
            base: base.to_path_buf(),
            check_only: false,
            known: Default::default(),
        }
    }

    /// For a reload: names that cannot be looked up now keep the addresses in `known` (keyed
    /// by the name as printed: `users.internal:8080`, `SRV _http._tcp.users`).
    pub fn remembering(
        base: &Path,
        known: std::collections::HashMap<String, crate::dns::Resolved>,
    ) -> System {
        System {
            known,
            ..System::new(base)
        }
    }

    /// For checking a file only (`tollgate -t`): secrets from the environment may be missing.
    pub fn checking(base: &Path) -> System {
        System {
            check_only: true,
            ..System::new(base)
        }
    }
}

impl Loader for System {
    fn base(&self) -> &Path {
        &self.base
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    fn writable_dir(&self, path: &Path) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
            return false;
        };
        // access(2) answers for this process's user, as the gateway will run.
        path.is_dir() && unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0
    }
    fn resolve(&self, name: &Name, servers: &[SocketAddr]) -> Result<Answer, String> {
        match name {
            // The system's resolver (getaddrinfo: /etc/hosts, nsswitch) as everything else on
            // the machine sees the name.
            Name::Host { host, port } if servers.is_empty() => {
                let peers: Vec<(SocketAddr, Option<usize>)> = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|e| format!("cannot resolve \"{name}\": {e}"))?
                    .map(|a| (a, None))
                    .collect();
                Ok(Answer {
                    peers,
                    valid_for: std::time::Duration::ZERO,
                })
            }
            _ => {
                Resolver::resolve_blocking(servers, name).map_err(|e| format!("cannot resolve {e}"))
            }
        }
    }
    fn last_known(&self, name: &Name) -> Option<crate::dns::Resolved> {
        self.known.get(&name.to_string()).cloned()
    }
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn cpus(&self) -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
    fn secrets_optional(&self) -> bool {
        self.check_only
    }
}

/// A loader with a fixed world, for tests: in-memory files (by path relative to `/conf`),
/// names, variables and directories.
#[derive(Debug, Clone)]
pub struct Fixed {
    base: PathBuf,
    pub files: HashMap<PathBuf, Vec<u8>>,
    pub names: HashMap<String, Vec<SocketAddr>>,
    pub vars: HashMap<String, String>,
    pub dirs: Vec<PathBuf>,
    /// Directories that exist but this process may not write to.
    pub read_only: Vec<PathBuf>,
    pub cpus: usize,
    /// Check only: secrets from the environment may be missing.
    pub check_only: bool,
}

impl Default for Fixed {
    fn default() -> Self {
        Fixed {
            base: PathBuf::from("/conf"),
            files: HashMap::new(),
            names: HashMap::new(),
            vars: HashMap::new(),
            dirs: vec![PathBuf::from("/conf"), PathBuf::from("/tmp")],
            read_only: Vec::new(),
            cpus: 2,
            check_only: false,
        }
    }
}

impl Fixed {
    /// Add a file at `path` (relative to the base directory).
    pub fn file(mut self, path: &str, content: impl Into<Vec<u8>>) -> Fixed {
        let p = self.base.join(path);
        self.files.insert(p, content.into());
        self
    }
    /// Add an environment variable.
    pub fn var(mut self, name: &str, value: &str) -> Fixed {
        self.vars.insert(name.into(), value.into());
        self
    }
    /// Add a name (`host:port`, or an SRV name) that resolves to `addrs`.
    pub fn name(mut self, host_port: &str, addrs: &[SocketAddr]) -> Fixed {
        self.names.insert(host_port.into(), addrs.to_vec());
        self
    }
}

impl Loader for Fixed {
    fn base(&self) -> &Path {
        &self.base
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "No such file or directory"))
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.dirs.iter().any(|d| d == path) || self.read_only.iter().any(|d| d == path)
    }
    fn writable_dir(&self, path: &Path) -> bool {
        self.dirs.iter().any(|d| d == path)
    }
    fn resolve(&self, name: &Name, _servers: &[SocketAddr]) -> Result<Answer, String> {
        let key = match name {
            Name::Host { host, port } => format!("{host}:{port}"),
            Name::Srv(srv) => srv.clone(),
        };
        match self.names.get(&key) {
            Some(addrs) => Ok(Answer {
                peers: addrs.iter().map(|a| (*a, None)).collect(),
                valid_for: std::time::Duration::ZERO,
            }),
            None => Err(format!(
                "cannot resolve \"{name}\": failed to lookup address information"
            )),
        }
    }
    fn env(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }
    fn cpus(&self) -> usize {
        self.cpus
    }
    fn secrets_optional(&self) -> bool {
        self.check_only
    }
}
