//! WebSocket through the gateway: the upgrade handshake passes (hop-by-hop removal keeps
//! `Upgrade`/`Connection: upgrade` for it) and frames flow both ways.

mod common;
use common::*;
use std::net::TcpListener;

#[test]
fn websocket_echo_through_the_gateway() {
    // A real WebSocket echo server.
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
    let gw = Gateway::start(&format!(
        "upstreams:\n  ws: {{peers: [\"{addr}\"]}}\nroutes:\n  - {{name: ws, match: {{path_prefix: /ws}}, upstream: ws}}\n"
    ));
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
