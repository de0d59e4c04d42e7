//! A pool's retry budget, as Envoy's: over a sliding window, retries may add at most `ratio` of
//! the pool's requests (and `min_retries` in any window, so a quiet pool can still retry), so
//! that retries cannot multiply an outage. Counted in ten buckets of a tenth of the window each.

use crate::config::RetryBudget;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const BUCKETS: usize = 10;

#[derive(Default)]
struct Bucket {
    /// Which tenth of the timeline this bucket counts (plus one; 0: never used).
    index: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

/// Requests and retries of one pool over the budget's window.
pub(super) struct Budget {
    config: RetryBudget,
    bucket_ms: u64,
    buckets: [Bucket; BUCKETS],
    epoch: Instant,
}

impl Budget {
    pub(super) fn new(config: RetryBudget) -> Budget {
        let bucket_ms = (config.window.as_millis() as u64 / BUCKETS as u64).max(1);
        Budget {
            config,
            bucket_ms,
            buckets: Default::default(),
            epoch: Instant::now(),
        }
    }

    /// The bucket of now, emptied when it last counted an older tenth.
    fn current(&self) -> (&Bucket, u64) {
        let index = self.epoch.elapsed().as_millis() as u64 / self.bucket_ms + 1;
        let b = &self.buckets[(index % BUCKETS as u64) as usize];
        let seen = b.index.load(Ordering::Acquire);
        if seen != index
            && b.index
                .compare_exchange(seen, index, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.requests.store(0, Ordering::Relaxed);
            b.retries.store(0, Ordering::Relaxed);
        }
        (b, index)
    }

    /// Count a request's first attempt.
    pub(super) fn request(&self) {
        self.current().0.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether one more retry fits the budget; counted when it does.
    pub(super) fn try_retry(&self) -> bool {
        let (bucket, index) = self.current();
        let (mut requests, mut retries) = (0u64, 0u64);
        for b in &self.buckets {
            let i = b.index.load(Ordering::Acquire);
            if i != 0 && i + (BUCKETS as u64) > index {
                requests += b.requests.load(Ordering::Relaxed);
                retries += b.retries.load(Ordering::Relaxed);
            }
        }
        let allowed = ((requests as f64 * self.config.ratio) as u64).max(self.config.min_retries);
        if retries >= allowed {
            return false;
        }
        bucket.retries.fetch_add(1, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn retries_are_held_to_a_share_of_requests() {
        let b = Budget::new(RetryBudget {
            ratio: 0.2,
            window: Duration::from_secs(10),
            min_retries: 3,
        });
        // A quiet pool may still retry a few times.
        assert!((0..3).all(|_| b.try_retry()));
        assert!(!b.try_retry());
        // With 100 requests in the window, 20 retries in all.
        for _ in 0..100 {
            b.request();
        }
        assert_eq!((0..50).filter(|_| b.try_retry()).count(), 17);
    }
}
