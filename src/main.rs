//! The `tollgate` command: parse the command line, load and validate the configuration, build
//! the Pingora server and run it.

use arc_swap::ArcSwap;
use clap::Parser;
use pingora_core::server::configuration::Opt;
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tollgate::config;
use tollgate::gateway::Gateway;
use tollgate::proxy::Tollgate;
use tollgate::upstream::HealthChecker;

/// mimalloc: faster than the system allocator on the request path, and it hands freed memory
/// back to the system, so the cache's byte budget shows in resident memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tollgate, an API gateway on Cloudflare's Pingora.
#[derive(Parser, Debug)]
#[command(name = "tollgate", version, about, long_about = None)]
struct Cli {
    /// The configuration file.
    #[arg(
        short,
        long,
        value_name = "FILE",
        default_value = "conf/tollgate.yaml",
        global = true
    )]
    conf: PathBuf,
    /// Check the configuration and exit: prints `configuration OK`, or every problem and
    /// exits non-zero.
    #[arg(short, long)]
    test: bool,
    /// Run in the background (daemonize).
    #[arg(short, long)]
    daemon: bool,
    /// Take over the listening sockets of a running instance (zero-downtime upgrade).
    #[arg(short, long)]
    upgrade: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Read a password from standard input (one line) and print its bcrypt hash, for
    /// `consumers[].basic_auth.password_hash`.
    HashPassword {
        /// bcrypt cost (4 to 31); each step doubles the work.
        #[arg(long, default_value_t = 12)]
        cost: u32,
    },
    /// Replace the running daemon without dropping requests: check the configuration (`-c`),
    /// start a new daemon that takes over the listening sockets, and tell the old one to drain.
    Upgrade {
        /// The running process (default: the one in `pid_file`).
        #[arg(long)]
        pid: Option<i32>,
    },
}

fn hash_password(cost: u32) -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("cannot read the password from standard input: {e}");
        return ExitCode::from(2);
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        eprintln!("the password is empty");
        return ExitCode::from(2);
    }
    match bcrypt::hash(password, cost) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot hash: {e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::HashPassword { cost }) => return hash_password(cost),
        Some(Command::Upgrade { pid }) => return tollgate::upgrade::run(&cli.conf, pid),
        None => {}
    }

    // Relative paths (the file itself, and paths in it) stay relative to where the process
    // started, also for reloads after Pingora has daemonized and changed directory.
    let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let config = match config::load_file_in(&cli.conf, &base) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!(
                "{}: {} problem{} found:",
                cli.conf.display(),
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
            for e in &errors {
                eprintln!("  {e}");
            }
            return ExitCode::from(2);
        }
    };
    for w in &config.warnings {
        eprintln!("{}: warning: {w}", cli.conf.display());
    }
    if cli.test {
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }

    let limits = Arc::new(tollgate::policy::limits::LimitStore::default());
    let cache = Arc::new(tollgate::cache::Cache::new(&config.cache));
    let gateway = Arc::new(ArcSwap::from_pointee(Gateway::new(
        &config,
        limits.clone(),
        cache.clone(),
        None,
    )));
    // Pingora takes its settings by value; the reloader keeps the original to compare with.
    let mut server_conf: pingora_core::server::configuration::ServerConf =
        match serde_yaml::to_value(&config.server).and_then(serde_yaml::from_value) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("cannot prepare the process settings: {e}");
                return ExitCode::from(2);
            }
        };
    // Tollgate ends a drain itself (see proxy::drain): Pingora's own grace period is set past
    // it, so Pingora never cuts requests short first.
    let grace = Duration::from_secs(config.server.grace_period_seconds.unwrap_or(5));
    let timeout = Duration::from_secs(
        config
            .server
            .graceful_shutdown_timeout_seconds
            .unwrap_or(10),
    );
    server_conf.grace_period_seconds = Some(grace.as_secs() + timeout.as_secs() + 5);
    let opt = Opt {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
        nocapture: false,
        test: false,
        conf: None,
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);
    server.bootstrap();

    let metrics = tollgate::observe::metrics::Metrics::new();
    metrics.declare(&gateway.load());
    let access_log = match &config.access_log {
        Some(path) => match tollgate::observe::access_log::AccessLog::open(
            path,
            metrics.access_log_dropped.clone(),
        ) {
            Ok(log) => Some(log),
            Err(e) => {
                eprintln!("cannot open the access log {path}: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let in_flight = Arc::new(tollgate::proxy::drain::InFlight::default());
    server.add_service(background_service(
        "exit on SIGINT",
        tollgate::proxy::drain::ExitOnInterrupt {
            access_log: access_log.clone(),
        },
    ));
    let plan = tollgate::proxy::drain::DrainPlan {
        grace,
        timeout,
        in_flight: in_flight.clone(),
        access_log: access_log.clone(),
    };
    // One proxy service serves every listener, unless plain listeners disagree on cleartext
    // HTTP/2: Pingora sets h2c per service, so the h2c ones then get a second service (with its
    // own worker threads). TLS listeners ignore h2c (ALPN decides) and join the first service.
    let plain = |h2c: bool| {
        config
            .listeners
            .iter()
            .any(|l| l.tls.is_empty() && l.http2 == h2c)
    };
    let split = plain(true) && plain(false);
    let first_h2c = plain(true) && !split;
    let plan = Arc::new(std::sync::Mutex::new(Some(plan)));
    let door = tollgate::front::FrontDoor::new(
        &config,
        gateway.clone(),
        metrics.clone(),
        access_log.clone(),
    );
    let make_service = |name: &str, h2c: bool| {
        let mut app = pingora_proxy::http_proxy(
            &server.configuration,
            Tollgate::new(
                gateway.clone(),
                metrics.clone(),
                access_log.clone(),
                draining.clone(),
                in_flight.clone(),
                door.clone(),
            ),
        );
        let mut options = pingora_core::apps::HttpServerOptions::default();
        options.h2c = h2c;
        // An HTTP/2 connection with no request in progress is closed like an idle HTTP/1 one
        // (Pingora's default keeps it forever).
        options.h2_idle_timeout = Some(config.client_keepalive_timeout);
        app.server_options = Some(options);
        pingora_core::services::listening::Service::new(
            name.to_string(),
            tollgate::proxy::drain::Draining::new(
                app,
                door.clone(),
                draining.clone(),
                plan.clone(),
                config.client_keepalive_timeout,
            ),
        )
    };
    let mut proxy = make_service("tollgate proxy", first_h2c);
    let mut h2c_proxy = split.then(|| make_service("tollgate proxy (h2c)", true));
    // No read buffer under the HTTP parser: Pingora's default is 64 KiB per client connection,
    // held for the connection's life (also while idle), and the parser reads into its own
    // buffer anyway. The small write buffer that coalesces header and body writes stays.
    let endpoint = |addr: std::net::SocketAddr| {
        pingora_core::listeners::ListenerConfig::tcp(addr.to_string())
            .l4_buffer(pingora_core::listeners::L4BufferSettings::default().read(0))
    };
    for listener in &config.listeners {
        if listener.tls.is_empty() {
            match &mut h2c_proxy {
                Some(h2c) if listener.http2 => h2c.add_listener(endpoint(listener.address)),
                _ => proxy.add_listener(endpoint(listener.address)),
            }
        } else {
            match tollgate::tls::settings(listener) {
                Ok(settings) => proxy.add_listener(endpoint(listener.address).tls(settings)),
                Err(e) => {
                    eprintln!("listener {}: {e}", listener.address);
                    return ExitCode::from(2);
                }
            }
        }
    }
    if config
        .listeners
        .iter()
        .any(|l| l.proxy_protocol && !l.tls.is_empty())
    {
        // PROXY headers come before the TLS handshake.
        proxy.endpoints().set_pre_tls_callback(door.pre_tls());
    }
    let health = background_service("health checks", HealthChecker::new(gateway.clone()));
    server.add_service(proxy);
    if let Some(h2c) = h2c_proxy {
        server.add_service(h2c);
    }
    server.add_service(health);
    let route_count = config.routes.len();
    let listeners: Vec<std::net::SocketAddr> = config.listeners.iter().map(|l| l.address).collect();
    let admin_config = config.admin.clone();
    let reloader = Arc::new(tollgate::reload::Reloader::new(
        cli.conf.clone(),
        base,
        config,
        gateway.clone(),
        limits,
        cache,
        metrics.clone(),
    ));
    server.add_service(background_service(
        "reload on SIGHUP",
        tollgate::reload::ReloadOnHangup(reloader.clone()),
    ));
    if let Some(admin) = &admin_config {
        match tollgate::admin::AdminServer::bind(
            admin,
            gateway,
            metrics,
            reloader,
            listeners.clone(),
        ) {
            Ok(a) => {
                server.add_service(background_service("admin", a));
            }
            Err(e) => {
                eprintln!("cannot listen on the admin address {}: {e}", admin.address);
                return ExitCode::from(2);
            }
        }
    }
    log::info!(
        "tollgate {} serving {} route(s) on {}",
        env!("CARGO_PKG_VERSION"),
        route_count,
        listeners
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    server.run_forever()
}
