//! Local rate-limit counters, exact per key.
//!
//! Every key of every limit has a sliding window of its own, phased from the key's first
//! request, as the Redis script counts it: the count of the current window, the count of the
//! window before, and where the first window began. Keys live in a map split into shards (one
//! lock each), under a bound on how many are held; a key idle for two of its windows holds
//! nothing the decision would read, and is forgotten when its shard needs the room.
//!
//! A key is identified by two independent keyed SipHash digests of the limit and the key's
//! bytes (128 bits, keyed per process): a few bytes per key whatever the key's length, and two
//! keys that collide — about one chance in 10^26 with a million keys — cannot be made to on
//! purpose.
//!
//! At the bound, a new key takes the place of the one nearest to being forgotten among a few
//! looked at in its shard; if that one was still counting, it starts again from nothing: the bound can let a
//! caller through early, never refuse one that is under its limit. Such evictions are counted.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Shards of the key map (a power of two).
const SHARDS: usize = 64;
/// Entries looked at to choose one to evict at the bound.
const EVICTION_SAMPLE: usize = 8;
/// A shard is swept for forgotten keys at most this often (milliseconds).
const SWEEP_GAP_MS: u64 = 100;

/// A key of a limit: 128 bits of keyed digests.
pub(super) type KeyId = u128;

/// A key's sliding window.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// When the key's first window began (milliseconds on the store's clock).
    epoch: u64,
    /// From when the entry holds nothing a decision would read: two windows after the one it
    /// last counted in.
    expires: u64,
    /// Which window (since `epoch`, wrapping) `current` counts.
    index: u32,
    /// Admitted requests in that window and in the one before.
    current: u32,
    previous: u32,
}

/// The map's hasher: the key is already a uniform keyed digest, so its low bits are the hash.
#[derive(Default)]
struct Spread(u64);

impl Hasher for Spread {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

struct Shard {
    map: HashMap<KeyId, Window, BuildHasherDefault<Spread>>,
    /// No entry expires before this (a lower bound), so a sweep earlier would free nothing.
    next_expiry: u64,
    last_sweep: u64,
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            map: HashMap::default(),
            next_expiry: u64::MAX,
            last_sweep: 0,
        }
    }
}

/// The outcome of one decision, in the Redis script's terms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Decision {
    pub admitted: bool,
    /// Requests of the window before, and admitted ones of this window (this one included).
    pub previous: u32,
    pub current: u32,
    /// How far into the key's window this is (0..1).
    pub fraction: f64,
    /// Milliseconds until the key's window turns.
    pub window_left_ms: u64,
    /// Which window counted it, to take the count back.
    index: u32,
}

/// Every key of every local rate limit.
pub(super) struct LocalCounters {
    shards: Box<[Mutex<Shard>]>,
    digest: (RandomState, RandomState),
    /// At most this many keys in all.
    max_keys: AtomicUsize,
    /// Keys held now.
    held: AtomicUsize,
    /// Keys forgotten at the bound while they were still counting.
    pub evicted: AtomicU64,
    epoch: Instant,
}

impl LocalCounters {
    /// Counters holding at most (about) `max_keys` keys.
    pub fn new(max_keys: usize) -> LocalCounters {
        LocalCounters {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            digest: (RandomState::new(), RandomState::new()),
            max_keys: AtomicUsize::new(max_keys.max(1)),
            held: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Change the bound (a reload); above it, the count comes down as keys come.
    pub fn set_max_keys(&self, max_keys: usize) {
        self.max_keys.store(max_keys.max(1), Ordering::Relaxed);
    }

    /// The bound.
    pub fn max_keys(&self) -> usize {
        self.max_keys.load(Ordering::Relaxed)
    }

    /// Keys held now (idle ones not yet swept included).
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The identity of `key` under the limit `limit_id`.
    pub fn key_id(&self, limit_id: u64, key: &[u8]) -> KeyId {
        let a = self.digest.0.hash_one((limit_id, key));
        let b = self.digest.1.hash_one((limit_id, key));
        (u128::from(a) << 64) | u128::from(b)
    }

    fn shard(&self, id: KeyId) -> std::sync::MutexGuard<'_, Shard> {
        let i = (id >> 64) as usize & (SHARDS - 1);
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Decide one request of key `id` under `limit` requests per `window_ms`: admitted when the
    /// sliding estimate `previous × (1 − f) + current`, this request included and rounded,
    /// stays within the limit; only admitted requests are counted.
    pub fn decide(&self, id: KeyId, limit: u64, window_ms: u64) -> Decision {
        self.decide_at(id, limit, window_ms, self.now_ms())
    }

    fn decide_at(&self, id: KeyId, limit: u64, window_ms: u64, now: u64) -> Decision {
        let window_ms = window_ms.max(1);
        let mut shard = self.shard(id);
        let w = match shard.map.get_mut(&id) {
            Some(w) => w,
            None => {
                self.make_room(&mut shard, now);
                self.held.fetch_add(1, Ordering::Relaxed);
                shard.map.entry(id).or_insert(Window {
                    epoch: now,
                    expires: now,
                    index: 0,
                    current: 0,
                    previous: 0,
                })
            }
        };
        let since = now.saturating_sub(w.epoch);
        let index = (since / window_ms) as u32;
        let elapsed = since % window_ms;
        if index != w.index {
            w.previous = if index == w.index.wrapping_add(1) {
                w.current
            } else {
                0
            };
            w.current = 0;
            w.index = index;
        }
        let fraction = elapsed as f64 / window_ms as f64;
        let estimate = f64::from(w.previous) * (1.0 - fraction) + f64::from(w.current) + 1.0;
        let admitted = estimate.round() <= limit as f64;
        if admitted {
            w.current = w.current.saturating_add(1);
        }
        // Two windows after this one, nothing of it is read any more.
        w.expires = now - elapsed + 2 * window_ms;
        let decision = Decision {
            admitted,
            previous: w.previous,
            current: w.current,
            fraction,
            window_left_ms: window_ms - elapsed,
            index,
        };
        let expires = w.expires;
        shard.next_expiry = shard.next_expiry.min(expires);
        decision
    }

    /// Take back an admitted request (a later limit of the route refused it).
    pub fn undo(&self, id: KeyId, decision: &Decision) {
        let mut shard = self.shard(id);
        if let Some(w) = shard.map.get_mut(&id) {
            if w.index == decision.index {
                w.current = w.current.saturating_sub(1);
            } else if w.index == decision.index.wrapping_add(1) {
                w.previous = w.previous.saturating_sub(1);
            }
        }
    }

    /// Before a new key goes into `shard` at the bound: sweep the shard's forgotten keys out
    /// when some may have expired, else evict the shard's entry nearest to expiry among a
    /// sample.
    fn make_room(&self, shard: &mut Shard, now: u64) {
        let max = self.max_keys.load(Ordering::Relaxed);
        if self.held.load(Ordering::Relaxed) < max {
            return;
        }
        if now >= shard.next_expiry && now >= shard.last_sweep + SWEEP_GAP_MS {
            let before = shard.map.len();
            let mut next = u64::MAX;
            shard.map.retain(|_, w| {
                let keep = w.expires > now;
                if keep {
                    next = next.min(w.expires);
                }
                keep
            });
            shard.next_expiry = next;
            shard.last_sweep = now;
            self.held
                .fetch_sub(before - shard.map.len(), Ordering::Relaxed);
        }
        // One out for the one coming in (more while the bound was lowered by a reload).
        for _ in 0..4 {
            if self.held.load(Ordering::Relaxed) < max {
                return;
            }
            let Some((&victim, w)) = shard
                .map
                .iter()
                .take(EVICTION_SAMPLE)
                .min_by_key(|(_, w)| w.expires)
            else {
                return;
            };
            if w.expires > now {
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
            shard.map.remove(&victim);
            self.held.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_counts_alone_in_its_own_window() {
        let c = LocalCounters::new(1000);
        let (a, b) = (c.key_id(1, b"a"), c.key_id(1, b"b"));
        assert_ne!(a, b);
        assert_ne!(c.key_id(1, b"a"), c.key_id(2, b"a"), "limits apart");
        let admitted = |id, now| c.decide_at(id, 3, 1000, now).admitted;
        assert!((0..3).all(|_| admitted(a, 100)));
        assert!(!admitted(a, 100));
        // Another key is untouched, and starts its own window later.
        assert!((0..3).all(|_| admitted(b, 900)));
        // a's window turned at 1100: three fade out of the estimate over the next window
        // (at 1100 + 1/3 of it, two of them are left and one more fits).
        assert!(!admitted(a, 1150));
        assert!(admitted(a, 1450));
        assert!(!admitted(a, 1460));
        // b's window is its own: at 1100 it is still full.
        assert!(!admitted(b, 1100));
    }

    #[test]
    fn a_key_idle_for_two_windows_starts_afresh_and_refusals_are_not_counted() {
        let c = LocalCounters::new(1000);
        let k = c.key_id(7, b"k");
        for _ in 0..50 {
            c.decide_at(k, 2, 100, 10);
        }
        let d = c.decide_at(k, 2, 100, 250);
        assert!(d.admitted);
        assert_eq!((d.previous, d.current), (0, 1));
    }

    #[test]
    fn undo_takes_back_the_count() {
        let c = LocalCounters::new(1000);
        let k = c.key_id(1, b"k");
        let d = c.decide_at(k, 1, 1000, 0);
        assert!(d.admitted);
        c.undo(k, &d);
        assert!(c.decide_at(k, 1, 1000, 1).admitted);
    }

    #[test]
    fn the_bound_forgets_idle_keys_first_and_counts_live_evictions() {
        let c = LocalCounters::new(SHARDS * 4);
        // Fill well past the bound with keys that go idle.
        for i in 0..(SHARDS * 16) as u64 {
            c.decide_at(c.key_id(1, &i.to_be_bytes()), 10, 100, 0);
        }
        assert!(c.held() <= SHARDS * 4, "{}", c.held());
        let evicted_while_live = c.evicted.load(Ordering::Relaxed);
        assert!(evicted_while_live > 0);
        // Much later, the idle keys are swept, not evicted.
        for i in 0..8u64 {
            c.decide_at(c.key_id(2, &i.to_be_bytes()), 10, 100, 10_000);
        }
        assert_eq!(c.evicted.load(Ordering::Relaxed), evicted_while_live);
        assert!(c.held() <= SHARDS * 4);
    }
}
