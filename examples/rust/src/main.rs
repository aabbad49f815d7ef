//! Loads the default configuration, makes a limiter of 10 calls per 10
//! seconds and decides 12 calls for one key, printing each decision: what
//! examples/c/decide.c does through the C ABI, here through the Rust crates.
//! Then a limiter of two rates at once, "3/second;5/minute", which admits
//! a call only when both do.
//!
//! `cargo run -p flux-example`; exits non-zero unless exactly 10 and then 3
//! calls are allowed.

use std::process::ExitCode;

use flux_core::config::Config;
use flux_core::{parse_rates, Decision, LimitSpec, Limiter, LimiterError, Policy};

fn main() -> ExitCode {
    match run() {
        Ok((10, 3)) => ExitCode::SUCCESS,
        Ok((ten, three)) => {
            eprintln!("expected 10 of 12, then 3 of 6 calls allowed, got {ten} and {three}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn show(call: usize, d: &Decision) {
    println!(
        "call {call:2}: {:<7} limit={} remaining={} reset_after={:.3}s retry_after={:.3}s \
         quota={} source={}",
        if d.allowed { "allowed" } else { "denied" },
        d.limit,
        d.remaining,
        d.reset_after_secs(),
        d.retry_after_secs(),
        d.quota_index,
        d.source.name(),
    );
}

fn run() -> Result<(usize, usize), LimiterError> {
    let config = Config::default();
    // The memory store here; the store [flux] storage names in general.
    let opened = flux_redis::open(&config).map_err(LimiterError::Store)?;
    let ten_per_ten_seconds = LimitSpec {
        policy: Some(Policy::Gcra),
        requests: Some(10),
        period: Some(10.0),
        ..LimitSpec::default()
    };
    let limiter = Limiter::new(
        opened.backend.clone(),
        &config,
        "example",
        None,
        &ten_per_ten_seconds,
    )?;

    let key = b"10.0.0.1\0x";
    let mut ten = 0;
    for call in 1..=12 {
        let d = limiter.decide(key, 1)?;
        ten += usize::from(d.allowed);
        show(call, &d);
    }

    let zero = LimitSpec {
        requests: Some(0),
        ..ten_per_ten_seconds
    };
    match Limiter::new(opened.backend.clone(), &config, "example", None, &zero) {
        Err(e) => println!("requests = 0 is refused: {e}"),
        Ok(_) => return Err(LimiterError::Argument("requests = 0 was accepted".into())),
    }

    let rates = parse_rates("3/second;5/minute").expect("a valid rate");
    let both = LimitSpec {
        rate: Some(rates),
        ..LimitSpec::default()
    };
    let limiter = Limiter::new(opened.backend, &config, "example-rates", None, &both)?;
    println!("3/second;5/minute:");
    let mut three = 0;
    for call in 1..=6 {
        let d = limiter.decide(key, 1)?;
        three += usize::from(d.allowed);
        show(call, &d);
    }
    Ok((ten, three))
}
