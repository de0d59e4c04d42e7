//! The state the metrics read at scrape time from the modules that hold it.

/// What the metrics render at scrape time, handed over by whoever holds the state.
#[derive(Debug, Default)]
pub struct Stats {
    pub peers: Vec<PeerStat>,
    /// Bytes and responses held by the response cache.
    pub cache_bytes: u64,
    pub cache_entries: u64,
    /// Global rate-limit decisions taken locally so far.
    pub redis_fallbacks: u64,
    /// Whether decisions skip Redis after failures.
    pub redis_circuit_open: bool,
    /// Per pool with peer names: lookups that failed.
    pub dns_failures: Vec<(String, u64)>,
    /// Per pool with outlier detection: peers ejected so far.
    pub ejections: Vec<(String, u64)>,
    /// Keys local rate limits hold, and those forgotten at the bound while still counting.
    pub rate_limit_keys: u64,
    pub rate_limit_evictions: u64,
    /// Per JWT issuer whose keys are fetched: keys held, fetches that succeeded and failed.
    pub jwks: Vec<JwksStat>,
}

/// One fetched JWT key set's state.
#[derive(Debug)]
pub struct JwksStat {
    pub issuer: String,
    pub keys: usize,
    pub fetched: u64,
    pub failed: u64,
}

/// One peer's state.
#[derive(Debug)]
pub struct PeerStat {
    pub upstream: String,
    pub peer: String,
    /// Healthy and not cooling down.
    pub available: bool,
    pub in_flight: usize,
}
