//! Configuration: `raw` is the TOML as written, `resolved` is what the gateway runs on.

pub mod raw;
pub mod resolved;

pub use resolved::{Config, Environment, Issuer, JwksSource, Problem, Tls, Upstream, UpstreamTarget, load};
