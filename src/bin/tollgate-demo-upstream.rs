//! A small HTTP service to put behind the gateway: it answers every request with a JSON
//! description of what it received and which instance answered, and `GET /health` with 200.
//! Run several on different ports to see routing and load balancing at work.

use async_trait::async_trait;
use clap::Parser;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::listening::Service;

/// A demo upstream service for Tollgate.
#[derive(Parser, Debug)]
#[command(name = "tollgate-demo-upstream", version, about)]
struct Cli {
    /// Address to listen on; repeat for several instances in one process.
    #[arg(short, long = "listen", value_name = "ADDR", required = true)]
    listen: Vec<String>,
    /// The service name put in every answer.
    #[arg(short, long, default_value = "demo")]
    name: String,
}

struct Demo {
    name: String,
}

#[async_trait]
impl ServeHttp for Demo {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        // Drain any request body so the connection can be reused.
        let _ = session.drain_request_body().await;
        let req = session.req_header();
        let (status, body) = if req.uri.path() == "/health" {
            (200, b"ok\n".to_vec())
        } else {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        serde_json::Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()),
                    )
                })
                .collect();
            let answer = serde_json::json!({
                "service": self.name,
                "instance": session.server_addr().map(|a| a.to_string()),
                "method": req.method.as_str(),
                "path": req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
                "headers": headers,
            });
            (200, format!("{answer:#}\n").into_bytes())
        };
        Response::builder()
            .status(status)
            .header(
                "content-type",
                if status == 200 && body != b"ok\n" {
                    "application/json"
                } else {
                    "text/plain"
                },
            )
            .header("content-length", body.len())
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let tag = cli.listen.join("_").replace([':', '.', '[', ']'], "-");
    let conf = ServerConf {
        threads: 1,
        pid_file: format!("/tmp/tollgate-demo-upstream-{tag}.pid"),
        upgrade_sock: format!("/tmp/tollgate-demo-upstream-{tag}.sock"),
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut service = Service::new(
        format!("demo upstream {}", cli.name),
        Demo {
            name: cli.name.clone(),
        },
    );
    for addr in &cli.listen {
        service.add_tcp(addr);
    }
    server.add_service(service);
    eprintln!(
        "demo upstream \"{}\" listening on {}",
        cli.name,
        cli.listen.join(", ")
    );
    server.run_forever()
}
