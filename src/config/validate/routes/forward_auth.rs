//! `routes[].forward_auth`: a known pool, a path, header names, a timeout and what a failure
//! means.

use super::super::super::raw::RawForwardAuth;
use super::super::super::ForwardAuth;
use super::super::Validator;
use super::RouteContext;
use http::header;
use std::time::Duration;

impl Validator<'_> {
    pub(super) fn forward_auth(
        &mut self,
        base: &str,
        raw: RawForwardAuth,
        rc: &RouteContext,
    ) -> Option<ForwardAuth> {
        let place = format!("{base}.forward_auth");
        let before = self.errors.len();
        let pool = self.route_upstream(&format!("{place}.pool"), &raw.pool, rc);
        let path = raw.path.unwrap_or_else(|| "/".to_string());
        if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'#') {
            self.error(
                format!("{place}.path"),
                format!(
                    "\"{path}\" must start with '/' and hold no spaces, control characters or '#'"
                ),
            );
        }
        let request_headers = match raw.request_headers {
            Some(list) => self.header_names(&format!("{place}.request_headers"), &list),
            None => vec![header::AUTHORIZATION, header::COOKIE],
        };
        for (i, h) in request_headers.iter().enumerate() {
            if crate::wire::is_framing_or_hop(h) || *h == header::HOST || *h == header::EXPECT {
                self.error(
                    format!("{place}.request_headers[{i}]"),
                    "is Host or a hop-by-hop or framing header: the gateway writes those of its own request",
                );
            } else if *h == crate::wire::X_FORWARDED_CLIENT_CERT {
                self.error(
                    format!("{place}.request_headers[{i}]"),
                    "the client's X-Forwarded-Client-Cert is never believed (the gateway sends the verified one upstream only)",
                );
            }
        }
        let response_headers = self.header_names(
            &format!("{place}.response_headers"),
            &raw.response_headers.unwrap_or_default(),
        );
        for (i, h) in response_headers.iter().enumerate() {
            if crate::wire::is_framing_or_hop(h) {
                self.error(
                    format!("{place}.response_headers[{i}]"),
                    "is a hop-by-hop or framing header the gateway manages itself",
                );
            }
        }
        let failure_allow = match raw.failure.as_deref() {
            None | Some("deny") => false,
            Some("allow") => true,
            Some(other) => {
                self.error(
                    format!("{place}.failure"),
                    format!("\"{other}\": write deny (the default) or allow"),
                );
                false
            }
        };
        let timeout = raw.timeout.map_or(Duration::from_secs(1), |t| t.0);
        if timeout.is_zero() {
            self.error(format!("{place}.timeout"), "must be more than 0s");
        }
        if self.errors.len() > before {
            return None;
        }
        Some(ForwardAuth {
            pool,
            path,
            request_headers,
            response_headers,
            timeout,
            failure_allow,
            cache: raw.cache.map(|c| c.0).filter(|c| !c.is_zero()),
        })
    }
}
