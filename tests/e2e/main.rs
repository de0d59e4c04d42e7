//! The end-to-end tests, in one test binary (one link instead of one per file): each module
//! drives the real `tollgate` binary (or, for the limiter, the library in-process) against real
//! upstream servers, Redis, nginx and HAProxy on loopback. Helpers are in [`common`].

mod common;

mod architecture;
mod bad_input;
mod balancing;
mod bench_smoke;
mod cache;
mod cli;
mod compression;
mod cors;
mod discovery;
mod forward_auth;
mod front_door;
mod grpc;
mod jwks;
mod jwt;
mod keepalive;
mod limiter;
mod mtls;
mod observe;
mod openapi;
mod plans;
mod policies;
mod ratelimit;
mod redis_cluster;
mod reload;
mod retries;
mod routing;
mod split;
mod systemd;
mod tls;
mod tracing;
mod upgrade;
mod websocket;
