//! gRPC through the gateway, with a real gRPC server and client (tonic, over a raw-bytes codec so
//! no protobuf code is generated): cleartext HTTP/2 (h2c) on both sides and TLS with ALPN `h2`
//! on both sides. Unary and server-streaming calls, statuses and messages carried in trailers
//! (also after streamed data), large messages, multiplexed concurrent calls, and the gateway's
//! own refusals answered as gRPC statuses.

use crate::common::*;
use bytes::{Buf, BufMut, Bytes};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
};
use tonic::{Code, Status};

/// Messages are plain bytes on the wire (inside gRPC's length-prefixed framing).
#[derive(Clone, Copy, Default)]
struct Raw;
struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// `tollgate.test.Echo`: `Say` echoes (or fails on "fail"), `Count` streams n messages.
#[derive(Clone, Default)]
struct Echo {
    /// The HTTP headers of every request the server received.
    seen: Arc<Mutex<Vec<http::HeaderMap>>>,
}

impl tonic::server::NamedService for Echo {
    const NAME: &'static str = "tollgate.test.Echo";
}

struct Say;

impl tonic::server::UnaryService<Bytes> for Say {
    type Response = Bytes;
    type Future = BoxFuture<Result<tonic::Response<Bytes>, Status>>;
    fn call(&mut self, req: tonic::Request<Bytes>) -> Self::Future {
        Box::pin(async move {
            let msg = req.into_inner();
            if msg.as_ref() == b"fail" {
                return Err(Status::not_found("nothing called fail"));
            }
            let mut out = b"echo:".to_vec();
            out.extend_from_slice(&msg);
            let mut resp = tonic::Response::new(Bytes::from(out));
            resp.metadata_mut()
                .insert("x-served-by", "echo".parse().unwrap());
            Ok(resp)
        })
    }
}

struct Count;

type MessageStream = Pin<Box<dyn futures::Stream<Item = Result<Bytes, Status>> + Send>>;

impl tonic::server::ServerStreamingService<Bytes> for Count {
    type Response = Bytes;
    type ResponseStream = MessageStream;
    type Future = BoxFuture<Result<tonic::Response<MessageStream>, Status>>;
    fn call(&mut self, req: tonic::Request<Bytes>) -> Self::Future {
        Box::pin(async move {
            let n: usize = std::str::from_utf8(req.get_ref())
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Status::invalid_argument("not a number"))?;
            let mut items: Vec<Result<Bytes, Status>> =
                (0..n).map(|i| Ok(Bytes::from(i.to_string()))).collect();
            // After the data, the call ends with an error status: it can only arrive in trailers.
            items.push(Err(Status::aborted(format!("stopped after {n}"))));
            let stream: MessageStream = Box::pin(futures::stream::iter(items));
            Ok(tonic::Response::new(stream))
        })
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for Echo
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.seen.lock().unwrap().push(req.headers().clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(Raw).max_decoding_message_size(8 << 20);
            Ok(match req.uri().path() {
                "/tollgate.test.Echo/Say" => grpc.unary(Say, req).await,
                "/tollgate.test.Echo/Count" => grpc.server_streaming(Count, req).await,
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

/// Start the echo server on a loopback port (TLS when an identity is given) in its own thread.
/// rustls here has two crypto providers compiled in (the gateway's AWS-LC, and ring for tonic):
/// the test's own TLS clients and servers use the process default, set once.
fn tls_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn start_echo(tls: Option<Identity>) -> (std::net::SocketAddr, Echo) {
    tls_provider();
    let echo = Echo::default();
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let svc = echo.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let mut builder = tonic::transport::Server::builder();
            if let Some(identity) = tls {
                builder = builder
                    .tls_config(ServerTlsConfig::new().identity(identity))
                    .unwrap();
            }
            builder
                .add_service(svc)
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        });
    });
    (addr, echo)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn say(
    ch: &Channel,
    service: &str,
    msg: impl Into<Bytes>,
    metadata: &[(&'static str, &str)],
) -> Result<tonic::Response<Bytes>, Status> {
    let mut grpc = tonic::client::Grpc::new(ch.clone()).max_decoding_message_size(8 << 20);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(msg.into());
    for (k, v) in metadata {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    let path = PathAndQuery::try_from(format!("/{service}/Say")).unwrap();
    grpc.unary(req, path, Raw).await
}

/// The messages of a `Count` call and the status it ended with.
async fn count(ch: &Channel, n: usize) -> (Vec<String>, Status) {
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.unwrap();
    let req = tonic::Request::new(Bytes::from(n.to_string()));
    let path = PathAndQuery::from_static("/tollgate.test.Echo/Count");
    let mut stream = grpc
        .server_streaming(req, path, Raw)
        .await
        .expect("the call starts")
        .into_inner();
    let mut got = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(m)) => got.push(String::from_utf8_lossy(&m).into_owned()),
            Ok(None) => return (got, Status::ok("")),
            Err(status) => return (got, status),
        }
    }
}

async fn connect(endpoint: Endpoint) -> Channel {
    endpoint
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the gateway")
}

#[test]
fn grpc_over_h2c_on_both_sides() {
    let (echo_addr, echo) = start_echo(None);
    let http1 = Upstream::start("http1");
    let http1_port = closed_port().port();
    let dead = closed_port();
    // The generated listener accepts h2c; a second plain listener stays HTTP/1 only.
    let gw = Gateway::start(&format!(
        "    http2: true\n  - address: 127.0.0.1:{http1_port}\nconsumers:\n  - {{name: alice, api_keys: [alice-key]}}\nupstreams:\n  grpc: {{peers: [\"{echo_addr}\"], protocol: h2c}}\n  gone: {{peers: [\"{dead}\"], protocol: h2c, retries: 0}}\n  plain: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: echo, match: {{path_prefix: /tollgate.test.Echo/}}, upstream: grpc}}\n  - {{name: locked, match: {{path_prefix: /tollgate.test.Locked/}}, upstream: grpc, auth: [api_key], rewrite: /tollgate.test.Echo/}}\n  - {{name: gone, match: {{path_prefix: /tollgate.test.Gone/}}, upstream: gone}}\n  - {{name: plain, match: {{path_prefix: /plain}}, upstream: plain}}\n  - {{name: old, match: {{path_prefix: /old}}, upstream: plain, rewrite: /plain}}\n",
        http1.addr
    ));
    let rt = runtime();
    rt.block_on(async {
        let ch =
            connect(Endpoint::from_shared(format!("http://127.0.0.1:{}", gw.port)).unwrap()).await;

        // Unary: the answer, the upstream's metadata, and what the upstream was sent.
        let resp = say(&ch, "tollgate.test.Echo", "hello", &[("x-trace", "t-1")])
            .await
            .expect("unary call through the gateway");
        assert_eq!(resp.get_ref().as_ref(), b"echo:hello");
        assert_eq!(resp.metadata().get("x-served-by").unwrap(), "echo");
        assert!(resp.metadata().get("x-request-id").is_some());
        let seen = echo.seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(seen.get("te").unwrap(), "trailers");
        assert_eq!(seen.get("content-type").unwrap(), "application/grpc");
        assert_eq!(seen.get("x-trace").unwrap(), "t-1");
        assert_eq!(seen.get("x-forwarded-for").unwrap(), "127.0.0.1");
        assert!(seen.get("x-request-id").is_some());

        // An error status travels in the trailers.
        let err = say(&ch, "tollgate.test.Echo", "fail", &[])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        assert_eq!(err.message(), "nothing called fail");

        // Server streaming: every message, then the status in trailers after the data.
        let (msgs, status) = count(&ch, 5).await;
        assert_eq!(msgs, ["0", "1", "2", "3", "4"]);
        assert_eq!(status.code(), Code::Aborted, "{status:?}");
        assert_eq!(status.message(), "stopped after 5");

        // A 3 MiB message each way (HTTP/2 flow control across both hops).
        let big: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
        let resp = say(&ch, "tollgate.test.Echo", big.clone(), &[])
            .await
            .expect("large message");
        assert_eq!(&resp.get_ref()[..5], b"echo:");
        assert!(resp.get_ref()[5..] == big[..], "large message altered");

        // 50 concurrent calls multiplexed on one client connection.
        let calls = (0..50).map(|i| {
            let ch = ch.clone();
            async move { say(&ch, "tollgate.test.Echo", format!("m{i}"), &[]).await }
        });
        let results = futures::future::join_all(calls).await;
        for (i, r) in results.into_iter().enumerate() {
            let r = r.unwrap_or_else(|e| panic!("call {i}: {e:?}"));
            assert_eq!(r.get_ref().as_ref(), format!("echo:m{i}").as_bytes());
        }

        // The gateway's own refusals are gRPC statuses, and never reach the upstream.
        let before = echo.seen.lock().unwrap().len();
        let err = say(&ch, "tollgate.test.Locked", "x", &[])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
        assert_eq!(err.message(), "authentication required");
        let err = say(&ch, "tollgate.test.Nowhere", "x", &[])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
        let err = say(&ch, "tollgate.test.Gone", "x", &[]).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert_eq!(echo.seen.lock().unwrap().len(), before);

        // With a key the call goes through, rewritten to the real service, with the identity.
        let resp = say(
            &ch,
            "tollgate.test.Locked",
            "k",
            &[("x-api-key", "alice-key")],
        )
        .await
        .expect("authenticated call");
        assert_eq!(resp.get_ref().as_ref(), b"echo:k");
        let seen = echo.seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(seen.get("x-consumer").unwrap(), "alice");
        assert!(seen.get("x-api-key").is_some());
    });

    // HTTP/1.1 still works on the h2c listener and on the HTTP/1-only one.
    for port in [gw.port, http1_port] {
        let r = send_raw(
            port,
            b"GET /plain/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 200, "HTTP/1.1 on port {port}");
    }
    // An HTTP/2 client reaching an HTTP/1 upstream through a rewritten path (curl, h2c with
    // prior knowledge).
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
        ])
        .args(["-w", "%{http_version} %{http_code}"])
        .arg(format!("http://127.0.0.1:{}/old/x?q=1", gw.port))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200");
    let seen = http1.last();
    assert_eq!(seen.url, "/plain/x?q=1");
    assert_eq!(
        seen.header("host"),
        Some(format!("127.0.0.1:{}", gw.port).as_str())
    );

    // The HTTP/1-only listener does not speak h2c.
    rt.block_on(async {
        let ep = Endpoint::from_shared(format!("http://127.0.0.1:{http1_port}"))
            .unwrap()
            .timeout(Duration::from_secs(5));
        let refused = match ep.connect().await {
            Ok(ch) => say(&ch, "tollgate.test.Echo", "x", &[]).await.is_err(),
            Err(_) => true,
        };
        assert!(refused, "h2c was accepted on a listener without http2");
    });
}

fn write_cert(dir: &std::path::Path, name: &str, host: &str) -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
    let cert = c.cert.pem();
    let key = c.key_pair.serialize_pem();
    std::fs::write(dir.join(format!("{name}.pem")), &cert).unwrap();
    std::fs::write(dir.join(format!("{name}-key.pem")), &key).unwrap();
    (cert, key)
}

#[test]
fn grpc_over_tls_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let (backend_cert, backend_key) = write_cert(dir.path(), "backend", "backend.test");
    let (front_cert, _) = write_cert(dir.path(), "front", "grpc.test");
    let (echo_addr, echo) = start_echo(Some(Identity::from_pem(backend_cert, backend_key)));
    let tls_port = closed_port().port();
    let gw = Gateway::start(&format!(
        "  - address: 127.0.0.1:{tls_port}\n    tls: {{cert: {d}/front.pem, key: {d}/front-key.pem}}\nupstreams:\n  grpc:\n    peers: [\"{echo_addr}\"]\n    protocol: h2\n    tls: {{sni: backend.test, ca_file: {d}/backend.pem}}\nroutes:\n  - {{name: echo, match: {{path_prefix: /tollgate.test.Echo/}}, upstream: grpc}}\n"
    ));
    assert!(wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok()
    }));
    let rt = runtime();
    rt.block_on(async {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(front_cert))
            .domain_name("grpc.test");
        let ep = Endpoint::from_shared(format!("https://127.0.0.1:{tls_port}"))
            .unwrap()
            .tls_config(tls)
            .unwrap();
        let ch = connect(ep).await;
        let resp = say(&ch, "tollgate.test.Echo", "secure", &[])
            .await
            .expect("unary call over TLS");
        assert_eq!(resp.get_ref().as_ref(), b"echo:secure");
        let seen = echo.seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(seen.get("x-forwarded-proto").unwrap(), "https");
        let (msgs, status) = count(&ch, 3).await;
        assert_eq!(msgs, ["0", "1", "2"]);
        assert_eq!(status.code(), Code::Aborted);
        let err = say(&ch, "tollgate.test.Echo", "fail", &[])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    });
    drop(gw);
}
