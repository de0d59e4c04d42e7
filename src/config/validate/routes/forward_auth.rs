//! `routes[].forward_auth`: a known pool, a path, header names, a timeout and what a failure
//! means.

use super::super::super::raw::RawForwardAuth;
use super::super::super::ForwardAuth;
use super::super::Validator;
use super::RouteContext;
use http::header;
use http::HeaderName;
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
        let names =
            |v: &mut Self, key: &str, list: Option<Vec<String>>, default: &[HeaderName]| match list
            {
                None => default.to_vec(),
                Some(list) => list
                    .iter()
                    .enumerate()
                    .filter_map(|(i, h)| match HeaderName::from_bytes(h.as_bytes()) {
                        Ok(n) => Some(n),
                        Err(_) => {
                            v.error(
                                format!("{place}.{key}[{i}]"),
                                format!("\"{h}\" is not a header name"),
                            );
                            None
                        }
                    })
                    .collect(),
            };
        let request_headers = names(
            self,
            "request_headers",
            raw.request_headers,
            &[header::AUTHORIZATION, header::COOKIE],
        );
        for (i, h) in request_headers.iter().enumerate() {
            if crate::wire::is_framing_or_hop(h) || *h == header::HOST || *h == header::EXPECT {
                self.error(
                    format!("{place}.request_headers[{i}]"),
                    "is Host or a hop-by-hop or framing header: the gateway writes those of its own request",
                );
            }
        }
        let response_headers = names(self, "response_headers", raw.response_headers, &[]);
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
