//! The JSON access log: one line per request, handed over a bounded channel to a writer thread
//! (so a slow disk never stalls a worker thread). When the writer falls behind by more than the
//! channel holds, lines are dropped and counted (`tollgate_access_log_dropped_total`), never
//! waited for. The file is opened in append mode, so `logrotate`'s `copytruncate` works.

use serde::Serialize;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

/// One access log line.
#[derive(Debug, Serialize)]
pub struct Entry {
    pub time: String,
    pub request_id: String,
    pub client_ip: Option<String>,
    pub method: String,
    /// The canonical host the request was routed on.
    pub host: Option<String>,
    /// The canonical path the request was routed on (the request target, for a request
    /// refused before it could be read).
    pub path: String,
    /// The path as the client sent it, when it differs from `path`.
    pub raw_path: Option<String>,
    /// The `Host` (or absolute-form authority) as the client sent it, when it differs from
    /// `host`.
    pub raw_host: Option<String>,
    pub status: u16,
    pub bytes_sent: u64,
    pub duration_ms: f64,
    pub route: Option<String>,
    pub upstream: Option<String>,
    pub peer: Option<String>,
    pub upstream_status: Option<u16>,
    pub consumer: Option<String>,
    pub cache_status: Option<&'static str>,
    pub error: Option<String>,
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
        }))
    }

    fn start(&self) -> Option<SyncSender<Entry>> {
        let mut out = self.out.lock().ok()?.take()?;
        let (tx, rx) = sync_channel::<Entry>(QUEUE);
        let pending = self.pending.clone();
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
