//! Readiness: the process is ready once every traffic listener accepts connections (then, and
//! not before, it says it serves), and draining as soon as a shutdown begins (what the admin
//! API's `/readyz` reports).

use super::Lifecycle;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Probes the listeners until they accept, then waits for the shutdown.
pub struct Readiness {
    pub lifecycle: Arc<Lifecycle>,
    /// The traffic listeners' addresses.
    pub listeners: Vec<SocketAddr>,
    /// Logged once every listener accepts.
    pub announce: String,
}

#[async_trait]
impl BackgroundService for Readiness {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.run(&mut shutdown).await;
    }
}

impl Readiness {
    /// Mark the process ready once every listener accepts a connection; mark it draining when
    /// `shutdown` fires.
    pub async fn run(&self, shutdown: &mut ShutdownWatch) {
        let probes: Vec<SocketAddr> = self.listeners.iter().map(|a| probe_address(*a)).collect();
        loop {
            let mut all = true;
            for a in &probes {
                if tokio::net::TcpStream::connect(a).await.is_err() {
                    all = false;
                }
            }
            if all {
                self.lifecycle.set_ready();
                log::info!("{}", self.announce);
                super::systemd::ready(&self.announce);
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = shutdown.changed() => return self.lifecycle.begin_drain(),
            }
        }
        let _ = shutdown.changed().await;
        self.lifecycle.begin_drain();
    }
}

/// Where a listener is reached from this host: a wildcard address by its loopback.
fn probe_address(mut a: SocketAddr) -> SocketAddr {
    if a.ip().is_unspecified() {
        a.set_ip(if a.is_ipv4() {
            Ipv4Addr::LOCALHOST.into()
        } else {
            Ipv6Addr::LOCALHOST.into()
        });
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listeners_are_probed_on_loopback() {
        assert_eq!(
            probe_address("0.0.0.0:80".parse().unwrap()),
            "127.0.0.1:80".parse().unwrap()
        );
        assert_eq!(
            probe_address("[::]:80".parse().unwrap()),
            "[::1]:80".parse().unwrap()
        );
        assert_eq!(
            probe_address("10.0.0.1:80".parse().unwrap()),
            "10.0.0.1:80".parse().unwrap()
        );
    }
}
