//! The response store: a `pingora_cache::Storage` on top of Pingora's TinyUFO (TinyLFU admission,
//! S3-FIFO eviction), weighted by each object's size, so the cache never holds more than its byte
//! budget and frequently used objects survive a churn of one-off ones.

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora_cache::eviction::CacheEntryKey;
use pingora_cache::key::{CacheHashKey, CacheKey, CompactCacheKey, HashBinary};
use pingora_cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheMeta, PurgeType};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tinyufo::TinyUfo;

/// TinyUFO weighs entries in 16 bits: one unit is this many bytes (so objects up to 16 MiB).
const WEIGHT_UNIT: usize = 256;
/// What an entry costs beyond its body and header bytes (map slots, queues, the meta box).
const ENTRY_OVERHEAD: usize = 512;

struct Entry {
    meta: StoredMeta,
    body: Bytes,
    primary: HashBinary,
    combined: HashBinary,
    /// Bytes counted against the budget.
    size: usize,
}

/// The in-memory response store.
pub struct MemoryStore {
    objects: TinyUfo<HashBinary, Arc<Entry>>,
    /// Primary key → the stored variants, so purging a key removes every variant.
    variants: Vec<Mutex<HashMap<HashBinary, HashSet<HashBinary>>>>,
    /// Bytes currently held (approximate: what the budget counts).
    held: AtomicU64,
    entries: AtomicU64,
    budget: usize,
}

const SHARDS: usize = 16;

fn weight_of(size: usize) -> u16 {
    size.div_ceil(WEIGHT_UNIT).clamp(1, u16::MAX as usize) as u16
}

/// A stored `CacheMeta`.
///
/// Pingora's serialized form compresses the response header with zstd; decoding it on every hit
/// cost about 14,000 instructions, a fifth of a whole cache hit. So a meta that
/// `CacheMeta::new` rebuilds exactly (checked when it is stored: the rebuilt one must serialize
/// to the same bytes) is kept decoded, and a hit builds its copy from it. Any other (one with
/// fields `new` cannot set) stays serialized and is decoded per hit as before.
enum StoredMeta {
    Decoded(CacheMeta),
    Serialized(Vec<u8>, Vec<u8>),
}

/// A fresh `CacheMeta` with the same contents as `m`, as far as `CacheMeta::new` and the
/// public setters can express them.
fn rebuild(m: &CacheMeta) -> CacheMeta {
    rebuild_with(m, m.response_header_copy())
}

/// [`rebuild`] with `header` as the response header.
fn rebuild_with(m: &CacheMeta, header: ResponseHeader) -> CacheMeta {
    let mut out = CacheMeta::new(
        m.fresh_until(),
        m.created(),
        m.stale_while_revalidate_sec(),
        m.stale_if_error_sec(),
        header,
    );
    if let Some(v) = m.variance() {
        out.set_variance(v);
    }
    if let Some(e) = m.epoch_override() {
        out.set_epoch_override(e);
    }
    out
}

/// Headers a hit adds to its copy of the stored header: Pingora's `Age`, then the request id,
/// `Cache-Status`, `X-Cache-Status` and a few of a route's own.
const HIT_HEADERS: usize = 6;

/// A copy of `h` (status, version, reason phrase, fields in order with their case) whose header
/// maps have room for [`HIT_HEADERS`] more fields. A hit's copy is a clone, and a header map's
/// clone keeps its table: sized exactly, as a parsed header is, both of a hit's maps (the
/// values and Pingora's map of name cases) were rebuilt larger on every hit when its first
/// header was added.
fn with_room(h: &ResponseHeader) -> Result<ResponseHeader> {
    let size = Some(h.headers.len() + HIT_HEADERS);
    let mut out = if h.has_case() {
        let mut out = ResponseHeader::build(h.status, size)?;
        for (name, value) in h.case_header_iter() {
            out.append_header(name.clone(), value.clone())?;
        }
        out
    } else {
        let mut out = ResponseHeader::build_no_case(h.status, size)?;
        for (name, value) in h.headers.iter() {
            out.append_header(name.clone(), value.clone())?;
        }
        out
    };
    out.set_version(h.version);
    if let Some(reason) = h.get_reason_phrase() {
        out.set_reason_phrase(Some(reason))?;
    }
    Ok(out)
}

impl StoredMeta {
    /// The stored form of `meta`, and the bytes it counts against the budget.
    fn new(meta: &CacheMeta) -> Result<(StoredMeta, usize)> {
        let (internal, header) = meta.serialize()?;
        // Decoded from the serialized form, so that what a hit sees is exactly what decoding
        // per hit would give (times included, at the precision the format keeps).
        let decoded = CacheMeta::deserialize(&internal, &header)?;
        let plain = rebuild(&decoded).serialize()?;
        let canonical = rebuild_with(&decoded, with_room(decoded.response_header())?);
        // The copy with room is the same header as the decoded one: it serializes to the same
        // bytes.
        if plain.0 == internal && canonical.serialize()? == plain {
            // A decoded header costs more than its compressed form: count names, values and
            // the slots of the header map and of Pingora's map of name cases, the room included.
            let decoded: usize = canonical
                .headers()
                .iter()
                .map(|(k, v)| 2 * k.as_str().len() + v.len() + 96)
                .sum::<usize>()
                + HIT_HEADERS * 96;
            let size = internal.len() + decoded;
            return Ok((StoredMeta::Decoded(canonical), size));
        }
        let size = internal.len() + header.len();
        Ok((StoredMeta::Serialized(internal, header), size))
    }

    /// A `CacheMeta` for one hit.
    fn to_meta(&self) -> Result<CacheMeta> {
        match self {
            StoredMeta::Decoded(m) => Ok(rebuild(m)),
            StoredMeta::Serialized(internal, header) => CacheMeta::deserialize(internal, header),
        }
    }
}

impl MemoryStore {
    /// A store holding at most `budget` bytes of cached responses.
    pub fn new(budget: usize) -> MemoryStore {
        // TinyUFO sizes its frequency estimator by the expected number of objects.
        let estimated_objects = (budget / 8192).clamp(1024, 1 << 20);
        MemoryStore {
            objects: TinyUfo::new(budget / WEIGHT_UNIT, estimated_objects),
            variants: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            held: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            budget,
        }
    }

    /// Bytes currently held, as the budget counts them.
    pub fn held_bytes(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Number of stored responses.
    pub fn entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }

    /// The byte budget.
    pub fn budget(&self) -> usize {
        self.budget
    }

    fn shard(&self, primary: &HashBinary) -> &Mutex<HashMap<HashBinary, HashSet<HashBinary>>> {
        &self.variants[primary[0] as usize % SHARDS]
    }

    fn forget(&self, e: &Entry) {
        self.held.fetch_sub(e.size as u64, Ordering::Relaxed);
        self.entries.fetch_sub(1, Ordering::Relaxed);
        let mut shard = self
            .shard(&e.primary)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(set) = shard.get_mut(&e.primary) {
            set.remove(&e.combined);
            if set.is_empty() {
                shard.remove(&e.primary);
            }
        }
    }

    fn insert(&self, e: Entry) {
        let weight = weight_of(e.size);
        let e = Arc::new(e);
        {
            let mut shard = self
                .shard(&e.primary)
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            shard.entry(e.primary).or_default().insert(e.combined);
        }
        self.held.fetch_add(e.size as u64, Ordering::Relaxed);
        self.entries.fetch_add(1, Ordering::Relaxed);
        // A replaced entry is not reported as evicted: account for it first.
        if let Some(old) = self.objects.remove(&e.combined) {
            self.forget(&old);
            let mut shard = self
                .shard(&e.primary)
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            shard.entry(e.primary).or_default().insert(e.combined);
        }
        // force_put: requests waiting on the cache lock for this object must find it.
        for evicted in self.objects.force_put(e.combined, e.clone(), weight) {
            self.forget(&evicted.data);
        }
    }

    /// Remove one object and all its variants; returns how many were removed.
    pub fn remove_primary(&self, primary: &HashBinary) -> usize {
        let combined: Vec<HashBinary> = {
            let shard = self
                .shard(primary)
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            shard
                .get(primary)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default()
        };
        let mut n = 0;
        for c in combined {
            if let Some(e) = self.objects.remove(&c) {
                self.forget(&e);
                n += 1;
            }
        }
        n
    }

    fn lookup_bin(&self, combined: &HashBinary) -> Option<Arc<Entry>> {
        self.objects.get(combined)
    }
}

struct Hit {
    entry: Arc<Entry>,
    start: usize,
    end: usize,
    done: bool,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.entry.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.entry.body.len();
        if start >= len && len > 0 {
            return Error::e_explain(ErrorType::InternalError, "seek past the end of the body");
        }
        self.start = start;
        self.end = end.map_or(len, |e| e.min(len));
        self.done = false;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.entry.size
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

struct Miss {
    store: &'static MemoryStore,
    meta: StoredMeta,
    meta_size: usize,
    body: BytesMut,
    primary: HashBinary,
    combined: HashBinary,
}

#[async_trait]
impl HandleMiss for Miss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let size = self.body.len() + self.meta_size + ENTRY_OVERHEAD;
        // A buffer grown by doubling may hold up to twice its length: keep an exact copy then.
        let body = if self.body.capacity() > self.body.len() + self.body.len() / 8 {
            Bytes::copy_from_slice(&self.body)
        } else {
            self.body.freeze()
        };
        self.store.insert(Entry {
            meta: self.meta,
            body,
            primary: self.primary,
            combined: self.combined,
            size,
        });
        Ok(MissFinishType::Created(size))
    }
}

fn target_key(target: PurgeTarget<'_>) -> Option<&CompactCacheKey> {
    match target {
        PurgeTarget::Exact(CacheEntryKey::Identified { .. }) => None,
        other => Some(other.key()),
    }
}

#[async_trait]
impl Storage for MemoryStore {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(entry) = self.lookup_bin(&key.combined_bin()) else {
            return Ok(None);
        };
        let len = entry.body.len();
        let meta = entry.meta.to_meta()?;
        Ok(Some((
            meta,
            Box::new(Hit {
                entry,
                start: 0,
                end: len,
                done: false,
            }),
        )))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        // Size the buffer from Content-Length when known, so the stored body has no slack.
        let expected = meta
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0)
            .min(16 << 20);
        let (meta, meta_size) = StoredMeta::new(meta)?;
        Ok(Box::new(Miss {
            store: self,
            meta,
            meta_size,
            body: BytesMut::with_capacity(expected),
            primary: key.primary_bin(),
            combined: key.combined_bin(),
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let Some(key) = target_key(target) else {
            return Ok(PurgeOutcome::NotFound);
        };
        match self.objects.remove(&key.combined_bin()) {
            Some(e) => {
                self.forget(&e);
                Ok(PurgeOutcome::Purged(None))
            }
            None => Ok(PurgeOutcome::NotFound),
        }
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let Some(old) = self.lookup_bin(&key.combined_bin()) else {
            return Ok(false);
        };
        let (meta, meta_size) = StoredMeta::new(meta)?;
        let size = old.body.len() + meta_size + ENTRY_OVERHEAD;
        self.insert(Entry {
            meta,
            body: old.body.clone(),
            primary: old.primary,
            combined: old.combined,
            size,
        });
        Ok(true)
    }

    fn support_streaming_partial_write(&self) -> bool {
        false
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u32, size: usize) -> Entry {
        let mut primary = [0u8; 16];
        primary[..4].copy_from_slice(&i.to_be_bytes());
        Entry {
            meta: StoredMeta::Serialized(vec![0; 100], vec![0; 200]),
            body: Bytes::from(vec![7u8; size]),
            primary,
            combined: primary,
            size: size + 300 + ENTRY_OVERHEAD,
        }
    }

    fn meta(created: std::time::SystemTime) -> CacheMeta {
        let mut h = pingora_http::ResponseHeader::build(200, None).unwrap();
        h.insert_header("Content-Type", "text/plain").unwrap();
        h.insert_header("X-Mixed-Case", "v1").unwrap();
        h.append_header("set-thing", "a").unwrap();
        h.append_header("set-thing", "b").unwrap();
        h.insert_header("Content-Length", "5").unwrap();
        CacheMeta::new(
            created + std::time::Duration::from_secs(60),
            created,
            10,
            20,
            h,
        )
    }

    fn serialized(m: &CacheMeta) -> (Vec<u8>, Vec<u8>) {
        m.serialize().unwrap()
    }

    #[test]
    fn a_stored_meta_comes_back_identical() {
        let now = std::time::SystemTime::now();
        let plain = meta(now);
        let mut varied = meta(now);
        varied.set_variance([7u8; 16]);
        varied.set_epoch_override(now - std::time::Duration::from_secs(5));
        for m in [plain, varied] {
            let (stored, size) = StoredMeta::new(&m).unwrap();
            assert!(matches!(stored, StoredMeta::Decoded(_)));
            assert!(size > 100, "{size}");
            for _ in 0..2 {
                let back = stored.to_meta().unwrap();
                assert_eq!(serialized(&back), serialized(&m));
                assert_eq!(back.variance(), m.variance());
                let names: Vec<String> = back
                    .response_header()
                    .case_header_iter()
                    .map(|(k, _)| String::from_utf8_lossy(k.as_slice()).into_owned())
                    .collect();
                assert_eq!(
                    names,
                    [
                        "Content-Type",
                        "X-Mixed-Case",
                        "set-thing",
                        "set-thing",
                        "Content-Length"
                    ]
                );
                // A hit's copy has room for the headers a hit adds.
                let h = back.response_header();
                assert!(h.headers.capacity() >= h.headers.len() + HIT_HEADERS);
                assert_eq!(h.status, 200);
            }
        }
    }

    /// A hit sees what decoding the stored meta gives (Pingora's own storage hands out that),
    /// room or not: status, version, reason phrase and every field with its case, in order.
    #[test]
    fn the_room_keeps_status_version_reason_and_every_field() {
        let now = std::time::SystemTime::now();
        let fields = |h: &ResponseHeader| -> Vec<(String, String)> {
            h.case_header_iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(k.as_slice()).into_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect()
        };
        for (version, reason) in [(false, false), (true, false), (false, true)] {
            let mut h = ResponseHeader::build(203, None).unwrap();
            if version {
                h.set_version(http::Version::HTTP_10);
            }
            if reason {
                h.set_reason_phrase(Some("Fine Indeed")).unwrap();
            }
            h.append_header("X-A", "1").unwrap();
            h.append_header("x-a", "2").unwrap();
            h.append_header("Vary", "Accept").unwrap();
            let m = CacheMeta::new(now + std::time::Duration::from_secs(5), now, 0, 0, h);
            let (internal, header) = serialized(&m);
            let pingora = CacheMeta::deserialize(&internal, &header).unwrap();
            let want = pingora.response_header();
            let (stored, _) = StoredMeta::new(&m).unwrap();
            assert!(matches!(stored, StoredMeta::Decoded(_)));
            let back = stored.to_meta().unwrap();
            let got = back.response_header();
            assert_eq!(got.status, want.status);
            assert_eq!(got.version, want.version);
            assert_eq!(got.get_reason_phrase(), want.get_reason_phrase());
            assert_eq!(fields(got), fields(want));
            assert_eq!(fields(got).len(), 3);
            assert!(got.headers.capacity() >= got.headers.len() + HIT_HEADERS);
        }
    }

    #[test]
    fn a_revalidated_meta_stays_serialized_and_keeps_its_times() {
        let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(100);
        let mut m = meta(long_ago);
        m.update_freshness(
            std::time::SystemTime::now() + std::time::Duration::from_secs(60),
            1,
            2,
        );
        let (stored, _) = StoredMeta::new(&m).unwrap();
        assert!(matches!(stored, StoredMeta::Serialized(..)));
        let back = stored.to_meta().unwrap();
        assert_eq!(serialized(&back), serialized(&m));
        assert!(back.updated() > back.created());
    }

    #[test]
    fn never_holds_more_than_the_budget() {
        let store = MemoryStore::new(4 << 20);
        for i in 0..400 {
            store.insert(entry(i, 100 * 1024));
            assert!(
                store.held_bytes() <= 4 << 20,
                "held {} after {i} inserts",
                store.held_bytes()
            );
        }
        assert!(store.entries() >= 30, "{} entries", store.entries());
    }
}
