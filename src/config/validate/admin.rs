//! The admin listener: its address (never a traffic listener's port) and its token, read
//! from the environment.

use super::super::raw::RawAdmin;
use super::super::{AdminConfig, Listener};
use super::Validator;
use serde_yaml::Value;
use std::net::SocketAddr;

impl Validator<'_> {
    pub(super) fn admin(&mut self, value: Value, listeners: &[Listener]) -> Option<AdminConfig> {
        let raw = self.item::<RawAdmin>("admin", value)?;
        let text = raw.address.unwrap_or_else(|| "127.0.0.1:9901".to_string());
        let Ok(address) = text.parse::<SocketAddr>() else {
            self.error(
                "admin.address",
                format!("\"{text}\" is not an IP address and port such as 127.0.0.1:9901"),
            );
            return None;
        };
        if listeners.iter().any(|l| {
            l.address.port() == address.port()
                && (l.address.ip() == address.ip()
                    || l.address.ip().is_unspecified()
                    || address.ip().is_unspecified())
        }) {
            self.error(
                "admin.address",
                "must not share a port with a traffic listener",
            );
        }
        let token = match raw.token_env {
            None => None,
            Some(var) => match self.loader.env(&var) {
                Some(t) if t.len() >= 16 => Some(t),
                Some(_) => {
                    self.error(
                        "admin.token_env",
                        format!("the token in {var} must be at least 16 characters"),
                    );
                    None
                }
                None => {
                    self.error(
                        "admin.token_env",
                        format!("environment variable {var} is not set"),
                    );
                    None
                }
            },
        };
        if token.is_none() && !address.ip().is_loopback() {
            self.warn(
                "admin.address",
                "the admin listener is reachable from other hosts and has no token",
            );
        }
        Some(AdminConfig { address, token })
    }
}
