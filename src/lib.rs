//! capgate: a zero-trust gateway for agent tools. See docs/pipeline.md for the stage order.
#![forbid(unsafe_code)]

pub mod approval;
pub mod audit;
pub mod backend;
pub mod canonical;
pub mod cli;
pub mod config;
pub mod contract;
pub mod decision;
#[doc(hidden)]
pub mod fuzzing;
pub mod keys;
pub mod metrics;
pub mod pipeline;
pub mod probe;
pub mod secret;
pub mod server;
pub mod trace;
