//! The JSON access log: one line per request, handed over a bounded channel to a writer thread
//! (so a slow disk never stalls a worker thread). When the writer falls behind by more than the
//! channel holds, lines are dropped and counted (`tollgate_access_log_dropped_total`), never
//! waited for. The file is opened in append mode, so `logrotate`'s `copytruncate` works.

use http::{HeaderValue, Method};
use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

/// One access log line. It borrows nothing from the request and allocates once per request
/// at most: names of routes, pools and consumers are shared (`Arc<str>`), addresses, method,
/// time and status are plain values, and the request's own strings share one buffer
/// ([`Strings`]). The line is formatted by the writer thread.
#[derive(Debug)]
pub struct Entry {
    pub time: SystemTime,
    pub request_id: HeaderValue,
    pub client_ip: Option<IpAddr>,
    /// `None` when the request line could not be read (logged as `-`).
    pub method: Option<Method>,
    /// The canonical host and path the request was routed on, and what the client sent.
    pub strings: Strings,
    pub status: u16,
    pub bytes_sent: u64,
    pub duration_ms: f64,
    pub route: Option<Arc<str>>,
    pub upstream: Option<Arc<str>>,
    pub peer: Option<SocketAddr>,
    pub upstream_status: Option<u16>,
    pub consumer: Option<Arc<str>>,
    pub cache_status: Option<&'static str>,
    pub error: Option<&'static str>,
}

/// A request's host and path in canonical form, and the raw ones when they differ, in one
/// buffer.
#[derive(Debug, Default)]
pub struct Strings {
    buf: String,
    /// Byte ranges of host, path, raw path and raw host in `buf`.
    spans: [Option<(u32, u32)>; 4],
}

impl Strings {
    /// `host` and `path` as routed (the request target, for a request refused before it could
    /// be read), `raw_path` and `raw_host` as the client sent them when they differ.
    pub fn new(
        host: Option<&str>,
        path: &str,
        raw_path: Option<&str>,
        raw_host: Option<&str>,
    ) -> Strings {
        let parts = [host, Some(path), raw_path, raw_host];
        let len = parts.iter().flatten().map(|p| p.len()).sum();
        let mut out = Strings {
            buf: String::with_capacity(len),
            spans: [None; 4],
        };
        for (i, part) in parts.iter().enumerate() {
            if let Some(p) = part {
                let start = out.buf.len() as u32;
                out.buf.push_str(p);
                out.spans[i] = Some((start, out.buf.len() as u32));
            }
        }
        out
    }

    fn get(&self, i: usize) -> Option<&str> {
        self.spans[i].map(|(a, b)| &self.buf[a as usize..b as usize])
    }

    /// The canonical host.
    pub fn host(&self) -> Option<&str> {
        self.get(0)
    }

    /// The canonical path.
    pub fn path(&self) -> &str {
        self.get(1).unwrap_or("")
    }
}

impl Serialize for Entry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Entry", 18)?;
        let time = humantime::format_rfc3339_millis(self.time).to_string();
        m.serialize_field("time", &time)?;
        m.serialize_field("request_id", self.request_id.to_str().unwrap_or("-"))?;
        m.serialize_field("client_ip", &self.client_ip.map(|ip| ip.to_string()))?;
        m.serialize_field("method", self.method.as_ref().map_or("-", Method::as_str))?;
        m.serialize_field("host", &self.strings.host())?;
        m.serialize_field("path", self.strings.path())?;
        m.serialize_field("raw_path", &self.strings.get(2))?;
        m.serialize_field("raw_host", &self.strings.get(3))?;
        m.serialize_field("status", &self.status)?;
        m.serialize_field("bytes_sent", &self.bytes_sent)?;
        m.serialize_field("duration_ms", &self.duration_ms)?;
        m.serialize_field("route", &self.route.as_deref())?;
        m.serialize_field("upstream", &self.upstream.as_deref())?;
        m.serialize_field("peer", &self.peer.map(|p| p.to_string()))?;
        m.serialize_field("upstream_status", &self.upstream_status)?;
        m.serialize_field("consumer", &self.consumer.as_deref())?;
        m.serialize_field("cache_status", &self.cache_status)?;
        m.serialize_field("error", &self.error)?;
        m.end()
    }
}

/// Where lines go.
pub struct AccessLog {
    /// The destination, until the writer thread takes it.
    out: Mutex<Option<Box<dyn Write + Send>>>,
    /// The writer thread's queue, started on first use: a thread started before Pingora
    /// daemonizes would not survive the fork.
    tx: OnceLock<Option<SyncSender<Entry>>>,
    dropped: prometheus::IntCounter,
    /// Lines queued and not yet written.
    pending: Arc<AtomicUsize>,
    /// The file (`None`: standard output).
    path: Option<std::path::PathBuf>,
    /// Set to reopen the file before the next write.
    reopen: Arc<AtomicBool>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessLog")
    }
}

const QUEUE: usize = 65_536;

impl AccessLog {
    /// Open `path` (or `stdout`); the writer thread starts with the first line.
    pub fn open(path: &str, dropped: prometheus::IntCounter) -> std::io::Result<Arc<AccessLog>> {
        let out: Box<dyn Write + Send> = if path == "stdout" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )
        };
        Ok(Arc::new(AccessLog {
            out: Mutex::new(Some(out)),
            tx: OnceLock::new(),
            dropped,
            pending: Arc::new(AtomicUsize::new(0)),
            path: (path != "stdout").then(|| path.into()),
            reopen: Arc::new(AtomicBool::new(false)),
        }))
    }

    /// Reopen the file before the next line is written (`SIGUSR1`, after `logrotate` moved it
    /// away): lines go to a new file of the same name.
    pub fn reopen(&self) {
        if self.path.is_some() {
            self.reopen.store(true, Ordering::Release);
        }
    }

    fn start(&self) -> Option<SyncSender<Entry>> {
        let mut out = self.out.lock().ok()?.take()?;
        let (tx, rx) = sync_channel::<Entry>(QUEUE);
        let pending = self.pending.clone();
        let (path, reopen) = (self.path.clone(), self.reopen.clone());
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut buf = Vec::with_capacity(64 * 1024);
                while let Ok(first) = rx.recv() {
                    // Write what is queued in one go.
                    let mut next = Some(first);
                    let mut lines = 0;
                    while let Some(e) = next {
                        lines += 1;
                        if serde_json::to_writer(&mut buf, &e).is_ok() {
                            buf.push(b'\n');
                        }
                        next = if buf.len() < 60 * 1024 {
                            rx.try_recv().ok()
                        } else {
                            None
                        };
                    }
                    if let (Some(p), true) = (&path, reopen.swap(false, Ordering::AcqRel)) {
                        match std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(p)
                        {
                            Ok(f) => out = Box::new(f),
                            Err(e) => log::error!(
                                "access log: cannot reopen {}: {e}; writing on to the old file",
                                p.display()
                            ),
                        }
                    }
                    if let Err(e) = out.write_all(&buf).and_then(|_| out.flush()) {
                        log::error!("access log: write failed: {e}");
                    }
                    buf.clear();
                    pending.fetch_sub(lines, Ordering::AcqRel);
                }
            });
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                log::error!("access log: cannot start the writer thread: {e}");
                None
            }
        }
    }

    /// Queue a line; never blocks.
    pub fn write(&self, e: Entry) {
        let Some(tx) = self.tx.get_or_init(|| self.start()) else {
            self.dropped.inc();
            return;
        };
        self.pending.fetch_add(1, Ordering::AcqRel);
        match tx.try_send(e) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                self.dropped.inc();
            }
        }
    }

    /// Wait (at most `limit`) until every queued line is written.
    pub fn flush(&self, limit: std::time::Duration) {
        let deadline = std::time::Instant::now() + limit;
        while self.pending.load(Ordering::Acquire) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_one_json_object_with_every_field() {
        let e = Entry {
            time: SystemTime::UNIX_EPOCH,
            request_id: HeaderValue::from_static("abc"),
            client_ip: Some("192.0.2.1".parse().unwrap()),
            method: Some(Method::GET),
            strings: Strings::new(Some("api.test"), "/a/b", Some("/a//b"), None),
            status: 200,
            bytes_sent: 12,
            duration_ms: 1.5,
            route: Some(Arc::from("r")),
            upstream: Some(Arc::from("u")),
            peer: Some("127.0.0.1:8080".parse().unwrap()),
            upstream_status: Some(200),
            consumer: None,
            cache_status: Some("HIT"),
            error: None,
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["client_ip"], "192.0.2.1");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["host"], "api.test");
        assert_eq!(v["path"], "/a/b");
        assert_eq!(v["raw_path"], "/a//b");
        assert!(v["raw_host"].is_null() && v["consumer"].is_null() && v["error"].is_null());
        assert_eq!(v["peer"], "127.0.0.1:8080");
        assert_eq!(v["route"], "r");
        assert_eq!(v["cache_status"], "HIT");
        assert_eq!(v.as_object().unwrap().len(), 18);
    }
}
