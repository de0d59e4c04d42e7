//! Usage plans: quotas over calendar periods (a day, a week, a month in the configured time
//! zone) that the consumers of a plan may use, on top of the routes' rate limits.

/// A calendar period a quota counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// From midnight to midnight.
    Day,
    /// From Monday 00:00 to the next Monday (ISO 8601 weeks).
    Week,
    /// From the 1st 00:00 to the next month's 1st.
    Month,
}

impl Period {
    /// The name used in the file, headers and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }
}

/// At most `requests` per `period`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub requests: u64,
    pub period: Period,
}

/// A usage plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub quotas: Vec<Quota>,
}

/// The time zone calendar periods are counted in.
#[derive(Debug, Clone)]
pub struct TimeZone {
    /// As written (`Europe/Berlin`, `UTC`).
    pub name: String,
    pub zone: jiff::tz::TimeZone,
}

impl Default for TimeZone {
    fn default() -> Self {
        TimeZone {
            name: "UTC".into(),
            zone: jiff::tz::TimeZone::UTC,
        }
    }
}

impl PartialEq for TimeZone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
