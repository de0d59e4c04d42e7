//! The load bench's moving parts (`benches/load.py` drives them):
//!
//! - `upstream`: a fast HTTP/1.1 server answering every request with the same fixed response
//!   (1 KiB by default, cacheable), keep-alive, on one thread;
//! - `load`: a closed-loop HTTP/1.1 load generator: N keep-alive connections, each sending its
//!   next request as soon as the previous answer is read; after a warm-up it prints `measuring`,
//!   at the end `done`, then a JSON summary (requests, errors, requests/s, latency percentiles).
//!   `--pipeline N` writes N requests at once and then reads the N answers; `--tls-ca` speaks
//!   TLS 1.3 (rustls, trusting that certificate, no session resumption, ALPN `http/1.1`);
//!   `--close` makes each request a new connection (`Connection: close`): with `--tls-ca`, a
//!   full handshake per request;
//! - `idle`: opens N keep-alive connections, sends one request on each, prints `ready` and holds
//!   them open until its standard input closes.

use clap::{Parser, Subcommand};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod load;
use load::{load, read_response, tls_client, LoadPlan};

#[derive(Parser)]
#[command(
    name = "tollgate-bench",
    version,
    about = "Upstream and load generator of the load bench"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a fixed response on every request.
    Upstream {
        #[arg(long)]
        listen: SocketAddr,
        /// Response body size in bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Milliseconds to wait before answering each batch of requests (a slow service).
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
    /// Closed-loop load: keep-alive connections, one request in flight on each.
    Load {
        /// Target `HOST:PORT`.
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value = "/")]
        path: String,
        /// Extra request header `Name: value`; repeatable.
        #[arg(long = "header")]
        headers: Vec<String>,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// OS threads driving the connections.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Seconds of warm-up, not measured.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Seconds measured.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Requests written at once on a connection before their answers are read.
        #[arg(long, default_value_t = 1)]
        pipeline: usize,
        /// One request per connection (`Connection: close`, then a new connection).
        #[arg(long)]
        close: bool,
        /// Speak TLS 1.3, trusting this PEM certificate (no session resumption).
        #[arg(long)]
        tls_ca: Option<std::path::PathBuf>,
        /// The name sent in SNI and checked in the certificate.
        #[arg(long, default_value = "localhost")]
        server_name: String,
    },
    /// Hold idle keep-alive connections.
    Idle {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    raise_nofile();
    let result = match cli.command {
        Command::Upstream {
            listen,
            size,
            delay_ms,
        } => upstream(listen, size, Duration::from_millis(delay_ms)),
        Command::Load {
            target,
            path,
            headers,
            connections,
            threads,
            warmup,
            duration,
            pipeline,
            close,
            tls_ca,
            server_name,
        } => tls_client(tls_ca.as_deref(), &server_name).and_then(|tls| {
            let mut headers = headers;
            if close {
                headers.push("Connection: close".into());
            }
            let pipeline = if close { 1 } else { pipeline.max(1) };
            load(LoadPlan {
                target,
                request: request_bytes(target, &path, &headers)
                    .repeat(pipeline)
                    .into(),
                pipeline,
                close,
                tls,
                connections: connections.max(1),
                threads: threads.max(1),
                warmup: Duration::from_secs_f64(warmup.max(0.0)),
                duration: Duration::from_secs_f64(duration.max(0.1)),
            })
        }),
        Command::Idle {
            target,
            path,
            connections,
        } => idle(target, request_bytes(target, &path, &[]), connections),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Allow as many open files as the hard limit permits (10,000 idle connections need them).
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn request_bytes(target: SocketAddr, path: &str, headers: &[String]) -> Arc<[u8]> {
    let mut r = format!("GET {path} HTTP/1.1\r\nUser-Agent: tollgate-bench\r\n");
    if !headers
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("host:"))
    {
        r.push_str(&format!("Host: {target}\r\n"));
    }
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    Arc::from(r.into_bytes().into_boxed_slice())
}

/// The `Content-Length` of a parsed message, if it has a valid one.
fn content_length(headers: &[httparse::Header]) -> Option<usize> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

// ---------------------------------------------------------------------------------------------
// upstream

fn upstream(listen: SocketAddr, size: usize, delay: Duration) -> Result<(), String> {
    let body: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let mut resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {size}\r\nCache-Control: public, max-age=3600\r\n\r\n"
    )
    .into_bytes();
    resp.extend_from_slice(&body);
    let resp: Arc<[u8]> = Arc::from(resp.into_boxed_slice());
    let rt = runtime().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        println!("listening on {listen}");
        let _ = std::io::stdout().flush();
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve(stream, resp.clone(), delay));
        }
    })
}

/// Answer each complete request on the connection (bodies by `Content-Length` are skipped).
async fn serve(mut stream: TcpStream, resp: Arc<[u8]>, delay: Duration) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut filled = 0usize;
    loop {
        // Parse every complete request in the buffer; answer them in one write.
        let mut answers = 0usize;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf[..filled]) {
                Ok(httparse::Status::Complete(head)) => {
                    let body = content_length(req.headers).unwrap_or(0);
                    let total = head + body;
                    if filled < total {
                        break;
                    }
                    buf.copy_within(total..filled, 0);
                    filled -= total;
                    answers += 1;
                }
                Ok(httparse::Status::Partial) => break,
                Err(_) => return,
            }
        }
        if answers > 0 && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        for _ in 0..answers {
            if stream.write_all(&resp).await.is_err() {
                return;
            }
        }
        if filled == buf.len() {
            return;
        }
        match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// idle

fn idle(target: SocketAddr, request: Arc<[u8]>, connections: usize) -> Result<(), String> {
    let rt = runtime().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let mut held = Vec::with_capacity(connections);
        let mut buf = vec![0u8; 4096];
        for i in 0..connections {
            let mut stream = TcpStream::connect(target)
                .await
                .map_err(|e| format!("connection {i}: {e}"))?;
            stream
                .write_all(&request)
                .await
                .map_err(|e| format!("connection {i}: {e}"))?;
            let mut filled = 0;
            let status = read_response(&mut stream, &mut buf, &mut filled)
                .await
                .map_err(|e| format!("connection {i}: {e}"))?;
            if status != 200 {
                return Err(format!("connection {i}: status {status}"));
            }
            held.push(stream);
        }
        println!("ready {}", held.len());
        let _ = std::io::stdout().flush();
        // Hold until told to stop (standard input closes).
        let mut stdin = tokio::io::stdin();
        let mut sink = [0u8; 64];
        while let Ok(n) = stdin.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
        drop(held);
        Ok(())
    })
}
