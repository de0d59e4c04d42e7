//! The series of route features that not every route uses: forward authentication,
//! compression, mirroring.

use super::RouteMetrics;
use prometheus::IntCounter;

impl RouteMetrics {
    /// Count a request checked by the route's authorization service, with its `result`.
    pub fn forward_auth(&self, result: &str) {
        self.families
            .forward_auth
            .with_label_values(&[&self.name, result])
            .inc();
    }

    /// Count an answer compressed with `coding`, `bytes_in` body bytes made `bytes_out`.
    pub fn compressed(&self, coding: &str, bytes_in: usize, bytes_out: usize) {
        let f = &self.families;
        f.compressed.with_label_values(&[&self.name, coding]).inc();
        f.compression_bytes
            .with_label_values(&[&self.name, "in"])
            .inc_by(bytes_in as u64);
        f.compression_bytes
            .with_label_values(&[&self.name, "out"])
            .inc_by(bytes_out as u64);
    }

    /// The counter of mirrored requests with `result` (sent, failed, skipped).
    pub fn mirror_counter(&self, result: &str) -> IntCounter {
        self.families
            .mirror_requests
            .with_label_values(&[&self.name, result])
    }
}
