//! The `capgate` binary: parse arguments, run, map the outcome to an exit code
//! (0 success, 1 a check failed, 2 usage or configuration error).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    capgate::cli::main()
}
