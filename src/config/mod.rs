//! Configuration: `raw` is the TOML as written, `resolved` is what the gateway runs on.

pub(crate) mod raw;
pub(crate) mod resolved;

pub(crate) use resolved::{Config, Environment, Issuer, JwksSource, StoreLocation, Tls, Upstream, UpstreamTarget, load};
