//! Open connections per client address, for `max_connections_per_ip`. The counts are split
//! over shards by address so that connections from different clients rarely share a lock, and
//! only listeners with a cap use them at all.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

const SHARDS: usize = 64;

/// Connection counts by client address.
#[derive(Debug)]
pub struct PerIp {
    shards: Box<[Mutex<HashMap<IpAddr, u32>>]>,
    hasher: RandomState,
}

impl Default for PerIp {
    fn default() -> Self {
        PerIp {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

/// One counted connection; the count drops with it.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        &self.shards[self.hasher.hash_one(ip) as usize % SHARDS]
    }

    /// Count a connection from `ip` unless it already has `max` open.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<Slot> {
        let mut map = self.shard(&ip).lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            counts: self.clone(),
            ip,
        })
    }

    /// Open connections from `ip` that are counted.
    pub fn count(&self, ip: IpAddr) -> u32 {
        let map = self.shard(&ip).lock().unwrap_or_else(|p| p.into_inner());
        map.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self
            .counts
            .shard(&self.ip)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_releases() {
        let p = Arc::new(PerIp::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = p.acquire(a, 2).unwrap();
        let s2 = p.acquire(a, 2).unwrap();
        assert!(p.acquire(a, 2).is_none());
        let _other = p.acquire(b, 2).unwrap();
        drop(s1);
        assert_eq!(p.count(a), 1);
        let _s3 = p.acquire(a, 2).unwrap();
        drop(s2);
        drop(_s3);
        assert_eq!(p.count(a), 0);
        assert!(p.shard(&a).lock().unwrap().get(&a).is_none());
    }
}
