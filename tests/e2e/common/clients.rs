//! Raw HTTP/1.1 clients: send bytes, read responses (one, kept-alive, or pipelined), and
//! connect from other loopback addresses.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A response as the client saw it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    /// Whether the server closed the connection after this response.
    pub closed: bool,
}

impl Response {
    /// A response whose `closed` is what it announced (`Connection: close`), without waiting
    /// to see whether the server closes.
    fn announced(status: u16, headers: HashMap<String, String>, body: Vec<u8>) -> Response {
        let closed = headers
            .get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        Response {
            status,
            headers,
            body,
            closed,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Send `bytes` on a new connection to the gateway and read one response (no body is read
/// when the request is a HEAD).
pub fn send_raw(port: u16, bytes: &[u8]) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to gateway");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(bytes).expect("send");
    read_response_to(&mut s, bytes.starts_with(b"HEAD "))
}

/// Read one response from `s`; `closed` tells whether the server then closed the connection.
pub fn read_response(s: &mut TcpStream) -> Response {
    read_response_to(s, false)
}

/// Read one response from a kept-alive connection, without waiting to see whether it closes
/// (`closed` reports only a `Connection: close` answer).
pub fn read_keepalive_response(s: &mut TcpStream) -> Response {
    read_response_inner(s, false, false)
}

fn read_response_to(s: &mut TcpStream, head: bool) -> Response {
    read_response_inner(s, head, true)
}

/// The status, headers (names in lower case) and length of a complete response head at the
/// start of `buf`.
fn parse_head(buf: &[u8]) -> Option<(u16, HashMap<String, String>, usize)> {
    let mut hdrs = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut hdrs);
    let Ok(httparse::Status::Complete(n)) = resp.parse(buf) else {
        return None;
    };
    let headers = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    Some((resp.code.unwrap_or(0), headers, n))
}

fn read_response_inner(s: &mut TcpStream, head: bool, check_closed: bool) -> Response {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (status, headers, head_len) = loop {
        if let Some(head) = parse_head(&buf) {
            break head;
        }
        let n = s.read(&mut chunk).expect("read response head");
        assert!(
            n > 0,
            "connection closed before a response; got {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut rest = buf[head_len..].to_vec();
    let body = if head {
        Vec::new()
    } else if let Some(len) = headers.get("content-length") {
        let len: usize = len.trim().parse().expect("content-length");
        while rest.len() < len {
            let n = s.read(&mut chunk).expect("read body");
            assert!(n > 0, "connection closed mid-body");
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(len);
        rest
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        let mut body = Vec::new();
        loop {
            while !rest.windows(2).any(|w| w == b"\r\n") {
                let n = s.read(&mut chunk).expect("read chunk");
                assert!(n > 0);
                rest.extend_from_slice(&chunk[..n]);
            }
            let pos = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..pos]).unwrap().trim(), 16)
                .unwrap();
            rest.drain(..pos + 2);
            while rest.len() < size + 2 {
                let n = s.read(&mut chunk).expect("read chunk data");
                assert!(n > 0);
                rest.extend_from_slice(&chunk[..n]);
            }
            body.extend_from_slice(&rest[..size]);
            rest.drain(..size + 2);
            if size == 0 {
                break body;
            }
        }
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else {
        let _ = s.read_to_end(&mut rest);
        rest
    };
    if !check_closed {
        return Response::announced(status, headers, body);
    }
    // Did the server close? A closed socket reads 0 (or is reset); an open one times out.
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let closed = match s.read(&mut chunk) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    Response {
        status,
        headers,
        body,
        closed,
    }
}

/// Poll `cond` until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A TCP connection to the gateway's `port` on 127.0.0.1, made from the loopback address
/// `from` (any of 127.0.0.0/8), so that tests can play clients and proxies at other addresses.
pub fn connect_from(from: &str, port: u16) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let local: SocketAddr = format!("{from}:0").parse().expect("source address");
    sock.bind(&local.into()).expect("bind the source address");
    let remote = SocketAddr::from(([127, 0, 0, 1], port));
    sock.connect(&remote.into()).expect("connect to gateway");
    sock.into()
}

/// [`send_raw`] from the loopback address `from`.
pub fn send_raw_from(from: &str, port: u16, bytes: &[u8]) -> Response {
    let mut s = connect_from(from, port);
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(bytes).expect("send");
    read_response_to(&mut s, bytes.starts_with(b"HEAD "))
}

/// Reads responses one after another from one connection, keeping what arrived of the next
/// (for pipelined requests, whose answers may come in one read). Bodies must have a
/// `Content-Length`; `closed` reports a `Connection: close` answer.
pub struct Responses {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Responses {
    pub fn new(stream: TcpStream) -> Responses {
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        Responses {
            stream,
            buf: Vec::new(),
        }
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).expect("read response");
        assert!(
            n > 0,
            "connection closed before a response; got {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// The next response.
    pub fn next(&mut self) -> Response {
        loop {
            if let Some((status, headers, n)) = parse_head(&self.buf) {
                let len: usize = headers
                    .get("content-length")
                    .map(|l| l.trim().parse().expect("content-length"))
                    .unwrap_or(0);
                while self.buf.len() < n + len {
                    self.fill();
                }
                let body = self.buf[n..n + len].to_vec();
                self.buf.drain(..n + len);
                return Response::announced(status, headers, body);
            }
            self.fill();
        }
    }
}
