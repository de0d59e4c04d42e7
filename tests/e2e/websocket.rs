//! WebSocket through the gateway: the upgrade handshake passes (hop-by-hop removal keeps
//! `Upgrade`/`Connection: upgrade` for it) and frames flow both ways.

use crate::common::*;
use std::net::TcpListener;

/// A real WebSocket echo server, and a gateway routing `/ws` to it.
fn echo_gateway() -> Gateway {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in l.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(mut ws) = tungstenite::accept(stream) else {
                    return;
                };
                while let Ok(msg) = ws.read() {
                    if msg.is_close() {
                        break;
                    }
                    if msg.is_text() || msg.is_binary() {
                        let _ = ws.send(msg);
                    }
                }
            });
        }
    });
    Gateway::start(&format!(
        "upstreams:\n  ws: {{peers: [\"{addr}\"]}}\nroutes:\n  - {{name: ws, match: {{path_prefix: /ws}}, upstream: ws}}\n"
    ))
}

#[test]
fn websocket_echo_through_the_gateway() {
    let gw = echo_gateway();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    let (mut ws, resp) = tungstenite::client(format!("ws://127.0.0.1:{}/ws/echo", gw.port), tcp)
        .expect("handshake through the gateway");
    assert_eq!(resp.status(), 101);
    for text in ["hello", "through", "tollgate"] {
        ws.send(tungstenite::Message::text(text)).unwrap();
        let back = ws.read().unwrap();
        assert_eq!(back.to_text().unwrap(), text);
    }
    ws.send(tungstenite::Message::binary(vec![0u8, 1, 2, 255]))
        .unwrap();
    assert_eq!(ws.read().unwrap().into_data(), vec![0u8, 1, 2, 255]);
    ws.close(None).unwrap();
}

/// A client that sends its first frame right behind the handshake, before the `101`: the frame is
/// kept until the upstream agrees to switch, then delivered.
#[test]
fn frames_sent_before_the_switch_are_delivered_after_it() {
    use std::io::{Read, Write};
    let gw = echo_gateway();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut bytes = b"GET /ws/echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec();
    // A masked text frame "early".
    let mask = [1u8, 2, 3, 4];
    bytes.extend_from_slice(&[0x81, 0x85]);
    bytes.extend_from_slice(&mask);
    bytes.extend(b"early".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&bytes).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let frame: &[u8] = b"\x81\x05early";
    while !got.windows(frame.len()).any(|w| w == frame) {
        let n = s.read(&mut buf).expect("the echo arrives");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&got)
    );
}
