//! Configuration: `raw` is the TOML as written, `resolved` is what the gateway runs on.

pub(crate) mod raw;
pub(crate) mod resolved;
pub(crate) mod store;

pub(crate) use resolved::{Config, Environment, Issuer, JwksSource, Tls, Upstream, UpstreamTarget, load};
pub(crate) use store::{PgLocation, SslMode, StoreLocation};
