//! The systemd unit passes `systemd-analyze verify` with nothing to warn about and scores well in
//! `systemd-analyze security`; the gateway speaks the notify protocol (`READY=1` with `MAINPID=`,
//! `STOPPING=1`, and the new process's `MAINPID=` after an upgrade on SIGUSR2) to a socket that
//! plays systemd's part.

use crate::common::*;
use std::process::Command;

fn verify(unit_text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.service");
    std::fs::write(&path, unit_text.replace("/usr/local/bin/tollgate", bin())).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze must be installed (scripts/setup.sh installs systemd)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_unit_verifies_cleanly() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/tollgate.service"
    ))
    .unwrap();
    let (ok, warnings) = verify(&unit);
    assert!(
        ok && warnings.trim().is_empty(),
        "systemd-analyze verify: {warnings}"
    );
    for needed in [
        "Type=notify",
        "NotifyAccess=all",
        "ExecStartPre=/usr/local/bin/tollgate -t",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "SystemCallFilter=@system-service",
        "ProtectProc=invisible",
        "UMask=0027",
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "ProtectHome=true",
        "PrivateTmp=true",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "RuntimeDirectory=tollgate",
        "LogsDirectory=tollgate",
        "TimeoutStopSec=",
        "User=tollgate",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed}");
    }
    // The check can fail: a misspelt directive is reported.
    let (_, warnings) = verify(&unit.replace("ExecStart=", "ExecStrat="));
    assert!(
        !warnings.trim().is_empty(),
        "a broken unit passed verification"
    );
}

#[test]
fn the_unit_is_hardened() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/systemd/tollgate.service"
        ))
        .output()
        .expect("systemd-analyze");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for tollgate.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in {text}"));
    assert!(score <= 2.0, "exposure {score}");
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// The notify messages arriving on `sock` until one contains `what` (or 20 s pass).
fn until(sock: &std::os::unix::net::UnixDatagram, what: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut all = String::new();
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            all.push_str(&msg);
            all.push('|');
            if msg.contains(what) {
                return msg;
            }
        }
    }
    panic!("no {what:?} from the gateway; got {all:?}");
}

#[test]
fn notifies_readiness_stopping_and_the_new_main_process_after_an_upgrade() {
    let up = Upstream::start("a");
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let port = closed_port().port();
    let conf = dir.path().join("tollgate.yaml");
    std::fs::write(
        &conf,
        format!(
            "pid_file: {d}/t.pid\nupgrade_sock: {d}/u.sock\ngrace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 2\nlisteners: [{{address: 127.0.0.1:{port}}}]\nupstreams: {{a: {{peers: [\"{}\"]}}}}\nroutes: [{{name: r, match: {{}}, upstream: a}}]\n",
            up.addr,
            d = dir.path().display()
        ),
    )
    .unwrap();
    let mut first = command()
        .arg("-c")
        .arg(&conf)
        .env("NOTIFY_SOCKET", &notify)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let get = || {
        send_raw(
            port,
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
    };
    // READY=1 (with this process as the main one) only once the listener accepts.
    let ready = until(&sock, "READY=1");
    assert!(
        ready.contains(&format!("MAINPID={}", first.id())),
        "{ready}"
    );
    assert_eq!(get().status, 200);
    // SIGUSR2: the running process starts the new one, which says it is the main process now.
    signal(first.id(), libc::SIGUSR2);
    let ready = until(&sock, "READY=1");
    let new_pid: u32 = ready
        .lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no MAINPID in {ready}"));
    assert_ne!(new_pid, first.id());
    assert!(wait_exit(&mut first, std::time::Duration::from_secs(20)).is_some_and(|s| s.success()));
    assert_eq!(get().status, 200);
    // A stop says STOPPING=1 as it starts draining.
    signal(new_pid, libc::SIGTERM);
    until(&sock, "STOPPING=1");
    assert!(wait_until(std::time::Duration::from_secs(20), || gone(
        new_pid
    )));
}
