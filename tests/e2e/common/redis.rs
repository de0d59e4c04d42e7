//! A real `redis-server` on loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::*;

/// A real `redis-server` on a loopback port, stopped when dropped.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = closed_port().port();
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (scripts/setup.sh installs it)");
            let mut r = Redis {
                port,
                child: Some(child),
                _dir: tempfile::tempdir().unwrap(),
            };
            if wait_until(Duration::from_secs(10), || r.ping()) {
                r._dir = dir;
                return r;
            }
            r.stop();
        }
        panic!("redis-server did not start");
    }

    /// True when the server answers PING.
    pub fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Freeze the server (SIGSTOP): connections stay open and nothing is answered.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Let a frozen server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.as_ref().expect("a running server").id();
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
    }

    /// Stop the server (as a crash would: no goodbye to clients).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid: a frozen server must also stop.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGCONT) };
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A real Redis Cluster on loopback: `masters` `redis-server --cluster-enabled yes` processes,
/// joined by `redis-cli --cluster create` with the slots split between them and no replicas.
/// A node can be killed and started again (it rejoins with its slots from its nodes file).
pub struct RedisCluster {
    pub ports: Vec<u16>,
    /// Each node's cluster bus port.
    bus: Vec<u16>,
    nodes: Vec<Option<Child>>,
    dir: tempfile::TempDir,
}

impl RedisCluster {
    pub fn start(masters: usize) -> RedisCluster {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = RedisCluster {
            ports: Vec::new(),
            bus: Vec::new(),
            nodes: Vec::new(),
            dir,
        };
        for i in 0..masters {
            cluster.ports.push(closed_port().port());
            cluster.bus.push(closed_port().port());
            cluster.nodes.push(None);
            cluster.launch(i);
        }
        for &port in &cluster.ports {
            assert!(
                wait_until(Duration::from_secs(10), || answers(port, "PING", "+PONG")),
                "cluster node {port} did not start"
            );
        }
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed (scripts/setup.sh installs redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        cluster.wait_ok();
        cluster
    }

    /// The nodes, as `redis.cluster` lists them.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    fn launch(&mut self, i: usize) {
        let port = self.ports[i];
        let node_dir = self.dir.path().join(port.to_string());
        std::fs::create_dir_all(&node_dir).unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--cluster-port",
                &self.bus[i].to_string(),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&node_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/setup.sh installs it)");
        self.nodes[i] = Some(child);
    }

    /// Until every running node reports the cluster as serving all its slots.
    pub fn wait_ok(&self) {
        for (i, &port) in self.ports.iter().enumerate() {
            if self.nodes[i].is_some() {
                assert!(
                    wait_until(Duration::from_secs(20), || answers(
                        port,
                        "CLUSTER INFO",
                        "cluster_state:ok"
                    )),
                    "the cluster did not become ready at node {port}"
                );
            }
        }
    }

    /// Kill node `i` (as a crash would).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start node `i` again on its port, with its nodes file: it takes its slots back.
    pub fn restart(&mut self, i: usize) {
        self.launch(i);
        let port = self.ports[i];
        assert!(
            wait_until(Duration::from_secs(10), || answers(port, "PING", "+PONG")),
            "cluster node {port} did not restart"
        );
        self.wait_ok();
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// True when the server on `port` answers the inline `command` with text containing `expect`.
fn answers(port: u16, command: &str, expect: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(format!("{command}\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 4096];
    matches!(s.read(&mut buf), Ok(n) if String::from_utf8_lossy(&buf[..n]).contains(expect))
}
