//! Test harness, by role: real upstream servers ([`upstreams`]), the gateway process
//! ([`gateway`]), raw HTTP clients ([`clients`]) and Redis ([`redis`]).

pub mod clients;
pub mod dns;
pub mod gateway;
pub mod redis;
pub mod upstreams;

pub use clients::*;
pub use dns::*;
pub use gateway::*;
pub use redis::*;
pub use upstreams::*;
