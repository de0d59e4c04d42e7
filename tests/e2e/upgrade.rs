//! Zero-downtime upgrades: under steady keep-alive load, five upgrades in a row (a new process
//! started with `-u` takes the listening sockets, the old one is told to quit with SIGQUIT and
//! drains), with a changed configuration each time. No client sees a failed request or a
//! connection error, and a slow request that started before an upgrade finishes with its whole
//! body after it. Also: SIGTERM finishes in-flight requests and exits 0.

use crate::common::*;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The gateway on `conf` (with `-u`: taking over the sockets of a running one), its log
/// appended to `log`.
fn spawn(conf: &Path, upgrade: bool, log: &Path) -> Child {
    let mut cmd = command();
    cmd.arg("-c").arg(conf);
    if upgrade {
        cmd.arg("-u");
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap()
}

fn config(dir: &Path, port: u16, up: &Upstream, generation: usize) -> String {
    format!(
        "threads: 2\npid_file: {d}/t.pid\nupgrade_sock: {d}/upgrade.sock\ngrace_period_seconds: 1\ngraceful_shutdown_timeout_seconds: 5\nlisteners:\n  - address: 127.0.0.1:{port}\nupstreams:\n  a: {{peers: [\"{}\"], read_timeout: 10s}}\nroutes:\n  - name: r\n    match: {{}}\n    upstream: a\n    response_headers: {{set: {{x-generation: \"{generation}\"}}}}\n  - {{name: c, match: {{path_prefix: /c}}, upstream: a, cache: {{ttl: 60s}}}}\n",
        up.addr,
        d = dir.display()
    )
}

/// A plain keep-alive HTTP/1.1 client that never retries: every error counts.
fn client(
    port: u16,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<Mutex<Vec<String>>>,
    seen: Arc<Mutex<Vec<String>>>,
) {
    let connect = || {
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
        Some(c)
    };
    let mut conn = connect();
    while !stop.load(Ordering::SeqCst) {
        let Some(c) = conn.as_mut() else {
            failed.lock().unwrap().push("connect failed".into());
            conn = connect();
            continue;
        };
        if let Err(e) = c.write_all(b"GET /r HTTP/1.1\r\nHost: t\r\n\r\n") {
            failed.lock().unwrap().push(format!("write: {e}"));
            conn = connect();
            continue;
        }
        let r =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_keepalive_response(c)));
        match r {
            Ok(r) if r.status == 200 => {
                ok.fetch_add(1, Ordering::SeqCst);
                if let Some(g) = r.header("x-generation") {
                    let mut s = seen.lock().unwrap();
                    if s.last().map(String::as_str) != Some(g) {
                        s.push(g.to_string());
                    }
                }
                if r.closed {
                    conn = connect();
                }
            }
            Ok(r) => {
                failed.lock().unwrap().push(format!("status {}", r.status));
                conn = connect();
            }
            Err(_) => {
                failed
                    .lock()
                    .unwrap()
                    .push("connection closed or reset under a request".into());
                conn = connect();
            }
        }
    }
}

#[test]
fn five_upgrades_under_load_lose_nothing() {
    let up = Upstream::with_handler("a", |seen| {
        if seen.url.starts_with("/slow") {
            let body = "s".repeat(100_000);
            Reply::ok(&body).delay(Duration::from_secs(2))
        } else {
            Reply::ok("ok")
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("tollgate.yaml");
    let log = dir.path().join("gateway.log");
    let port = closed_port().port();
    std::fs::write(&conf, config(dir.path(), port, &up, 0)).unwrap();
    let mut current = spawn(&conf, false, &log);
    assert!(wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed, seen) = (stop.clone(), ok.clone(), failed.clone(), seen.clone());
            std::thread::spawn(move || client(port, stop, ok, failed, seen))
        })
        .collect();
    assert!(wait_until(Duration::from_secs(5), || ok
        .load(Ordering::SeqCst)
        > 50));

    // Cached responses (their metadata is stored), and a reload.
    for _ in 0..3 {
        let r = send_raw(
            port,
            b"GET /c/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 200);
    }
    signal(current.id(), libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("configuration reloaded")
    }));
    let mut slow = None;
    for generation in 1..=5 {
        std::fs::write(&conf, config(dir.path(), port, &up, generation)).unwrap();
        if generation == 3 {
            // A slow request in flight across this upgrade.
            slow = Some(std::thread::spawn(move || {
                let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                c.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
                    .unwrap();
                read_keepalive_response(&mut c)
            }));
            assert!(wait_until(Duration::from_secs(5), || up
                .seen()
                .iter()
                .any(|s| s.url == "/slow")));
        }
        let sock = dir.path().join("upgrade.sock");
        let _ = std::fs::remove_file(&sock);
        let mut next = spawn(&conf, true, &log);
        // The new process waits for the sockets on the upgrade socket.
        assert!(
            wait_until(Duration::from_secs(20), || sock.exists()),
            "the new process never waited for the sockets"
        );
        signal(current.id(), libc::SIGQUIT);
        let status =
            wait_exit(&mut current, Duration::from_secs(20)).expect("the process did not exit");
        assert!(status.success(), "old process exited with {status}");
        assert!(next.try_wait().unwrap().is_none(), "the new process died");
        std::mem::swap(&mut current, &mut next);
        let before = ok.load(Ordering::SeqCst);
        assert!(
            wait_until(Duration::from_secs(5), || ok.load(Ordering::SeqCst)
                > before + 20),
            "no traffic after upgrade {generation}"
        );
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let slow = slow.unwrap().join().unwrap();
    signal(current.id(), libc::SIGTERM);
    let _ = wait_exit(&mut current, Duration::from_secs(20));

    // Healthy traffic, a reload, upgrades and a shutdown leave nothing at WARN or above in the
    // error log: every such line is worth an operator's attention.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let loud: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(loud.is_empty(), "{loud:#?}");
    assert!(text.contains("draining: each kept-alive connection is closed after its next answer; grace period 1s, then at most 5s"), "{text}");
    let failures = failed.lock().unwrap().clone();
    let total = ok.load(Ordering::SeqCst);
    eprintln!(
        "{total} requests over five upgrades, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}\n{}",
        failures.len(),
        total + failures.len(),
        failures,
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(slow.status, 200);
    assert_eq!(slow.body.len(), 100_000, "the slow response was cut short");
    // Every configuration took effect in turn.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.last().map(String::as_str),
        Some("5"),
        "generations seen: {seen:?}"
    );
}

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_cleanly() {
    let up = Upstream::with_handler("a", |_| {
        Reply::ok(&"x".repeat(50_000)).delay(Duration::from_millis(1500))
    });
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("tollgate.yaml");
    let log = dir.path().join("gateway.log");
    let port = closed_port().port();
    std::fs::write(&conf, config(dir.path(), port, &up, 0)).unwrap();
    let mut gw = spawn(&conf, false, &log);
    assert!(wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    let slow = std::thread::spawn(move || {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        read_keepalive_response(&mut c)
    });
    assert!(wait_until(Duration::from_secs(5), || up.count() == 1));
    signal(gw.id(), libc::SIGTERM);
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 50_000);
    assert!(
        r.closed,
        "a draining gateway answers with Connection: close"
    );
    let status = wait_exit(&mut gw, Duration::from_secs(20)).expect("the process did not exit");
    assert!(status.success(), "exited with {status}");
    // New connections are refused once it has stopped accepting.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn sigint_exits_promptly() {
    let up = Upstream::start("a");
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("tollgate.yaml");
    let port = closed_port().port();
    std::fs::write(&conf, config(dir.path(), port, &up, 0)).unwrap();
    let mut gw = spawn(&conf, false, &dir.path().join("gateway.log"));
    assert!(wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    let t = Instant::now();
    // A signal sent in the instant between binding and installing the handlers can be missed:
    // repeat until the process is gone.
    while gw.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "SIGINT did not stop the gateway"
        );
        signal(gw.id(), libc::SIGINT);
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[test]
fn the_upgrade_command_replaces_a_daemon_or_leaves_it_serving() {
    let up = Upstream::start("a");
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("tollgate.yaml");
    let port = closed_port().port();
    // With an admin listener, which the new process binds beside the old one's.
    let admin = closed_port().port();
    let with_admin = |generation| {
        format!(
            "{}admin: {{address: 127.0.0.1:{admin}}}\n",
            config(dir.path(), port, &up, generation)
        )
    };
    std::fs::write(&conf, with_admin(1)).unwrap();
    let pid_file = dir.path().join("t.pid");
    let status = Command::new(bin())
        .args(["-d", "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(wait_until(Duration::from_secs(20), || read_pid(&pid_file)
        .is_some()
        && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()));
    let first = read_pid(&pid_file).unwrap();
    let generation = || {
        send_raw(
            port,
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .header("x-generation")
        .map(str::to_string)
    };
    assert_eq!(generation().as_deref(), Some("1"));

    // A broken configuration: refused, the daemon keeps serving.
    std::fs::write(&conf, "listeners: [[[").unwrap();
    let out = Command::new(bin())
        .args(["upgrade", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("upgrade refused, the running process keeps serving"));
    assert_eq!(read_pid(&pid_file), Some(first));
    assert_eq!(generation().as_deref(), Some("1"));

    // A good one: a new daemon takes over, the old one exits. (The new daemon inherits the
    // command's output, so it goes to a file rather than a pipe this test would wait on.)
    std::fs::write(&conf, with_admin(2)).unwrap();
    let log = dir.path().join("upgrade.log");
    let status = Command::new(bin())
        .args(["upgrade", "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let second = read_pid(&pid_file).unwrap();
    assert_ne!(second, first);
    // While the old process hands over, either may accept; soon only the new one does.
    assert!(wait_until(Duration::from_secs(20), || generation()
        .as_deref()
        == Some("2")));
    assert!(
        wait_until(Duration::from_secs(30), || unsafe { libc::kill(first, 0) }
            != 0),
        "the old daemon did not exit"
    );
    // The admin listener is the new process's now.
    assert!(wait_until(Duration::from_secs(10), || {
        let st = send_raw(
            admin,
            b"GET /status HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        );
        st.status == 200 && st.text().contains("\"ready\":true")
    }));
    unsafe {
        libc::kill(second, libc::SIGTERM);
    }
    assert!(wait_until(Duration::from_secs(30), || unsafe {
        libc::kill(second, 0)
    } != 0));
}
