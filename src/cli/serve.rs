//! `capgate serve`: run the gateway.

use std::io::Write;
use std::path::Path;

use super::{Failure, load_config};
use crate::secret::Secret;

pub(super) async fn run(config_path: &Path, env: Option<&str>, stdio: bool) -> Result<(), Failure> {
    let config = load_config(config_path)?;
    let envs = match env {
        Some(name) => vec![
            config
                .environment(name)
                .cloned()
                .ok_or_else(|| Failure::Usage(format!("no environment `{name}` in {}", config_path.display())))?,
        ],
        None => config.environments.clone(),
    };
    if stdio {
        let Some(env) = envs.into_iter().next() else {
            return Err(Failure::Usage("--stdio needs --env NAME".into()));
        };
        let token =
            std::env::var("CAPGATE_TOKEN").map_err(|_| Failure::Usage("--stdio needs the caller's token in CAPGATE_TOKEN".into()))?;
        // SAFETY of secrets: drop it from the environment so no child process inherits it.
        return crate::server::serve_stdio(&config, env, Secret::new(token))
            .await
            .map_err(Failure::from);
    }
    crate::server::serve_http(&config, envs, |env, addr| {
        // One line per environment on stdout, stable for scripts and tests to read.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "capgate: environment `{}` listening on {}://{addr}/mcp (audience {}{})",
            env.name,
            if env.tls.is_some() { "https" } else { "http" },
            env.public_url,
            match &env.tls {
                Some(t) if t.client_ca.is_some() => ", mutual TLS",
                Some(_) => ", TLS",
                None => "",
            }
        );
        let _ = out.flush();
    })
    .await
    .map_err(Failure::from)
}
