//! The real `tollgate` binary: started on a generated configuration, spawned with default
//! signal dispositions, signalled and waited for.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

/// A command that runs the gateway binary with `RUST_LOG=info` and default signal
/// dispositions: a process started in the background of a non-interactive shell inherits
/// ignored `SIGINT` and `SIGQUIT`, which tests that signal the gateway must not.
pub fn command() -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(bin());
    cmd.env("RUST_LOG", "info");
    unsafe {
        cmd.pre_exec(|| {
            for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGHUP] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    cmd
}

/// Send `sig` to process `pid`.
pub fn signal(pid: u32, sig: i32) {
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Wait for `child` to exit, up to `limit`; its exit status if it did.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The path of the built gateway binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tollgate")
}

/// Whether process `pid` holds a socket listening on TCP `port` (from `/proc/net/tcp{,6}` and
/// the process's file descriptors).
pub fn listens(pid: u32, port: u16) -> bool {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .map(|l| inodes.iter().any(|i| l.to_string_lossy() == *i))
            .unwrap_or(false)
    })
}

/// The real gateway binary running on a generated configuration.
pub struct Gateway {
    pub port: u16,
    child: Child,
    pub dir: tempfile::TempDir,
    /// The configuration's first part (process settings and the listener), kept for rewrites.
    head: String,
}

impl Gateway {
    /// Start the gateway with `body` (upstreams, routes, ...) under a generated process
    /// section and one listener, and wait until it accepts connections.
    pub fn start(body: &str) -> Gateway {
        Gateway::start_with_env(body, &[])
    }

    /// [`Gateway::start`] with extra environment variables for the gateway process.
    pub fn start_with_env(body: &str, env: &[(&str, &str)]) -> Gateway {
        Gateway::start_full(
            "grace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 1\n",
            body,
            env,
        )
    }

    /// Start with explicit shutdown settings (`process`), the body and environment.
    pub fn start_full(process: &str, body: &str, env: &[(&str, &str)]) -> Gateway {
        Gateway::start_listener(process, "", body, env)
    }

    /// [`Gateway::start_full`] with more settings for the listener (`listener`: YAML lines
    /// indented by four spaces, each ending in a newline).
    pub fn start_listener(
        process: &str,
        listener: &str,
        body: &str,
        env: &[(&str, &str)],
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        // Retry on the rare race where another test takes the port between probe and bind.
        for _ in 0..5 {
            let port = closed_port().port();
            let head = format!(
                "threads: 2\npid_file: {d}/t.pid\nupgrade_sock: {d}/t.sock\n{process}listeners:\n  - address: 127.0.0.1:{port}\n{listener}",
                d = dir.path().display()
            );
            let conf = format!("{head}{body}");
            let path = dir.path().join("tollgate.yaml");
            std::fs::write(&path, &conf).unwrap();
            let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
            let mut child = command()
                .arg("-c")
                .arg(&path)
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start gateway");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    let log =
                        std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
                    // The port picked for traffic was taken meanwhile, or is the one the test
                    // picked for the admin listener: pick another.
                    if log.contains("Address already in use")
                        || log.contains("must not share a port with a traffic listener")
                    {
                        break;
                    }
                    panic!("gateway exited with {status}:\n{log}");
                }
                // The socket must be this child's: a port free when probed can be taken by
                // another test's server meanwhile, which would answer a plain connect.
                if listens(child.id(), port) && TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Gateway {
                        port,
                        child,
                        dir,
                        head,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("gateway did not start");
    }

    /// Replace the configuration file's body (everything after the listener), keeping the
    /// process settings and listener; the gateway is not told.
    pub fn rewrite(&self, body: &str) {
        std::fs::write(
            self.dir.path().join("tollgate.yaml"),
            format!("{}{body}", self.head),
        )
        .unwrap();
    }

    /// Write a whole configuration file as given.
    pub fn rewrite_raw(&self, text: &str) {
        std::fs::write(self.dir.path().join("tollgate.yaml"), text).unwrap();
    }

    /// The configuration file's text now.
    pub fn config(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tollgate.yaml")).unwrap_or_default()
    }

    /// The configuration's process settings and listener, as written.
    pub fn head(&self) -> &str {
        &self.head
    }

    /// The gateway process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal to the gateway process.
    pub fn signal(&self, sig: i32) {
        signal(self.child.id(), sig);
    }

    /// Wait for the process to exit, up to `limit`; its exit status if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        wait_exit(&mut self.child, limit)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// Send a GET for `path` with extra header lines.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("Connection: close\r\n\r\n");
        self.raw(req.as_bytes())
    }

    /// Send raw bytes on a new connection and read one response.
    pub fn raw(&self, bytes: &[u8]) -> Response {
        send_raw(self.port, bytes)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GETs of `/` through a gateway on a few threads until stopped, each thread pausing between
/// requests (a steady load beside the other tests, not a flood); answers other than 200 are
/// counted and printed.
pub struct SteadyLoad {
    stop: Arc<std::sync::atomic::AtomicBool>,
    sent: Arc<std::sync::atomic::AtomicUsize>,
    failed: Arc<std::sync::atomic::AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl SteadyLoad {
    pub fn start(gw: &Arc<Gateway>, threads: usize, pause: Duration) -> SteadyLoad {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads = (0..threads)
            .map(|_| {
                let (gw, stop, sent, failed) =
                    (gw.clone(), stop.clone(), sent.clone(), failed.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        sent.fetch_add(1, Ordering::Relaxed);
                        let r = gw.get("/", &[]);
                        if r.status != 200 {
                            failed.fetch_add(1, Ordering::Relaxed);
                            eprintln!("failed: {} {}", r.status, r.text());
                        }
                        std::thread::sleep(pause);
                    }
                })
            })
            .collect();
        SteadyLoad {
            stop,
            sent,
            failed,
            threads,
        }
    }

    /// Requests sent so far.
    pub fn sent(&self) -> usize {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Until `more` requests beyond those sent now have been sent (at most 10 s).
    pub fn wait_for(&self, more: usize) -> bool {
        let target = self.sent() + more;
        wait_until(Duration::from_secs(10), || self.sent() >= target)
    }

    /// Stop; returns the requests sent and those that failed.
    pub fn stop(self) -> (usize, usize) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}
