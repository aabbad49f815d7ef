//! Loads the default configuration, makes a limiter of 10 calls per 10
//! seconds and decides 12 calls for one key, printing each decision: what
//! examples/c/decide.c does through the C ABI, here through the Rust crates.
//!
//! `cargo run -p flux-example`; exits non-zero unless exactly 10 are allowed.

use std::process::ExitCode;
use std::sync::Arc;

use flux_core::config::Config;
use flux_core::Policy;
use flux_redis::{Backend, LimitOverrides, Limiter, LimiterError};

fn main() -> ExitCode {
    match run() {
        Ok(10) => ExitCode::SUCCESS,
        Ok(allowed) => {
            eprintln!("expected 10 of 12 calls allowed, got {allowed}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<usize, LimiterError> {
    let config = Config::default();
    let backend = Arc::new(Backend::from_config(&config)?);
    let ten_per_ten_seconds = LimitOverrides {
        policy: Some(Policy::Gcra),
        requests: Some(10),
        period: Some(10.0),
        ..LimitOverrides::default()
    };
    let limiter = Limiter::new(
        backend.clone(),
        &config,
        "example",
        None,
        &ten_per_ten_seconds,
    )?;

    let key = b"10.0.0.1\0x";
    let mut allowed = 0;
    for call in 1..=12 {
        let d = limiter.decide(key, 1)?;
        allowed += usize::from(d.allowed);
        println!(
            "call {call:2}: {:<7} limit={} remaining={} reset_after={:.3}s retry_after={:.3}s source={}",
            if d.allowed { "allowed" } else { "denied" },
            d.limit,
            d.remaining,
            d.reset_after_secs(),
            d.retry_after_secs(),
            d.source.name(),
        );
    }

    let zero = LimitOverrides {
        requests: Some(0),
        ..ten_per_ten_seconds
    };
    match Limiter::new(backend, &config, "example", None, &zero) {
        Err(e) => println!("requests = 0 is refused: {e}"),
        Ok(_) => return Err(LimiterError::Argument("requests = 0 was accepted".into())),
    }
    Ok(allowed)
}
