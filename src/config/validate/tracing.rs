//! `tracing`: W3C trace context, with the share of new traces sampled.

use super::Validator;
use serde::Deserialize;
use serde_yaml::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTracing {
    sample_ratio: Option<f64>,
}

impl Validator<'_> {
    pub(super) fn tracing(&mut self, v: Value) -> Option<f64> {
        if v.is_null() {
            return Some(1.0);
        }
        let raw = self.item::<RawTracing>("tracing", v)?;
        let ratio = raw.sample_ratio.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&ratio) {
            self.error("tracing.sample_ratio", "must be between 0 and 1");
            return None;
        }
        Some(ratio)
    }
}
