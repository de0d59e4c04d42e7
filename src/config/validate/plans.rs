//! `plans` and `time_zone`: usage plans' quotas and the zone their calendar periods are in.

use super::super::plans::{Period, Plan, Quota, TimeZone};
use super::super::raw::{RawPeriod, RawPlan};
use super::{valid_name, Validator};
use serde_yaml::Value;

impl Validator<'_> {
    /// The plans, by name.
    pub(super) fn plans(&mut self, value: Option<Value>) -> Vec<Plan> {
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return Vec::new();
        };
        let Value::Mapping(entries) = value else {
            self.error("plans", "must be a map of plan names to plans");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, plan) in entries {
            let Some(name) = name.as_str().map(str::to_string) else {
                self.error("plans", "plan names are strings");
                continue;
            };
            let base = format!("plans.{name}");
            let Some(plan) = self.item::<RawPlan>(&base, plan) else {
                // Reported; the name is still known, so consumers naming it are not told
                // it does not exist.
                out.push(Plan {
                    name,
                    quotas: Vec::new(),
                });
                continue;
            };
            if !valid_name(&name) || name.bytes().all(|b| b == b'.') {
                self.error(
                    &base,
                    "plan names are non-empty, use letters, digits, '_', '-' and '.' only, and are not only dots",
                );
            }
            if plan.quotas.is_empty() {
                self.error(format!("{base}.quotas"), "must list at least one quota");
            }
            let mut quotas: Vec<Quota> = Vec::new();
            for (i, q) in plan.quotas.into_iter().enumerate() {
                let period = match q.per {
                    RawPeriod::Day => Period::Day,
                    RawPeriod::Week => Period::Week,
                    RawPeriod::Month => Period::Month,
                };
                if q.requests == 0 {
                    self.error(format!("{base}.quotas[{i}].requests"), "must be at least 1");
                }
                if quotas.iter().any(|o| o.period == period) {
                    self.error(
                        format!("{base}.quotas[{i}].per"),
                        format!("the plan has a {} quota already", period.as_str()),
                    );
                }
                quotas.push(Quota {
                    requests: q.requests,
                    period,
                });
            }
            out.push(Plan { name, quotas });
        }
        out
    }

    /// `time_zone`: an IANA zone name (the database is built in); UTC when absent.
    pub(super) fn time_zone(&mut self, value: Option<Value>) -> TimeZone {
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return TimeZone::default();
        };
        let Some(name) = self.item::<String>("time_zone", value) else {
            return TimeZone::default();
        };
        match jiff::tz::TimeZone::get(&name) {
            Ok(zone) => TimeZone { name, zone },
            Err(_) => {
                self.error(
                    "time_zone",
                    format!("\"{name}\" is not a time zone: use an IANA name such as UTC or Europe/Berlin"),
                );
                TimeZone::default()
            }
        }
    }
}
