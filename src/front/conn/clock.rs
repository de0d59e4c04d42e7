//! How slowly a request body may arrive.

use super::ReadLimits;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Bounds how slowly a body may arrive: each wait for more bytes lasts at most the body
/// timeout, and all waits together at most the body timeout plus the time the bytes received
/// so far earn at the minimum rate.
#[derive(Default)]
pub(super) struct BodyClock {
    received: u64,
    waited: Duration,
    wait_start: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl BodyClock {
    pub(super) fn progress(&mut self, n: usize) {
        self.received += n as u64;
        if let Some(start) = self.wait_start.take() {
            self.waited += start.elapsed();
        }
    }

    /// The read must wait: arm the timer for this wait if needed; ready when time is up.
    pub(super) fn wait(&mut self, cx: &mut Context<'_>, limits: &ReadLimits) -> Poll<()> {
        if self.wait_start.is_none() {
            let now = Instant::now();
            self.wait_start = Some(now);
            let mut allowed = limits.body_timeout;
            if limits.body_min_rate > 0 {
                let earned =
                    Duration::from_secs_f64(self.received as f64 / limits.body_min_rate as f64);
                let budget = (limits.body_timeout + earned).saturating_sub(self.waited);
                allowed = allowed.min(budget);
            }
            let deadline = now + allowed;
            match &mut self.timer {
                Some(t) => t.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        match &mut self.timer {
            Some(t) => t.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}
