//! `tracing`: W3C trace context, with the share of new traces sampled, and the export of
//! sampled spans over OTLP.

use super::super::OtlpExport;
use super::Validator;
use crate::config::units::ConfDuration;
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTracing {
    sample_ratio: Option<f64>,
    otlp: Option<RawOtlp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOtlp {
    endpoint: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    ca_file: Option<String>,
    timeout: Option<ConfDuration>,
    batch_size: Option<usize>,
    queue_size: Option<usize>,
    interval: Option<ConfDuration>,
    service_name: Option<String>,
}

impl Validator<'_> {
    /// The sample ratio (`None`: tracing off) and the span export, if any.
    pub(super) fn tracing(&mut self, v: Value) -> (Option<f64>, Option<OtlpExport>) {
        if v.is_null() {
            return (Some(1.0), None);
        }
        let Some(raw) = self.item::<RawTracing>("tracing", v) else {
            return (None, None);
        };
        let ratio = raw.sample_ratio.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&ratio) {
            self.error("tracing.sample_ratio", "must be between 0 and 1");
        }
        let otlp = raw.otlp.and_then(|o| self.otlp(o));
        if !(0.0..=1.0).contains(&ratio) {
            return (None, None);
        }
        (Some(ratio), otlp)
    }

    fn otlp(&mut self, raw: RawOtlp) -> Option<OtlpExport> {
        let before = self.errors.len();
        let endpoint = match raw.endpoint.parse::<http::Uri>() {
            Ok(u) if u.authority().is_some_and(|a| a.as_str().contains('@')) => {
                self.error(
                    "tracing.otlp.endpoint",
                    "must not carry credentials (user:password@): give them in headers",
                );
                None
            }
            Ok(u)
                if matches!(u.scheme_str(), Some("http" | "https"))
                    && u.host().is_some_and(|h| !h.is_empty()) =>
            {
                if u.path() == "/" {
                    self.warn(
                        "tracing.otlp.endpoint",
                        "no path: OTLP/HTTP collectors take traces at /v1/traces",
                    );
                }
                Some(u)
            }
            _ => {
                self.error(
                    "tracing.otlp.endpoint",
                    format!(
                        "\"{}\" is not an http:// or https:// URL with a host (e.g. http://collector:4318/v1/traces)",
                        raw.endpoint
                    ),
                );
                None
            }
        };
        let mut headers = Vec::new();
        for (name, value) in raw.headers {
            let place = format!("tracing.otlp.headers.{name}");
            match (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(&value),
            ) {
                (Ok(n), Ok(v))
                    if !crate::wire::is_framing_or_hop(&n)
                        && n != http::header::HOST
                        && n != http::header::CONTENT_TYPE =>
                {
                    headers.push((n, v))
                }
                (Ok(_), Ok(_)) => self.error(place, "the gateway sets this header itself"),
                (Err(_), _) => self.error(place, "not a valid header name"),
                (_, Err(_)) => self.error(place, "not a valid header value"),
            }
        }
        let ca = raw
            .ca_file
            .and_then(|path| self.ca_bundle("tracing.otlp.ca_file", &path));
        let timeout = raw.timeout.map_or(Duration::from_secs(10), |d| d.0);
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            self.error(
                "tracing.otlp.timeout",
                "must be more than 0s and at most 1m",
            );
        }
        let interval = raw.interval.map_or(Duration::from_secs(5), |d| d.0);
        if interval < Duration::from_millis(10) || interval > Duration::from_secs(60) {
            self.error("tracing.otlp.interval", "must be between 10ms and 1m");
        }
        let batch_size = raw.batch_size.unwrap_or(512);
        if !(1..=10_000).contains(&batch_size) {
            self.error("tracing.otlp.batch_size", "must be between 1 and 10000");
        }
        let queue_size = raw.queue_size.unwrap_or(2048);
        if !(1..=1_000_000).contains(&queue_size) {
            self.error("tracing.otlp.queue_size", "must be between 1 and 1000000");
        } else if queue_size < batch_size {
            self.error("tracing.otlp.queue_size", "must be at least batch_size");
        }
        let service_name = raw.service_name.unwrap_or_else(|| "tollgate".to_string());
        if service_name.is_empty() {
            self.error("tracing.otlp.service_name", "must not be empty");
        }
        if self.errors.len() > before {
            return None;
        }
        Some(OtlpExport {
            endpoint: endpoint?,
            headers,
            ca,
            timeout,
            batch_size,
            queue_size,
            interval,
            service_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::config::loader::Fixed;

    #[test]
    fn span_export_settings() {
        let c = load_with(
            &file("tracing: {sample_ratio: 0.5, otlp: {endpoint: 'http://127.0.0.1:4318/v1/traces', headers: {x-api-key: secret}, batch_size: 10, queue_size: 100, interval: 50ms}}\n"),
            &Fixed::default(),
        );
        assert_eq!(c.routing.tracing, Some(0.5));
        let o = c.process.otlp.as_ref().unwrap();
        assert_eq!(
            (o.batch_size, o.queue_size, o.interval.as_millis()),
            (10, 100, 50)
        );
        assert_eq!(o.service_name, "tollgate");
        assert!(!format!("{o:?}").contains("secret"));
        let e = errors(&file("tracing: {otlp: {endpoint: 'collector:4318', headers: {content-length: '1', 'bad name': x}, timeout: 0s, batch_size: 0, queue_size: 5, interval: 1ms, service_name: ''}}\n"));
        assert_reported(
            &e,
            &[
                "tracing.otlp.endpoint: \"collector:4318\" is not an http:// or https:// URL",
                "tracing.otlp.headers.content-length: the gateway sets this header itself",
                "tracing.otlp.headers.bad name: not a valid header name",
                "tracing.otlp.timeout: must be more than 0s",
                "tracing.otlp.batch_size: must be between 1 and 10000",
                "tracing.otlp.interval: must be between 10ms and 1m",
                "tracing.otlp.service_name: must not be empty",
            ],
        );
        assert_reported(
            &errors(&file(
                "tracing: {otlp: {endpoint: 'https://user:pw@c/v1/traces'}}\n",
            )),
            &["tracing.otlp.endpoint: must not carry credentials"],
        );
        assert_reported(
            &errors(&file("tracing: {otlp: {endpoint: 'http://c/v1/traces', batch_size: 10, queue_size: 5}}\n")),
            &["tracing.otlp.queue_size: must be at least batch_size"],
        );
    }
}
