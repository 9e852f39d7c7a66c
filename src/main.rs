//! The `capgate` binary: parse arguments, run, map the outcome to an exit code
//! (0 success, 1 a check failed, 2 usage or configuration error).
#![forbid(unsafe_code)]

// The hot path allocates many small, short-lived buffers across threads (HTTP bodies, JSON
// values, audit records); glibc's allocator spent ~17% of the gateway's CPU on them.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    capgate::cli::main()
}
