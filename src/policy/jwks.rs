//! Verification keys fetched over HTTPS while the gateway runs: a JWKS URL, or an OpenID
//! Connect discovery document naming one. A key set is fetched at start, again when its
//! answer's `Cache-Control: max-age` runs out (within the issuer's `refresh` bounds), and at
//! once, at most every `refresh.min`, when a token names a key id the set does not hold; a
//! failed fetch keeps the last good keys. Key sets outlive reloads that leave them unchanged.

use crate::config::{read_jwks, JwtKey, RemoteJwks};
use crate::fetch::{self, Call};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::header;
use jsonwebtoken::Algorithm;
use pingora_core::connectors::http::Connector;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The largest JWKS or discovery document read (real ones are a few KB).
const MAX_DOCUMENT: usize = 1 << 20;
const NEVER: u64 = u64::MAX;

/// One issuer's fetched keys and their schedule.
pub struct RemoteKeys {
    pub issuer: String,
    source: RemoteJwks,
    algorithms: Vec<Algorithm>,
    keys: ArcSwap<Vec<JwtKey>>,
    connector: Connector,
    /// One fetch at a time; requests waiting on it use its result.
    fetching: tokio::sync::Mutex<()>,
    /// Fetches finished (successful or not), so a waiting request knows one happened.
    attempts: AtomicU64,
    /// The JWKS URL a discovery document named, until a fetch from it fails.
    discovered: Mutex<Option<http::Uri>>,
    epoch: Instant,
    next_refresh_ms: AtomicU64,
    last_forced_ms: AtomicU64,
    refreshing: AtomicBool,
    /// A fetch is under way (requests with an unknown key wait for it).
    in_flight: AtomicBool,
    pub fetched: AtomicU64,
    pub failed: AtomicU64,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("issuer", &self.issuer)
            .field("url", &self.source.url)
            .field("keys", &self.keys.load().len())
            .finish()
    }
}

impl RemoteKeys {
    /// A key set not fetched yet (its first fetch is due at once).
    pub fn new(issuer: &str, source: &RemoteJwks, algorithms: &[Algorithm]) -> RemoteKeys {
        RemoteKeys {
            issuer: issuer.to_string(),
            source: source.clone(),
            algorithms: algorithms.to_vec(),
            keys: ArcSwap::from_pointee(Vec::new()),
            connector: Connector::new(None),
            fetching: tokio::sync::Mutex::new(()),
            attempts: AtomicU64::new(0),
            discovered: Mutex::new(None),
            epoch: Instant::now(),
            next_refresh_ms: AtomicU64::new(0),
            last_forced_ms: AtomicU64::new(NEVER),
            refreshing: AtomicBool::new(false),
            in_flight: AtomicBool::new(false),
            fetched: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// A set for changed settings of the same key set (`previous`: the same issuer and URL):
    /// it starts with the keys and counts already held, and fetches at once.
    pub fn succeeding(
        previous: &RemoteKeys,
        source: &RemoteJwks,
        algorithms: &[Algorithm],
    ) -> RemoteKeys {
        let next = RemoteKeys::new(&previous.issuer, source, algorithms);
        let kept: Vec<JwtKey> = previous
            .keys()
            .iter()
            .filter_map(|k| {
                let fitting: Vec<Algorithm> = k
                    .algorithms
                    .iter()
                    .copied()
                    .filter(|a| algorithms.contains(a))
                    .collect();
                (!fitting.is_empty()).then(|| JwtKey {
                    algorithms: fitting,
                    ..k.clone()
                })
            })
            .collect();
        next.keys.store(Arc::new(kept));
        next.fetched
            .store(previous.fetched.load(Ordering::Relaxed), Ordering::Relaxed);
        next.failed
            .store(previous.failed.load(Ordering::Relaxed), Ordering::Relaxed);
        next
    }

    /// Whether this set holds the keys of `issuer` from `url` (its other settings aside).
    pub fn same_keys(&self, issuer: &str, source: &RemoteJwks) -> bool {
        self.issuer == issuer
            && self.source.url == source.url
            && self.source.discovery == source.discovery
    }

    /// Whether this set can stand for an issuer configured with `source` and `algorithms`.
    pub fn same_source(&self, issuer: &str, source: &RemoteJwks, algorithms: &[Algorithm]) -> bool {
        self.issuer == issuer && self.source == *source && self.algorithms == algorithms
    }

    /// The keys held now.
    pub fn keys(&self) -> Arc<Vec<JwtKey>> {
        self.keys.load_full()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A token named a key the set does not hold: fetch again, unless a fetch forced this way
    /// happened less than `refresh.min` ago. Whether the keys should be looked at again.
    pub async fn refetch_for_unknown_key(&self) -> bool {
        let seen = self.attempts.load(Ordering::Acquire);
        let too_soon = |now: u64| {
            let last = self.last_forced_ms.load(Ordering::Relaxed);
            last != NEVER && now.saturating_sub(last) < self.source.refresh_min.as_millis() as u64
        };
        // Refused at once, unless a fetch is under way: its keys may be the ones wanted.
        if too_soon(self.now_ms()) && !self.in_flight.load(Ordering::Acquire) {
            return false;
        }
        let _one = self.fetching.lock().await;
        if self.attempts.load(Ordering::Acquire) != seen {
            return true;
        }
        let now = self.now_ms();
        if too_soon(now) {
            return false;
        }
        self.last_forced_ms.store(now, Ordering::Relaxed);
        self.fetch_now().await
    }

    /// The scheduled fetch, unless one forced meanwhile moved the schedule.
    async fn refresh(&self) {
        let _one = self.fetching.lock().await;
        if self.now_ms() >= self.next_refresh_ms.load(Ordering::Relaxed) {
            self.fetch_now().await;
        }
    }

    /// Fetch (the caller holds `fetching`); whether new keys were stored.
    async fn fetch_now(&self) -> bool {
        self.in_flight.store(true, Ordering::Release);
        let result = tokio::time::timeout(self.source.timeout, self.fetch()).await;
        self.in_flight.store(false, Ordering::Release);
        let result = result.unwrap_or_else(|_| {
            Err(format!(
                "no answer within {}",
                humantime::format_duration(self.source.timeout)
            ))
        });
        let now = self.now_ms();
        let stored = match result {
            Ok((keys, max_age)) => {
                let wait = max_age
                    .unwrap_or(self.source.refresh_max)
                    .clamp(self.source.refresh_min, self.source.refresh_max);
                self.next_refresh_ms
                    .store(now + wait.as_millis() as u64, Ordering::Relaxed);
                log::info!(
                    "jwt issuer {}: {} key(s) fetched; next fetch in {}",
                    self.issuer,
                    keys.len(),
                    humantime::format_duration(wait)
                );
                self.keys.store(Arc::new(keys));
                self.fetched.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.next_refresh_ms.store(
                    now + self.source.refresh_min.as_millis() as u64,
                    Ordering::Relaxed,
                );
                if let Ok(mut d) = self.discovered.lock() {
                    *d = None;
                }
                log::warn!(
                    "jwt issuer {}: fetching keys failed, {} key(s) kept: {e}",
                    self.issuer,
                    self.keys.load().len()
                );
                self.failed.fetch_add(1, Ordering::Relaxed);
                false
            }
        };
        self.attempts.fetch_add(1, Ordering::Release);
        stored
    }

    /// Fetch the key set (through discovery when configured): the usable keys and the
    /// answer's max-age.
    async fn fetch(&self) -> Result<(Vec<JwtKey>, Option<Duration>), String> {
        let jwks_url = if self.source.discovery {
            let known = self.discovered.lock().ok().and_then(|d| d.clone());
            match known {
                Some(u) => u,
                None => {
                    let (doc, _) = self.get(&self.source.url).await?;
                    let u = jwks_uri_of(&doc, &self.issuer)?;
                    if let Ok(mut d) = self.discovered.lock() {
                        *d = Some(u.clone());
                    }
                    u
                }
            }
        } else {
            self.source.url.clone()
        };
        let (doc, max_age) = self.get(&jwks_url).await?;
        let (keys, left_out) =
            read_jwks(&doc, &self.algorithms).map_err(|e| format!("{jwks_url}: {e}"))?;
        for note in left_out {
            log::debug!("jwt issuer {}: {jwks_url}: {note}", self.issuer);
        }
        if keys.is_empty() {
            return Err(format!("{jwks_url} holds no key that fits the algorithms"));
        }
        Ok((keys, max_age))
    }

    /// GET an https URL: its body (when 200) and its `Cache-Control: max-age`.
    async fn get(&self, url: &http::Uri) -> Result<(Vec<u8>, Option<Duration>), String> {
        let accept = [(
            header::ACCEPT,
            http::HeaderValue::from_static("application/json"),
        )];
        let answer = fetch::send(
            &self.connector,
            Call {
                method: http::Method::GET,
                url,
                headers: &accept,
                body: None,
                ca: self.source.ca.as_deref(),
                timeout: self.source.timeout,
                max_body: MAX_DOCUMENT,
            },
        )
        .await?;
        if answer.status() != http::StatusCode::OK {
            return Err(format!("{url} answered {}", answer.status()));
        }
        Ok((answer.body, max_age(&answer.head.headers)))
    }
}

/// The `max-age` of a `Cache-Control` answer (`no-store`/`no-cache` count as 0).
fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let mut age = None;
    for v in headers.get_all(header::CACHE_CONTROL) {
        let Ok(v) = v.to_str() else { continue };
        for directive in v.split(',').map(str::trim) {
            let lower = directive.to_ascii_lowercase();
            if lower == "no-store" || lower == "no-cache" {
                return Some(Duration::ZERO);
            }
            if let Some(n) = lower.strip_prefix("max-age=") {
                if let Ok(n) = n.trim_matches('"').parse::<u64>() {
                    age = Some(Duration::from_secs(n));
                }
            }
        }
    }
    age
}

/// The `jwks_uri` of an OpenID Connect discovery document, which must name `issuer` as its
/// own (OpenID Connect Discovery 1.0, section 4.3) and an https URL.
fn jwks_uri_of(document: &[u8], issuer: &str) -> Result<http::Uri, String> {
    #[derive(serde::Deserialize)]
    struct Discovery {
        issuer: String,
        jwks_uri: String,
    }
    let d: Discovery = serde_json::from_slice(document)
        .map_err(|e| format!("not an OpenID Connect discovery document: {e}"))?;
    if d.issuer != issuer {
        return Err(format!(
            "the discovery document is issuer \"{}\"'s, not \"{issuer}\"'s",
            d.issuer
        ));
    }
    match d.jwks_uri.parse::<http::Uri>() {
        Ok(u) if u.scheme_str() == Some("https") && u.host().is_some() => Ok(u),
        _ => Err(format!(
            "the discovery document's jwks_uri \"{}\" is not an https URL",
            d.jwks_uri
        )),
    }
}

/// Runs the scheduled fetches of the key sets [`JwksRefresher::sets`] returns (the current
/// snapshot's, so a reload's new issuers are picked up within a second).
pub struct JwksRefresher {
    pub sets: Box<dyn Fn() -> Vec<Arc<RemoteKeys>> + Send + Sync>,
}

#[async_trait]
impl BackgroundService for JwksRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let mut wait = Duration::from_secs(1);
            for set in (self.sets)() {
                let now = set.now_ms();
                let due = set.next_refresh_ms.load(Ordering::Relaxed);
                if now < due {
                    wait = wait.min(Duration::from_millis(due - now));
                } else if !set.refreshing.swap(true, Ordering::AcqRel) {
                    tokio::spawn(async move {
                        set.refresh().await;
                        set.refreshing.store(false, Ordering::Release);
                    });
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait.max(Duration::from_millis(5))) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age() {
        let mut h = http::HeaderMap::new();
        assert_eq!(max_age(&h), None);
        h.insert(
            header::CACHE_CONTROL,
            "public, max-age=300".parse().unwrap(),
        );
        assert_eq!(max_age(&h), Some(Duration::from_secs(300)));
        h.insert(header::CACHE_CONTROL, "No-Store".parse().unwrap());
        assert_eq!(max_age(&h), Some(Duration::ZERO));
    }

    #[test]
    fn discovery_names_its_issuer_and_an_https_jwks() {
        let ok = br#"{"issuer":"https://id.example","jwks_uri":"https://id.example/keys"}"#;
        assert_eq!(
            jwks_uri_of(ok, "https://id.example").unwrap(),
            "https://id.example/keys"
        );
        assert!(jwks_uri_of(ok, "https://other.example").is_err());
        let plain = br#"{"issuer":"i","jwks_uri":"http://id.example/keys"}"#;
        assert!(jwks_uri_of(plain, "i").is_err());
        assert!(jwks_uri_of(b"{}", "i").is_err());
    }
}
