//! Basic authentication: `Authorization: Basic` checked against bcrypt hashes, off the worker
//! threads, with recent verdicts cached.

use super::ConsumerId;
use base64::Engine;
use http::header::{self, HeaderMap};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Basic-auth users and the machinery to check them.
#[derive(Debug)]
pub struct BasicAuth {
    /// User name → (consumer, bcrypt hash).
    users: HashMap<String, (ConsumerId, Arc<str>)>,
    cache: BasicCache,
    /// Bounds how many bcrypt verifications run at once, so that a flood of wrong passwords
    /// cannot take every CPU.
    slots: Arc<tokio::sync::Semaphore>,
}

impl BasicAuth {
    /// Build from (user name, consumer, bcrypt hash) triples.
    pub fn new(users: impl IntoIterator<Item = (String, ConsumerId, String)>) -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        BasicAuth {
            users: users
                .into_iter()
                .map(|(u, id, h)| (u, (id, Arc::from(h.as_str()))))
                .collect(),
            cache: BasicCache::new(),
            slots: Arc::new(tokio::sync::Semaphore::new(cpus.max(2))),
        }
    }

    /// Check a user name and password against the consumer's bcrypt hash, off the worker
    /// thread, with recent verdicts cached.
    pub async fn verify(&self, user: &str, pass: &[u8]) -> Option<ConsumerId> {
        let mut h = Sha256::new();
        h.update(b"basic\0");
        h.update(user.as_bytes());
        h.update(b"\0");
        h.update(pass);
        let digest: [u8; 32] = h.finalize().into();
        if let Some(verdict) = self.cache.get(&digest) {
            return verdict;
        }
        let verdict = match self.users.get(user) {
            Some((id, hash)) => {
                let _slot = self.slots.acquire().await.ok()?;
                let hash = hash.clone();
                let pass = pass.to_vec();
                let ok = tokio::task::spawn_blocking(move || {
                    bcrypt::verify(&pass, &hash).unwrap_or(false)
                })
                .await
                .unwrap_or(false);
                ok.then_some(*id)
            }
            None => None,
        };
        self.cache.put(digest, verdict);
        verdict
    }
}

/// The user name and password of `Authorization: Basic`, if present and well formed.
pub fn credentials(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    let auth = headers.get(header::AUTHORIZATION)?.as_bytes();
    if auth.len() <= 6 || !auth[..6].eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth[6..].trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

/// Results of recent basic-auth verifications, keyed by a digest of the credentials, so that
/// bcrypt (deliberately slow) runs once per credential and not once per request. Sharded to
/// keep threads from contending; each shard is bounded.
#[derive(Debug)]
struct BasicCache {
    shards: Vec<Mutex<CacheShard>>,
}

/// Credential digest → (verdict, when it was reached).
type CacheShard = HashMap<[u8; 32], (Option<ConsumerId>, Instant)>;

const CACHE_SHARDS: usize = 16;
const CACHE_SHARD_CAPACITY: usize = 1024;
const CACHE_OK_TTL: Duration = Duration::from_secs(300);
const CACHE_FAIL_TTL: Duration = Duration::from_secs(10);

impl BasicCache {
    fn new() -> Self {
        BasicCache {
            shards: (0..CACHE_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
        }
    }

    fn shard(&self, d: &[u8; 32]) -> &Mutex<CacheShard> {
        &self.shards[d[0] as usize % CACHE_SHARDS]
    }

    /// `Some(result)` when a fresh verdict is cached.
    fn get(&self, d: &[u8; 32]) -> Option<Option<ConsumerId>> {
        let shard = self.shard(d).lock().ok()?;
        let (id, at) = shard.get(d)?;
        let ttl = if id.is_some() {
            CACHE_OK_TTL
        } else {
            CACHE_FAIL_TTL
        };
        (at.elapsed() < ttl).then_some(*id)
    }

    fn put(&self, d: [u8; 32], id: Option<ConsumerId>) {
        if let Ok(mut shard) = self.shard(&d).lock() {
            if shard.len() >= CACHE_SHARD_CAPACITY {
                shard.retain(|_, (id, at)| {
                    at.elapsed()
                        < if id.is_some() {
                            CACHE_OK_TTL
                        } else {
                            CACHE_FAIL_TTL
                        }
                });
                if shard.len() >= CACHE_SHARD_CAPACITY {
                    shard.clear();
                }
            }
            shard.insert(d, (id, Instant::now()));
        }
    }
}
