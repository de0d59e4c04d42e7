//! Tollgate: an API gateway on Cloudflare's Pingora.
//!
//! A request travels: listener → front door ([`front`]: PROXY header, strict HTTP/1 reading,
//! timeouts; the connection loop is in [`server`]) → canonical path and host ([`canonical`]) →
//! route lookup ([`router`]) → policies and limits ([`policy`]) → cache ([`cache`]) → upstream
//! pool ([`upstream`]) → upstream, with the [`proxy`] module's `ProxyHttp` implementation
//! calling into the modules that own each step, and [`observe`] reporting what happened. The
//! configuration ([`config`]) is validated into a checked model before anything listens;
//! [`gateway::Gateway`] is the immutable runtime snapshot of compiled routes; [`server`] holds
//! what lives as long as the process. `docs/ARCHITECTURE.md` has the module map.

pub mod admin;
pub mod cache;
pub mod canonical;
pub mod compress;
pub mod config;
pub mod dns;
pub mod errors;
pub mod fetch;
pub mod front;
pub mod gateway;
pub mod observe;
pub mod openapi;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod router;
pub mod server;
pub mod tls;
pub mod upstream;
pub mod wire;
