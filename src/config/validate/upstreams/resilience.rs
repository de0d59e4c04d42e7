//! What a pool does when its peers fail: which failures are retried, the retry budget, and
//! outlier detection.

use super::super::super::raw::{RawOutlierDetection, RawRetryBudget};
use super::super::super::{OutlierDetection, RetryBudget, RetryOn};
use super::super::{did_you_mean, Validator};
use serde_yaml::Value;
use std::time::Duration;

impl Validator<'_> {
    /// `upstreams.NAME.retry_on`: failure kinds and 5xx statuses.
    pub(super) fn retry_on(&mut self, base: &str, raw: Option<Vec<Value>>) -> RetryOn {
        let Some(items) = raw else {
            return RetryOn::default();
        };
        let mut on = RetryOn {
            connect_failure: false,
            reset: false,
            timeout: false,
            statuses: Vec::new(),
        };
        for (i, item) in items.iter().enumerate() {
            let place = format!("{base}.retry_on[{i}]");
            match item {
                Value::String(s) if s == "connect_failure" => on.connect_failure = true,
                Value::String(s) if s == "reset" => on.reset = true,
                Value::String(s) if s == "timeout" => on.timeout = true,
                Value::Number(n) => match n.as_u64() {
                    Some(code @ 500..=599) => on.statuses.push(code as u16),
                    _ => self.error(place, format!("{n} is not a 5xx status")),
                },
                other => {
                    let text = match other {
                        Value::String(s) => s.clone(),
                        v => format!("{v:?}"),
                    };
                    let hint =
                        did_you_mean(&text, ["connect_failure", "reset", "timeout"].into_iter());
                    self.error(
                        place,
                        format!(
                            "unknown \"{text}\": connect_failure, reset, timeout or a 5xx status{hint}"
                        ),
                    );
                }
            }
        }
        on.statuses.sort_unstable();
        on.statuses.dedup();
        on
    }

    /// `upstreams.NAME.outlier_detection`.
    pub(super) fn outlier_detection(
        &mut self,
        base: &str,
        raw: RawOutlierDetection,
    ) -> OutlierDetection {
        let place = format!("{base}.outlier_detection");
        let consecutive_failures = match raw.consecutive_failures.unwrap_or(5) {
            n @ 1..=1000 => n as u32,
            _ => {
                self.error(
                    format!("{place}.consecutive_failures"),
                    "must be between 1 and 1000",
                );
                5
            }
        };
        let base_ejection = raw.base_ejection.map_or(Duration::from_secs(30), |d| d.0);
        let max_ejection = raw.max_ejection.map_or(Duration::from_secs(300), |d| d.0);
        if base_ejection < Duration::from_millis(100) || base_ejection > Duration::from_secs(3600) {
            self.error(
                format!("{place}.base_ejection"),
                "must be between 100ms and 1h",
            );
        } else if max_ejection < base_ejection || max_ejection > Duration::from_secs(86_400) {
            self.error(
                format!("{place}.max_ejection"),
                "must be at least `base_ejection` and at most 24h",
            );
        }
        let max_ejection_percent = match raw.max_ejection_percent.unwrap_or(50) {
            p @ 0..=100 => p as u32,
            _ => {
                self.error(
                    format!("{place}.max_ejection_percent"),
                    "must be between 0 and 100",
                );
                50
            }
        };
        OutlierDetection {
            consecutive_failures,
            base_ejection,
            max_ejection,
            max_ejection_percent,
        }
    }

    /// `upstreams.NAME.retry_budget`.
    pub(super) fn retry_budget(&mut self, base: &str, raw: Option<RawRetryBudget>) -> RetryBudget {
        let mut budget = RetryBudget::default();
        let Some(raw) = raw else { return budget };
        if let Some(r) = raw.ratio {
            if !(0.0..=1.0).contains(&r) {
                self.error(
                    format!("{base}.retry_budget.ratio"),
                    "must be between 0 and 1 (retries per request)",
                );
            } else {
                budget.ratio = r;
            }
        }
        if let Some(w) = raw.window {
            if w.0 < Duration::from_secs(1) || w.0 > Duration::from_secs(600) {
                self.error(
                    format!("{base}.retry_budget.window"),
                    "must be between 1s and 10m",
                );
            } else {
                budget.window = w.0;
            }
        }
        if let Some(m) = raw.min_retries {
            budget.min_retries = m;
        }
        budget
    }
}
