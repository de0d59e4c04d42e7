//! `tollgate upgrade`: replace a running daemon without dropping a request. The new
//! configuration is checked first; a new daemon is started with `-u` and must be waiting for the
//! listening sockets before the old process is told (SIGQUIT) to hand them over and drain. If
//! anything fails before that, the old process keeps serving and the reason is printed.

use crate::config;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

fn alive(pid: i32) -> bool {
    // Signal 0 checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Run the upgrade; `pid` is the running process (default: the one in `pid_file`).
pub fn run(conf: &Path, pid: Option<i32>) -> ExitCode {
    let base = std::env::current_dir().unwrap_or_else(|_| "/".into());
    let config = match config::load_file_in(conf, &base) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!(
                "upgrade refused, the running process keeps serving: {} problem(s) in {}:",
                errors.len(),
                conf.display()
            );
            for e in errors {
                eprintln!("  {e}");
            }
            return ExitCode::from(2);
        }
    };
    let pid_file = Path::new(&config.process.server.pid_file);
    let sock = Path::new(&config.process.server.upgrade_sock);
    let Some(old) = pid.or_else(|| read_pid(pid_file)) else {
        eprintln!(
            "upgrade: no running process: {} holds no pid",
            pid_file.display()
        );
        return ExitCode::from(1);
    };
    if !alive(old) {
        eprintln!("upgrade: process {old} is not running");
        return ExitCode::from(1);
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("upgrade: cannot find this program: {e}");
            return ExitCode::from(1);
        }
    };
    // A socket left by an earlier upgrade would look like a waiting process.
    let _ = std::fs::remove_file(sock);
    // The new process receives the sockets before it daemonizes: start it, and wait until it
    // waits on the upgrade socket.
    let mut child = match Command::new(&exe)
        .arg("-u")
        .arg("-d")
        .arg("-c")
        .arg(base.join(conf))
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("upgrade: cannot start the new process: {e}; process {old} keeps serving");
            return ExitCode::from(1);
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("upgrade: the new process exited ({status}) before taking over; process {old} keeps serving");
            return ExitCode::from(1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            eprintln!(
                "upgrade: the new process is not waiting for the sockets on {} after 10 s (see its error log); process {old} keeps serving",
                sock.display()
            );
            return ExitCode::from(1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe {
        libc::kill(old, libc::SIGQUIT);
    }
    // With the sockets, the new process daemonizes: its first half exits.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match child.try_wait() {
            Ok(Some(s)) if s.success() => break,
            Ok(Some(s)) => {
                eprintln!("upgrade: the new process failed after taking the sockets ({s})");
                return ExitCode::from(1);
            }
            _ if Instant::now() > deadline => {
                eprintln!("upgrade: the new process did not take over within 30 s");
                return ExitCode::from(1);
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    // The new process writes its pid once it has the sockets and serves.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(new) = read_pid(pid_file).filter(|p| *p != old && alive(*p)) {
            println!("upgraded: process {new} serves; process {old} drains and exits");
            return ExitCode::SUCCESS;
        }
        if Instant::now() > deadline {
            eprintln!("upgrade: no new process took over within 30 s");
            return ExitCode::from(1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
