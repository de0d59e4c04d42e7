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
                    self.missing_secret(
                        "admin.token_env".into(),
                        format!("environment variable {var} is not set"),
                    );
                    None
                }
            },
        };
        let checked_without_token = token.is_none() && self.loader.secrets_optional();
        if token.is_none() && !address.ip().is_loopback() && !checked_without_token {
            self.warn(
                "admin.address",
                "the admin listener is reachable from other hosts and has no token",
            );
        }
        Some(AdminConfig { address, token })
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::loader::Fixed;
    use super::super::testing::*;

    #[test]
    fn the_admin_token_comes_from_the_environment() {
        let machine = Fixed::default()
            .var("ADMIN_TOKEN", "0123456789abcdef")
            .var("SHORT_TOKEN", "short");
        let c = load_with(
            &file("admin: {address: 127.0.0.1:9901, token_env: ADMIN_TOKEN}\n"),
            &machine,
        );
        let admin = c.process.admin.expect("admin");
        assert_eq!(admin.token.as_deref(), Some("0123456789abcdef"));
        assert_reported(
            &errors_with(&file("admin: {token_env: SHORT_TOKEN}\n"), &machine),
            &["admin.token_env: the token in SHORT_TOKEN must be at least 16 characters"],
        );
        assert_reported(
            &errors_with(&file("admin: {token_env: NOT_SET}\n"), &machine),
            &["admin.token_env: environment variable NOT_SET is not set"],
        );
        // Only checking the file (`tollgate -t`): a missing secret is reported, not refused.
        let mut checking = machine.clone();
        checking.check_only = true;
        let c = load_with(&file("admin: {token_env: NOT_SET}\njwt: [{issuer: s, algorithms: [HS256], secret_env: ALSO_NOT_SET, audience: api}]\n"), &checking);
        let warnings: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
        assert_reported(
            &warnings,
            &[
                "admin.token_env: environment variable NOT_SET is not set: it must be set where the gateway runs",
                "jwt[0].secret_env: environment variable ALSO_NOT_SET is not set or empty: it must be set where the gateway runs",
            ],
        );
    }

    #[test]
    fn the_admin_address_is_its_own() {
        assert_reported(
            &errors(&file("admin: {address: '0.0.0.0:1'}\n")),
            &["admin.address: must not share a port with a traffic listener"],
        );
        assert_reported(
            &errors(&file("admin: {address: nope}\n")),
            &["admin.address: \"nope\" is not an IP address and port"],
        );
        let c = load_with(
            &file("admin: {address: '0.0.0.0:9901'}\n"),
            &Fixed::default(),
        );
        assert!(c.warnings[0]
            .to_string()
            .starts_with("admin.address: the admin listener is reachable from other hosts"));
        assert_eq!(c.process.admin.map(|a| a.address.port()), Some(9901));
    }
}
