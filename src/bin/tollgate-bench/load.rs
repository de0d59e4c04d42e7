//! `tollgate-bench load`: the closed-loop load generator (plain or TLS, keep-alive, one request
//! per connection, or pipelined).

use super::{content_length, runtime};
use hdrhistogram::Histogram;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct LoadPlan {
    pub target: SocketAddr,
    /// The request, `pipeline` times over.
    pub request: Arc<[u8]>,
    pub pipeline: usize,
    /// A new connection per request.
    pub close: bool,
    pub tls: Option<Tls>,
    pub connections: usize,
    pub threads: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

/// The TLS client side: rustls, TLS 1.3 only, no session resumption.
pub struct Tls {
    connector: tokio_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
}

pub fn tls_client(ca: Option<&std::path::Path>, server_name: &str) -> Result<Option<Tls>, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    let Some(ca) = ca else { return Ok(None) };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate", ca.display()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Every handshake a full one: the bench measures the server's handshake cost.
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| format!("server name {server_name}: {e}"))?;
    Ok(Some(Tls {
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        name,
    }))
}

/// A load connection: plain TCP or TLS over it.
trait Conn: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Conn for T {}

async fn connect(plan: &LoadPlan) -> Result<Box<dyn Conn>, String> {
    let stream = TcpStream::connect(plan.target)
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    match &plan.tls {
        None => Ok(Box::new(stream)),
        Some(tls) => {
            let stream = tls
                .connector
                .connect(tls.name.clone(), stream)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Box::new(stream))
        }
    }
}

#[derive(Default)]
struct Tally {
    requests: u64,
    errors: u64,
    non_2xx: u64,
}

/// Read what arrives into `buf` after its first `filled` bytes; `closed` is the error at EOF.
async fn read_more<S: tokio::io::AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
    buf: &mut [u8],
    filled: &mut usize,
    closed: &str,
) -> Result<(), String> {
    let n = stream
        .read(&mut buf[*filled..])
        .await
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Err(closed.to_string());
    }
    *filled += n;
    Ok(())
}

/// Read one response (status line, headers, `Content-Length` body); returns the status.
pub async fn read_response<S: tokio::io::AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    filled: &mut usize,
) -> Result<u16, String> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf[..*filled]) {
            Ok(httparse::Status::Complete(head)) => {
                let status = resp.code.unwrap_or(0);
                let len = content_length(resp.headers).ok_or("response without Content-Length")?;
                let total = head + len;
                if buf.len() < total {
                    buf.resize(total, 0);
                }
                while *filled < total {
                    read_more(stream, buf, filled, "connection closed mid-response").await?;
                }
                buf.copy_within(total..*filled, 0);
                *filled -= total;
                return Ok(status);
            }
            Ok(httparse::Status::Partial) => {
                if *filled == buf.len() {
                    buf.resize(buf.len() * 2, 0);
                }
                read_more(stream, buf, filled, "connection closed").await?;
            }
            Err(e) => return Err(format!("bad response: {e}")),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 60 s, three significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| Histogram::new(3).unwrap())
}

/// Write the plan's request(s) and read their answers: the statuses, in order.
async fn exchange(
    stream: &mut dyn Conn,
    plan: &LoadPlan,
    buf: &mut Vec<u8>,
    filled: &mut usize,
    statuses: &mut Vec<u16>,
) -> Result<(), String> {
    statuses.clear();
    stream
        .write_all(&plan.request)
        .await
        .map_err(|e| e.to_string())?;
    for _ in 0..plan.pipeline {
        statuses.push(read_response(stream, buf, filled).await?);
    }
    Ok(())
}

/// The first failure of a connection is printed (a wrong CA or a refusing server shows at once
/// instead of as a run without requests); later ones are only counted.
fn report_once(reported: &mut bool, e: &str) {
    if !*reported {
        *reported = true;
        eprintln!("tollgate-bench load: {e}");
    }
}

async fn connection(
    plan: Arc<LoadPlan>,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> (Tally, Histogram<u64>) {
    let mut tally = Tally::default();
    let mut hist = new_histogram();
    let mut buf = vec![0u8; 4096];
    let mut statuses = Vec::with_capacity(plan.pipeline);
    let mut reported = false;
    'reconnect: while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let mut stream = match connect(&plan).await {
            Ok(s) => s,
            Err(e) => {
                report_once(&mut reported, &e);
                if measuring.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                    tally.errors += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let mut filled = 0usize;
        // With `close`, a request's time includes its connection (and TLS handshake); a
        // kept-alive connection's first request is timed from when it is sent.
        let mut start = plan.close.then_some(start);
        while !stop.load(Ordering::Relaxed) {
            let start = start.take().unwrap_or_else(Instant::now);
            let result = exchange(&mut *stream, &plan, &mut buf, &mut filled, &mut statuses).await;
            let counted = measuring.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed);
            if let Err(e) = result {
                report_once(&mut reported, &e);
                if counted {
                    tally.errors += 1;
                }
                // A server that accepts and then closes must not make this spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue 'reconnect;
            }
            if counted {
                let us = start.elapsed().as_micros().max(1) as u64;
                for status in &statuses {
                    tally.requests += 1;
                    if !(200..300).contains(status) {
                        tally.non_2xx += 1;
                    }
                    let _ = hist.record(us.min(60_000_000));
                }
            }
            if plan.close {
                // The server closes after its answer; close this side too (TLS: close_notify).
                let _ = stream.shutdown().await;
                continue 'reconnect;
            }
        }
    }
    (tally, hist)
}

pub fn load(plan: LoadPlan) -> Result<(), String> {
    let plan = Arc::new(plan);
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for t in 0..plan.threads {
        let conns = (plan.connections + plan.threads - 1 - t) / plan.threads;
        let (plan, measuring, stop) = (plan.clone(), measuring.clone(), stop.clone());
        workers.push(std::thread::spawn(move || {
            let rt = runtime().map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let tasks: Vec<_> = (0..conns)
                    .map(|_| {
                        tokio::spawn(connection(plan.clone(), measuring.clone(), stop.clone()))
                    })
                    .collect();
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await.map_err(|e| e.to_string())?);
                }
                Ok::<_, String>(out)
            })
        }));
    }
    std::thread::sleep(plan.warmup);
    measuring.store(true, Ordering::Relaxed);
    println!("measuring");
    let _ = std::io::stdout().flush();
    let started = Instant::now();
    std::thread::sleep(plan.duration);
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    println!("done");
    let _ = std::io::stdout().flush();

    let mut total = Tally::default();
    let mut hist = new_histogram();
    for w in workers {
        let results = w
            .join()
            .map_err(|_| "a load thread panicked".to_string())??;
        for (t, h) in results {
            total.requests += t.requests;
            total.errors += t.errors;
            total.non_2xx += t.non_2xx;
            let _ = hist.add(&h);
        }
    }
    let secs = elapsed.as_secs_f64();
    let summary = serde_json::json!({
        "requests": total.requests,
        "errors": total.errors,
        "non_2xx": total.non_2xx,
        "seconds": secs,
        "rps": total.requests as f64 / secs,
        "latency_us": {
            "p50": hist.value_at_quantile(0.50),
            "p99": hist.value_at_quantile(0.99),
            "p999": hist.value_at_quantile(0.999),
            "max": hist.max(),
        },
        "connections": plan.connections,
    });
    println!("{summary}");
    Ok(())
}
