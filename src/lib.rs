//! capgate: a zero-trust gateway for agent tools. docs/ARCHITECTURE.md draws a call's way
//! through these modules; docs/pipeline.md, the stage order.
//!
//! The library is the binary's: its public surface is what the binary, the benchmark
//! harness and the tests need (`cli::main`, key helpers, canonical digests), and the proof
//! types of the pipeline, public so that the compile-fail examples on
//! [`pipeline::Audited`] can show an outside caller cannot forge or reuse one.
#![forbid(unsafe_code)]

mod audit;
mod backend;
pub mod canonical;
pub mod cli;
mod config;
mod contract;
mod decision;
mod denial;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
mod identity;
pub mod keys;
mod metrics;
mod pins;
pub mod pipeline;
mod policy;
mod probe;
mod request;
mod secret;
pub mod server;
mod telemetry;
mod trace;
