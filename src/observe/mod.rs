//! What the gateway tells operators: Prometheus metrics ([`metrics`]) and the JSON access log
//! ([`access_log`]), written by a thread of its own so no worker thread waits on a disk.

pub mod access_log;
pub mod history;
pub mod log;
pub mod metrics;
pub mod otlp;
pub mod trace;
