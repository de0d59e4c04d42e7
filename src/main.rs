//! The `tollgate` command: parse the command line, load and validate the configuration, build
//! the Pingora server and run it.

use arc_swap::ArcSwap;
use clap::Parser;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tollgate::admin::AdminServer;
use tollgate::cache::Cache;
use tollgate::config;
use tollgate::front::FrontDoor;
use tollgate::gateway::Gateway;
use tollgate::observe::access_log::AccessLog;
use tollgate::observe::metrics::Metrics;
use tollgate::policy::limits::LimitStore;
use tollgate::proxy::Tollgate;
use tollgate::reload::Reloader;
use tollgate::server::connection::Connections;
use tollgate::server::readiness::Readiness;
use tollgate::server::signals::{ExitOnInterrupt, ReloadOnHangup, ReopenOnUsr1};
use tollgate::server::{self, DrainPlan, Lifecycle, ServiceFor};
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
    /// Signal the running instance (the one in `pid_file`), as nginx's `-s`: `reload` the
    /// configuration (SIGHUP), `quit` after draining (SIGTERM), `stop` at once (SIGINT),
    /// `reopen` the access log (SIGUSR1).
    #[arg(short, long, value_enum, value_name = "SIGNAL")]
    signal: Option<SignalName>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// What `-s` sends.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum SignalName {
    Reload,
    Quit,
    Stop,
    Reopen,
}

impl SignalName {
    fn signal(self) -> (i32, &'static str) {
        match self {
            SignalName::Reload => (libc::SIGHUP, "SIGHUP"),
            SignalName::Quit => (libc::SIGTERM, "SIGTERM"),
            SignalName::Stop => (libc::SIGINT, "SIGINT"),
            SignalName::Reopen => (libc::SIGUSR1, "SIGUSR1"),
        }
    }
}

/// `tollgate -s SIGNAL`: signal the process whose pid the configuration's `pid_file` holds.
fn send_signal(conf: &std::path::Path, which: SignalName) -> ExitCode {
    let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let config = match config::check_file_in(conf, &base) {
        Ok(c) => c,
        Err((errors, _)) => {
            eprintln!(
                "{}: {} problem(s), cannot find pid_file:",
                conf.display(),
                errors.len()
            );
            for e in errors {
                eprintln!("  {e}");
            }
            return ExitCode::from(2);
        }
    };
    let pid_file = &config.process.server.pid_file;
    let pid = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok());
    let Some(pid) = pid.filter(|p| *p > 0) else {
        eprintln!("no running tollgate: {pid_file} holds no pid");
        return ExitCode::from(1);
    };
    let (number, name) = which.signal();
    if unsafe { libc::kill(pid, number) } != 0 {
        eprintln!(
            "cannot signal process {pid} (from {pid_file}): {}",
            std::io::Error::last_os_error()
        );
        return ExitCode::from(1);
    }
    println!("sent {name} to process {pid}");
    ExitCode::SUCCESS
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
    /// Work with OpenAPI documents.
    Openapi {
        #[command(subcommand)]
        command: OpenapiCommand,
    },
    /// Replace the running daemon without dropping requests: check the configuration (`-c`),
    /// start a new daemon that takes over the listening sockets, and tell the old one to drain.
    Upgrade {
        /// The running process (default: the one in `pid_file`).
        #[arg(long)]
        pid: Option<i32>,
    },
}

#[derive(clap::Subcommand, Debug)]
enum OpenapiCommand {
    /// Print route entries for every operation of an OpenAPI 3.0 or 3.1 document (YAML or
    /// JSON), or merge them into the configuration (`--write`). Operations that cannot be
    /// mapped are listed on standard error, one line each, and the exit status is 1.
    Import {
        /// The OpenAPI document.
        spec: PathBuf,
        /// The upstream pool the routes send to.
        #[arg(long)]
        upstream: String,
        /// Put the document's paths under this prefix (default: its first server's path).
        #[arg(long)]
        prefix: Option<String>,
        /// Write routes that reference the document (`openapi: {spec, operation}`), so that
        /// requests are checked against it and it stays the source of truth.
        #[arg(long)]
        validate: bool,
        /// Merge the routes into this configuration file (same name: replaced; others:
        /// appended); the merged file is checked first and written only if it passes.
        #[arg(long)]
        write: Option<PathBuf>,
        /// The header API keys are read from (default: the configuration's, else X-API-Key).
        #[arg(long)]
        api_key_header: Option<String>,
    },
}

/// `tollgate openapi import`.
fn openapi_import(command: OpenapiCommand) -> ExitCode {
    let OpenapiCommand::Import {
        spec,
        upstream,
        prefix,
        validate,
        write,
        api_key_header,
    } = command;
    let text = match std::fs::read_to_string(&spec) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {}: {e}", spec.display());
            return ExitCode::from(2);
        }
    };
    let doc = match tollgate::openapi::Document::parse(&text) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{}: {e}", spec.display());
            return ExitCode::from(2);
        }
    };
    let mut config: Option<serde_yaml::Value> = None;
    if let Some(path) = &write {
        match std::fs::read_to_string(path).map(|t| serde_yaml::from_str(&t)) {
            Ok(Ok(v)) => config = Some(v),
            Ok(Err(e)) => {
                eprintln!("{}: invalid YAML: {e}", path.display());
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("cannot read {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    let header = api_key_header
        .or_else(|| {
            config
                .as_ref()
                .and_then(|c| c.get("api_key_header")?.as_str().map(str::to_string))
        })
        .unwrap_or_else(|| "x-api-key".to_string());
    let reference = spec.to_string_lossy().into_owned();
    let out = tollgate::openapi::import::import(
        &doc,
        &tollgate::openapi::import::Options {
            upstream: &upstream,
            prefix: prefix.as_deref(),
            api_key_header: &header,
            reference: validate.then_some(reference.as_str()),
        },
    );
    for p in &out.problems {
        eprintln!("{}: not imported: {p}", spec.display());
    }
    let status = if out.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    let (Some(path), Some(mut config)) = (write, config) else {
        let mut top = serde_yaml::Mapping::new();
        top.insert("routes".into(), serde_yaml::Value::Sequence(out.routes));
        match serde_yaml::to_string(&top) {
            Ok(text) => print!("{text}"),
            Err(e) => {
                eprintln!("cannot write the routes: {e}");
                return ExitCode::from(2);
            }
        }
        return status;
    };
    let (replaced, added) = match tollgate::openapi::import::merge(&mut config, out.routes) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let text = match serde_yaml::to_string(&config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot write the configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let dir = path.parent().map(|d| base.join(d)).unwrap_or(base);
    if let Err((errors, _)) =
        config::parse_reporting(&text, &config::loader::System::checking(&dir))
    {
        eprintln!(
            "{}: not written: the merged configuration has {} problem{}:",
            path.display(),
            errors.len(),
            if errors.len() == 1 { "" } else { "s" }
        );
        for e in &errors {
            eprintln!("  {e}");
        }
        return ExitCode::from(2);
    }
    let temp = path.with_extension("yaml.tmp");
    if let Err(e) = std::fs::write(&temp, &text).and_then(|()| std::fs::rename(&temp, &path)) {
        eprintln!("cannot write {}: {e}", path.display());
        let _ = std::fs::remove_file(&temp);
        return ExitCode::from(2);
    }
    eprintln!(
        "{}: {added} route{} added, {replaced} replaced",
        path.display(),
        if added == 1 { "" } else { "s" }
    );
    status
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
    tollgate::observe::log::init();
    // One crypto provider for TLS and JWTs: AWS-LC. Pingora installs ring as the default unless
    // one is installed already; this comes first.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::HashPassword { cost }) => return hash_password(cost),
        Some(Command::Upgrade { pid }) => return server::upgrade::run(&cli.conf, pid),
        Some(Command::Openapi { command }) => return openapi_import(command),
        None => {}
    }
    if let Some(which) = cli.signal {
        return send_signal(&cli.conf, which);
    }

    // Relative paths (the file itself, and paths in it) stay relative to where the process
    // started, also for reloads after Pingora has daemonized and changed directory.
    let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let loaded = if cli.test {
        config::check_file_in(&cli.conf, &base)
    } else {
        config::load_file_in(&cli.conf, &base).map_err(|e| (e, Vec::new()))
    };
    let config = match loaded {
        Ok(c) => c,
        // Only checking, and every problem depends on a variable not set here (each named in a
        // warning): the file's shape is otherwise fine.
        Err((errors, warnings)) if cli.test && errors.is_empty() => {
            for w in &warnings {
                eprintln!("{}: warning: {w}", cli.conf.display());
            }
            println!("configuration OK");
            return ExitCode::SUCCESS;
        }
        Err((errors, warnings)) => {
            eprintln!(
                "{}: {} problem{} found:",
                cli.conf.display(),
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
            for e in &errors {
                eprintln!("  {e}");
            }
            for w in &warnings {
                eprintln!("{}: warning: {w}", cli.conf.display());
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

    let process = &config.process;
    let metrics = Metrics::new();
    let gateway = Arc::new(ArcSwap::from_pointee(Gateway::new(
        &config,
        Arc::new(LimitStore::default()),
        Arc::new(Cache::new(&process.cache)),
        &metrics,
        None,
    )));
    // Pingora takes its settings by value; the reloader keeps the original to compare with.
    let mut server_conf: ServerConf =
        match serde_yaml::to_value(&process.server).and_then(serde_yaml::from_value) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("cannot prepare the process settings: {e}");
                return ExitCode::from(2);
            }
        };
    // Tollgate ends a drain itself (see server::Lifecycle): Pingora's own grace period is set
    // past it, so Pingora never cuts requests short first.
    let grace = Duration::from_secs(process.server.grace_period_seconds.unwrap_or(5));
    let timeout = Duration::from_secs(
        process
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
    let listeners: Vec<std::net::SocketAddr> =
        process.listeners.iter().map(|l| l.address).collect();
    if !cli.upgrade {
        if let Err(e) = server::check_listeners(&listeners) {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    }
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);
    server.bootstrap();

    let access_log = match &process.access_log {
        Some(log) => match AccessLog::open(log, metrics.access_log_dropped.clone()) {
            Ok(log) => Some(log),
            Err(e) => {
                eprintln!("cannot open the access log {}: {e}", log.path);
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    if let Some(log) = &access_log {
        server.add_service(background_service(
            "reopen the access log on SIGUSR1",
            ReopenOnUsr1(log.clone()),
        ));
    }
    if let Err(e) = server::systemd::watch_sigterm() {
        log::error!("cannot watch for SIGTERM, no STOPPING=1 for systemd: {e}");
    }
    server.add_service(background_service(
        "upgrade on SIGUSR2",
        server::systemd::UpgradeOnUsr2 {
            conf: base.join(&cli.conf),
            upgrade_sock: PathBuf::from(&process.server.upgrade_sock),
            daemon: cli.daemon,
        },
    ));
    server.add_service(background_service(
        "exit on SIGINT",
        ExitOnInterrupt {
            access_log: access_log.clone(),
            pid_file: Some(PathBuf::from(&process.server.pid_file)),
        },
    ));
    let lifecycle = Lifecycle::new(Some(DrainPlan {
        grace,
        timeout,
        access_log: access_log.clone(),
        pid_file: Some(PathBuf::from(&process.server.pid_file)),
    }));
    let door = FrontDoor::new(
        &config,
        gateway.clone(),
        metrics.clone(),
        access_log.clone(),
    );
    let keepalive = process.client_keepalive_timeout;
    let spans = process.otlp.as_ref().map(|otlp| {
        let (queue, export) =
            tollgate::observe::otlp::SpanExporter::new(otlp, metrics.spans.clone());
        server.add_service(background_service("span export", export));
        Arc::new(queue)
    });
    let make_service = |name: &str, h2c: bool| {
        let proxy = Tollgate::new(
            gateway.clone(),
            metrics.clone(),
            access_log.clone(),
            lifecycle.clone(),
            door.clone(),
            spans.clone(),
        );
        let mut app = pingora_proxy::http_proxy(&server.configuration, proxy);
        let mut options = pingora_core::apps::HttpServerOptions::default();
        options.h2c = h2c;
        // An HTTP/2 connection with no request in progress is closed like an idle HTTP/1 one
        // (Pingora's default keeps it forever).
        options.h2_idle_timeout = Some(keepalive);
        app.server_options = Some(options);
        let handler = Connections::new(app, door.clone(), lifecycle.clone(), keepalive);
        pingora_core::services::listening::Service::new(name.to_string(), handler)
    };
    let (first_h2c, split) = server::service_plan(&process.listeners);
    let mut proxy = make_service("tollgate proxy", first_h2c);
    let mut h2c_proxy = split.then(|| make_service("tollgate proxy (h2c)", true));
    // No read buffer under the HTTP parser: Pingora's default is 64 KiB per client connection,
    // held for the connection's life (also while idle), and the parser reads into its own
    // buffer anyway. The small write buffer that coalesces header and body writes stays.
    let endpoint = |addr: std::net::SocketAddr| {
        pingora_core::listeners::ListenerConfig::tcp(addr.to_string())
            .l4_buffer(pingora_core::listeners::L4BufferSettings::default().read(0))
    };
    let mut listener_certificates = Vec::new();
    for listener in &process.listeners {
        let service = match (server::service_for(listener, split), &mut h2c_proxy) {
            (ServiceFor::H2c, Some(h2c)) => h2c,
            _ => &mut proxy,
        };
        if listener.tls.is_empty() {
            service.add_listener(endpoint(listener.address));
        } else {
            match tollgate::tls::settings(listener) {
                Ok((settings, certificates)) => {
                    service.add_listener(endpoint(listener.address).tls(settings));
                    listener_certificates.push((listener.address, certificates));
                }
                Err(e) => {
                    eprintln!("listener {}: {e}", listener.address);
                    return ExitCode::from(2);
                }
            }
        }
    }
    if process
        .listeners
        .iter()
        .any(|l| l.proxy_protocol && !l.tls.is_empty())
    {
        // PROXY headers come before the TLS handshake.
        proxy.endpoints().set_pre_tls_callback(door.pre_tls());
    }
    let health = HealthChecker::new(gateway.load().pools.clone());
    server.add_service(proxy);
    if let Some(h2c) = h2c_proxy {
        server.add_service(h2c);
    }
    server.add_service(background_service("health checks", health.clone()));
    let snapshot = gateway.clone();
    server.add_service(background_service(
        "JWT key fetches",
        tollgate::policy::jwks::JwksRefresher {
            sets: Box::new(move || snapshot.load().policies.remote_key_sets().collect()),
        },
    ));
    let announce = format!(
        "tollgate {} serving {} route(s) on {}",
        env!("CARGO_PKG_VERSION"),
        config.routing.routes.len(),
        listeners
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    server.add_service(background_service(
        "readiness",
        Readiness {
            lifecycle: lifecycle.clone(),
            listeners: listeners.clone(),
            announce,
        },
    ));
    let admin_config = process.admin.clone();
    let pid_file = process.server.pid_file.clone();
    let reloader = Arc::new(Reloader::new(
        cli.conf.clone(),
        base,
        config,
        gateway.clone(),
        metrics.clone(),
        health,
        listener_certificates,
    ));
    server.add_service(background_service(
        "reload on SIGHUP",
        ReloadOnHangup(reloader.clone()),
    ));
    if let Some(admin) = &admin_config {
        match AdminServer::bind(admin, gateway, metrics, reloader, lifecycle, cli.upgrade) {
            Ok(a) => {
                server.add_service(background_service("admin", a));
            }
            Err(e) => {
                eprintln!("cannot listen on the admin address {}: {e}", admin.address);
                return ExitCode::from(2);
            }
        }
    }
    if !cli.daemon {
        // Pingora writes the pid file when it daemonizes; in the foreground, Tollgate does.
        if let Err(e) = server::write_pid_file(std::path::Path::new(&pid_file)) {
            eprintln!("cannot write the pid file {pid_file}: {e}");
            return ExitCode::from(2);
        }
    }
    server.run_forever()
}
