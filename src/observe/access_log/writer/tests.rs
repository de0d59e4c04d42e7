use super::super::tests::entry;
use super::*;
use std::sync::mpsc;

/// Each write first says so (the sender), then waits for the word to go on (the receiver).
type Gate = (mpsc::SyncSender<()>, Arc<Mutex<mpsc::Receiver<()>>>);

/// A destination the test can read (and stop or break).
#[derive(Clone, Default)]
struct Sink {
    text: Arc<Mutex<Vec<u8>>>,
    gate: Option<Gate>,
    broken: bool,
    /// The next write takes this many bytes, and the one after it fails (a disk that filled
    /// in the middle of a write).
    partial: Arc<Mutex<Option<usize>>>,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some((entered, go)) = &self.gate {
            let _ = entered.send(());
            let _ = go.lock().unwrap().recv();
        }
        if self.broken {
            return Err(std::io::Error::other("no space left on device"));
        }
        let mut partial = self.partial.lock().unwrap();
        match *partial {
            Some(0) => {
                *partial = None;
                return Err(std::io::Error::other("no space left on device"));
            }
            Some(n) => {
                *partial = Some(0);
                let n = n.min(buf.len());
                self.text.lock().unwrap().extend_from_slice(&buf[..n]);
                return Ok(n);
            }
            None => {}
        }
        self.text.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_to(sink: &Sink, limit: Option<usize>) -> (AccessLog, prometheus::IntCounter) {
    log_as(sink, LogFormat::Json, limit)
}

fn log_as(
    sink: &Sink,
    format: LogFormat,
    limit: Option<usize>,
) -> (AccessLog, prometheus::IntCounter) {
    let dropped = prometheus::IntCounter::new("dropped", "dropped").unwrap();
    let log = AccessLog::new(
        Box::new(sink.clone()),
        None,
        format,
        true,
        dropped.clone(),
        limit,
    );
    (log, dropped)
}

fn lines(sink: &Sink) -> Vec<serde_json::Value> {
    let text = sink.text.lock().unwrap().clone();
    let text = String::from_utf8(text).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn lines_from_many_threads_all_arrive_whole() {
    let sink = Sink::default();
    let (log, dropped) = log_to(&sink, None);
    let log = Arc::new(log);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..2_000 {
                    let id = format!("{t}-{i}");
                    let mut e = entry();
                    e.request_id = id.as_bytes();
                    log.write(&e);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    log.flush(Duration::from_secs(10));
    let got = lines(&sink);
    assert_eq!(got.len(), 16_000);
    assert_eq!(dropped.get(), 0);
    let mut ids: Vec<String> = got
        .iter()
        .map(|l| l["request_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 16_000);
    // Each thread's lines keep their order.
    let order: Vec<usize> = got
        .iter()
        .filter_map(|l| {
            let id = l["request_id"].as_str()?;
            id.strip_prefix("3-")?.parse().ok()
        })
        .collect();
    assert_eq!(order, (0..2_000).collect::<Vec<_>>());
}

#[test]
fn a_stuck_writer_never_stalls_a_thread_and_what_does_not_fit_is_counted() {
    let (entered_tx, entered) = mpsc::sync_channel(1_000);
    let (go, go_rx) = mpsc::sync_channel(1_000);
    let sink = Sink {
        gate: Some((entered_tx, Arc::new(Mutex::new(go_rx)))),
        ..Sink::default()
    };
    let (log, dropped) = log_to(&sink, Some(4_096));
    let log = Arc::new(log);
    log.write(&entry());
    // The writer took the first line and is stuck writing it.
    entered.recv_timeout(Duration::from_secs(10)).unwrap();
    let (done_tx, done) = mpsc::channel();
    let writer = log.clone();
    std::thread::spawn(move || {
        for _ in 0..100 {
            writer.write(&entry());
        }
        let _ = done_tx.send(());
    });
    // All hundred lines were handled while the disk was stuck.
    done.recv_timeout(Duration::from_secs(10)).unwrap();
    let line = {
        let mut v = Vec::new();
        entry().write_line(&mut v, &mut line::Clock::default());
        v.len() + 1
    };
    // A line is taken while the buffer keeps room for one more of `LINE` bytes.
    let (mut len, mut kept) = (0, 0);
    while len + LINE <= 4_096 {
        len += line;
        kept += 1;
    }
    assert!(kept > 0 && kept < 100);
    assert_eq!(dropped.get(), 100 - kept as u64);
    // Unstuck: what was kept is written.
    for _ in 0..1_000 {
        let _ = go.send(());
    }
    log.flush(Duration::from_secs(10));
    assert_eq!(lines(&sink).len(), 1 + kept);
}

#[test]
fn lines_a_failed_write_loses_are_counted() {
    let sink = Sink {
        broken: true,
        ..Sink::default()
    };
    let (log, dropped) = log_to(&sink, None);
    for _ in 0..10 {
        log.write(&entry());
    }
    log.flush(Duration::from_secs(10));
    assert_eq!(dropped.get(), 10);
    assert!(lines(&sink).is_empty());
}

#[test]
fn ecs_lines_and_a_quiet_writer_woken_by_the_next_line() {
    let sink = Sink::default();
    let (log, _) = log_as(&sink, LogFormat::Ecs, None);
    log.write(&entry());
    log.flush(Duration::from_secs(10));
    // Quiet now (the writer parks once it finds nothing twice): the next line wakes it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.shared.idle.load(Ordering::Relaxed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(log.shared.idle.load(Ordering::Relaxed));
    log.write(&entry());
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines(&sink).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let got = lines(&sink);
    assert_eq!(got.len(), 2);
    assert_eq!(got[1]["http.request.method"], "GET");
}

#[test]
fn a_write_that_fails_midway_counts_the_lines_it_lost_and_the_next_line_stands_alone() {
    let sink = Sink {
        partial: Arc::new(Mutex::new(Some(10))),
        ..Sink::default()
    };
    let (log, dropped) = log_to(&sink, None);
    for _ in 0..3 {
        log.write(&entry());
    }
    log.flush(Duration::from_secs(10));
    for _ in 0..2 {
        log.write(&entry());
    }
    log.flush(Duration::from_secs(10));
    let text = String::from_utf8(sink.text.lock().unwrap().clone()).unwrap();
    let mut lines = text.lines();
    // Ten bytes of the first line, ended; then whole lines only.
    assert_eq!(lines.next().map(str::len), Some(10));
    let whole: Vec<serde_json::Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(whole.len() >= 2, "{text}");
    assert_eq!(whole.len() as u64 + dropped.get(), 5, "{text}");
}
