//! A real DNS server on loopback: dnsmasq, answering from a hosts file the test rewrites (with
//! a one-second TTL) and from SRV records given at start, and nothing else.

use super::*;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Dnsmasq {
    pub port: u16,
    hosts: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// Answer `hosts` (name → addresses) and the SRV records `srv`
    /// (`_http._tcp.users.test,target.test,8080,0,10`: name, target, port, priority, weight).
    pub fn start(hosts: &[(&str, &[&str])], srv: &[&str]) -> Dnsmasq {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        write_hosts(&file, hosts);
        let port = closed_port().port();
        let bin = if std::path::Path::new("/usr/sbin/dnsmasq").exists() {
            "/usr/sbin/dnsmasq"
        } else {
            "dnsmasq"
        };
        let mut cmd = Command::new(bin);
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--local-ttl=1",
            "--user=root",
            "--pid-file=",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--addn-hosts={}", file.display()));
        for s in srv {
            cmd.arg(format!("--srv-host={s}"));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq must be installed (scripts/setup.sh installs dnsmasq-base)");
        let d = Dnsmasq {
            port,
            hosts: file,
            child: Some(child),
            _dir: dir,
        };
        let first = hosts.first().map(|(n, _)| *n).unwrap_or("localhost");
        assert!(
            wait_until(Duration::from_secs(10), || d.resolves(first)),
            "dnsmasq did not start"
        );
        d
    }

    /// The address to give as `dns.servers`.
    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Answer `hosts` from now on (dnsmasq reads its hosts file again on SIGHUP).
    pub fn set_hosts(&self, hosts: &[(&str, &[&str])]) {
        write_hosts(&self.hosts, hosts);
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGHUP) };
        }
    }

    /// Stop answering at all.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the server answers an A query for `name` (a raw UDP query, no resolver library).
    fn resolves(&self, name: &str) -> bool {
        let Ok(sock) = std::net::UdpSocket::bind("127.0.0.1:0") else {
            return false;
        };
        let _ = sock.set_read_timeout(Some(Duration::from_millis(300)));
        let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        if sock.send_to(&q, ("127.0.0.1", self.port)).is_err() {
            return false;
        }
        let mut buf = [0u8; 512];
        // An answer with at least one record.
        matches!(sock.recv(&mut buf), Ok(n) if n > 12 && buf[7] > 0)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_hosts(file: &std::path::Path, hosts: &[(&str, &[&str])]) {
    let mut text = String::new();
    for (name, addrs) in hosts {
        for a in *addrs {
            text.push_str(&format!("{a} {name}\n"));
        }
    }
    std::fs::write(file, text).unwrap();
}
