//! Where access-log lines go. A line is formatted on the thread that served the request, into a
//! buffer of that thread's own (one of a few, chosen once per thread; a thread only shares one
//! with others when there are more threads than buffers), under a lock nobody else takes but
//! the writer thread, for as long as it takes to swap the buffer for an empty one. The writer
//! thread writes what it took and, while lines keep coming, waits a little before the next
//! round, so under load it wakes every [`GATHER`] rather than once per line; when the log goes
//! quiet it sleeps until the next line wakes it, so a lone line is written at once (as nginx's
//! `access_log ... buffer= flush=`, but short).
//!
//! Nothing a request owns crosses threads: no line is queued as an object another thread
//! frees, and a worker never waits for the disk. The buffers share [`BUDGET`] bytes: while the
//! writer is stuck (a slow disk, a full pipe) lines that do not fit are dropped and counted
//! (`tollgate_access_log_dropped_total`), never waited for; lines a failed write loses (a full
//! disk) are counted the same way.

use super::{line, Ecs, Entry};
use crate::config::{AccessLogConfig, LogFormat};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

/// How long the writer lets lines gather after a write while lines keep coming.
const GATHER: Duration = Duration::from_millis(10);

/// The most bytes of lines all buffers hold together while the writer is behind, shared out
/// evenly (each buffer holds 1 to 4 MiB); the writer may hold as much again while it writes.
const BUDGET: usize = 64 << 20;

/// The room a line is given before it is formatted: a buffer's text stays within its limit
/// unless one line is longer than this.
const LINE: usize = 1024;

/// A buffer that grew past this (a burst, a stall) gives the rest back once written.
const KEEP: usize = 1 << 20;

/// The access log: the buffers, and the destination until the writer thread takes it.
pub struct AccessLog {
    shared: Arc<Shared>,
    /// The destination, until the writer thread (started with the first line: a thread
    /// started before Pingora daemonizes would not survive the fork) takes it.
    out: Mutex<Option<Box<dyn Write + Send>>>,
    /// Whether the writer thread runs.
    started: OnceLock<bool>,
    /// The file (`None`: standard output).
    path: Option<PathBuf>,
    /// How lines name their fields.
    format: LogFormat,
    /// Lines carry the query string.
    query: bool,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessLog")
    }
}

/// What the serving threads and the writer thread share.
struct Shared {
    buffers: Box<[Mutex<Buffer>]>,
    /// The most bytes a buffer holds (its share of [`BUDGET`]; smaller in tests).
    limit: usize,
    /// Lines the writer took out of the buffers and has not written yet.
    writing: AtomicUsize,
    /// The writer waits for a line: the next line wakes it.
    idle: AtomicBool,
    /// The writer thread, to wake it.
    writer: OnceLock<std::thread::Thread>,
    /// Reopen the file before the next write.
    reopen: AtomicBool,
    dropped: prometheus::IntCounter,
}

/// Lines formatted and not yet taken by the writer.
#[derive(Default)]
struct Buffer {
    text: Vec<u8>,
    lines: usize,
    /// The time's text of the last line this buffer got (see [`line::Clock`]).
    clock: line::Clock,
}

/// This thread's buffer, of `n`.
fn buffer_index(n: usize) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|i| *i) % n
}

impl AccessLog {
    /// Open the configured file (or `stdout`); the writer thread starts with the first line.
    pub fn open(
        config: &AccessLogConfig,
        dropped: prometheus::IntCounter,
    ) -> std::io::Result<Arc<AccessLog>> {
        let path = config.path.as_str();
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
        let path = (path != "stdout").then(|| path.into());
        Ok(Arc::new(AccessLog::new(
            out,
            path,
            config.format,
            config.query,
            dropped,
            None,
        )))
    }

    fn new(
        out: Box<dyn Write + Send>,
        path: Option<PathBuf>,
        format: LogFormat,
        query: bool,
        dropped: prometheus::IntCounter,
        limit: Option<usize>,
    ) -> AccessLog {
        // One buffer per thread on this machine, twice over (the worker threads are fewer).
        let n = std::thread::available_parallelism().map_or(16, |n| (2 * n.get()).max(16));
        let limit = limit.unwrap_or((BUDGET / n).clamp(1 << 20, 4 << 20));
        AccessLog {
            shared: Arc::new(Shared {
                buffers: (0..n).map(|_| Mutex::default()).collect(),
                limit,
                writing: AtomicUsize::new(0),
                idle: AtomicBool::new(false),
                writer: OnceLock::new(),
                reopen: AtomicBool::new(false),
                dropped,
            }),
            out: Mutex::new(Some(out)),
            started: OnceLock::new(),
            path,
            format,
            query,
        }
    }

    /// Whether lines carry the query string.
    pub fn logs_query(&self) -> bool {
        self.query
    }

    /// Reopen the file before the next line is written (`SIGUSR1`, after `logrotate` moved it
    /// away): lines go to a new file of the same name.
    pub fn reopen(&self) {
        if self.path.is_some() {
            self.shared.reopen.store(true, Ordering::Release);
        }
    }

    /// Format `e` as a line into this thread's buffer; never waits for the disk.
    pub fn write(&self, e: &Entry) {
        let shared = &*self.shared;
        if !*self.started.get_or_init(|| self.start()) {
            shared.dropped.inc();
            return;
        }
        let slot = &shared.buffers[buffer_index(shared.buffers.len())];
        let mut guard = match slot.lock() {
            Ok(guard) => guard,
            Err(poisoned) => {
                // A thread panicked while formatting (no known way): cut its half line off.
                let mut guard = poisoned.into_inner();
                let whole = guard
                    .text
                    .iter()
                    .rposition(|&c| c == b'\n')
                    .map_or(0, |i| i + 1);
                guard.text.truncate(whole);
                slot.clear_poison();
                guard
            }
        };
        let b = &mut *guard;
        if b.text.len() + LINE > shared.limit {
            drop(guard);
            shared.dropped.inc();
            return;
        }
        let at = b.text.len();
        let written = match self.format {
            LogFormat::Json => {
                e.write_line(&mut b.text, &mut b.clock);
                true
            }
            LogFormat::Ecs => serde_json::to_writer(&mut b.text, &Ecs(e)).is_ok(),
        };
        if !written {
            b.text.truncate(at);
            drop(guard);
            shared.dropped.inc();
            return;
        }
        b.text.push(b'\n');
        b.lines += 1;
        // Read under the lock: the writer sets `idle` before it looks at the buffers under
        // theirs, so either it sees this line or this sees `idle`.
        let wake = shared.idle.load(Ordering::Relaxed);
        drop(guard);
        if wake && shared.idle.swap(false, Ordering::AcqRel) {
            if let Some(t) = shared.writer.get() {
                t.unpark();
            }
        }
    }

    /// Wait (at most `limit`) until every line formatted so far is written.
    pub fn flush(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let shared = &*self.shared;
        loop {
            let buffered = shared
                .buffers
                .iter()
                .any(|b| b.lock().unwrap_or_else(PoisonError::into_inner).lines > 0);
            if !buffered && shared.writing.load(Ordering::Acquire) == 0 {
                return;
            }
            if Instant::now() >= deadline {
                return;
            }
            // Cut the writer's wait short.
            if let Some(t) = shared.writer.get() {
                t.unpark();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn start(&self) -> bool {
        let out = self
            .out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(out) = out else {
            return false;
        };
        let shared = Arc::downgrade(&self.shared);
        let path = self.path.clone();
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || run(shared, out, path));
        match spawned {
            Ok(handle) => {
                let _ = self.shared.writer.set(handle.thread().clone());
                true
            }
            Err(e) => {
                log::error!("access log: cannot start the writer thread: {e}");
                false
            }
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        // Write what is buffered; then the writer notices it is alone and ends.
        self.flush(Duration::from_secs(1));
        if let Some(t) = self.shared.writer.get() {
            t.unpark();
        }
    }
}

/// The writer thread: take the buffers' lines, write them, gather again; sleep when quiet.
fn run(shared: Weak<Shared>, mut out: Box<dyn Write + Send>, path: Option<PathBuf>) {
    // What was taken from each buffer: its text (the buffer got this one's empty text in
    // exchange) and its number of lines.
    let mut taken: Vec<(Vec<u8>, usize)> = Vec::new();
    let mut quiet = false;
    let mut failing = false;
    // The file ends in half a line (a write failed in the middle of one).
    let mut torn = false;
    loop {
        let Some(s) = shared.upgrade() else {
            return;
        };
        taken.resize_with(s.buffers.len(), Default::default);
        let mut lines = 0;
        for (slot, (text, n)) in s.buffers.iter().zip(taken.iter_mut()) {
            let mut b = slot.lock().unwrap_or_else(PoisonError::into_inner);
            if b.lines > 0 {
                std::mem::swap(&mut b.text, text);
                *n = std::mem::take(&mut b.lines);
                lines += *n;
                // Counted before the lock goes: `flush` sees the lines in one place or the
                // other.
                s.writing.fetch_add(*n, Ordering::AcqRel);
            }
        }
        if lines == 0 {
            if quiet {
                drop(s);
                // Until the next line (or the log's end) wakes it.
                std::thread::park();
                quiet = false;
            } else {
                // Look once more after saying so: a line formatted meanwhile wakes the park.
                s.idle.store(true, Ordering::Relaxed);
                quiet = true;
            }
            continue;
        }
        s.idle.store(false, Ordering::Relaxed);
        quiet = false;
        if let (Some(p), true) = (&path, s.reopen.swap(false, Ordering::AcqRel)) {
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
        let mut lost = 0;
        let mut error = None;
        for (text, n) in taken.iter_mut().filter(|(_, n)| *n > 0) {
            if torn && error.is_none() {
                // A failed write left half a line: end it, so the next line stands alone.
                torn = out.write_all(b"\n").is_err();
            }
            let (written, result) = write_some(&mut *out, text);
            if let Err(e) = result {
                // The lines not (wholly) written.
                lost += text[written..].iter().filter(|&&c| c == b'\n').count();
                torn |= written > 0 && text[written - 1] != b'\n';
                error = Some(e);
            }
            text.clear();
            if text.capacity() > KEEP {
                text.shrink_to(KEEP);
            }
            *n = 0;
        }
        if let Err(e) = out.flush() {
            error = Some(e);
        }
        match error {
            Some(e) => {
                s.dropped.inc_by(lost as u64);
                if !failing {
                    log::error!(
                        "access log: write failed: {e}; lines are dropped and counted \
                         (tollgate_access_log_dropped_total) until a write succeeds"
                    );
                    failing = true;
                }
            }
            None if failing => {
                log::warn!("access log: writing again");
                failing = false;
            }
            None => {}
        }
        s.writing.fetch_sub(lines, Ordering::AcqRel);
        drop(s);
        std::thread::park_timeout(GATHER);
    }
}

/// Write `text` to `out` as `write_all` does, saying how much was written when it fails.
fn write_some(out: &mut dyn Write, text: &[u8]) -> (usize, std::io::Result<()>) {
    let mut written = 0;
    while written < text.len() {
        match out.write(&text[written..]) {
            Ok(0) => return (written, Err(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Err(e)),
        }
    }
    (written, Ok(()))
}

#[cfg(test)]
mod tests;
