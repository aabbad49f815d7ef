//! Failing open is said in the host's log once per interval per store, by
//! the store's warning clock (moved by hand here, never slept), whether the
//! calls came one by one or in batches, with the count of the calls held
//! back since the last warning. A test binary of its own: the log is
//! process-wide.

mod support;

use std::sync::Arc;

use flux_core::config::Config;
use flux_core::{
    apply_batch, BatchRequest, LimitSpec, Limiter, ManualClock, Op, Source, WARNING_INTERVAL,
};
use support::{take_warnings, DeadPort};

#[test]
fn failing_open_is_said_once_per_interval_on_single_calls_and_batches() {
    let nowhere = DeadPort::new();
    let config = Config::from_toml_str(
        &format!(
            "[redis]\nurl = \"{}\"\ntimeout_ms = 100\n\
             [flux]\nfail_silently = true\njitter_enabled = false\n",
            nowhere.url()
        ),
        None,
    )
    .unwrap();
    let clock = ManualClock::new(0);
    let opened = flux_redis::open(&config).unwrap();
    let backend = Arc::into_inner(opened.backend).expect("the only handle");
    let backend = Arc::new(backend.with_warning_clock(Arc::new(clock.clone())));
    let rate = LimitSpec {
        requests: Some(5),
        period: Some(60.0),
        ..LimitSpec::default()
    };
    let limiter = Limiter::new(backend, &config, "api", None, &rate).unwrap();
    let single = || {
        let d = limiter.decide(b"k", 1).unwrap();
        assert_eq!(d.source, Source::FailOpen);
    };
    let batch = |n: usize| {
        let identities: Vec<String> = (0..n).map(|i| format!("client-{i}")).collect();
        let requests: Vec<BatchRequest<'_>> = identities
            .iter()
            .map(|identity| BatchRequest {
                limiter: &limiter,
                endpoint: None,
                identity: identity.as_bytes(),
                cost: 1,
                op: Op::Decide,
            })
            .collect();
        for d in apply_batch(&requests) {
            assert_eq!(d.unwrap().source, Source::FailOpen);
        }
    };
    let interval = WARNING_INTERVAL.as_micros() as u64;
    let said = format!("Redis at {} failed: Redis is unreachable: ", nowhere.url());
    take_warnings();

    // The first call says it, the next 4 single calls and a batch of 3 do not.
    for _ in 0..5 {
        single();
    }
    batch(3);
    let warnings = take_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with(&said), "{}", warnings[0]);
    assert!(
        warnings[0].ends_with("(fail_silently = true). Said at most once every 60 s."),
        "{}",
        warnings[0]
    );

    // A microsecond short of the interval: still nothing.
    clock.advance_us(interval - 1);
    batch(2);
    single();
    assert_eq!(take_warnings(), Vec::<String>::new());

    // Once the interval has passed, a batch says it again, with the 10 calls
    // held back since: 4 + 3 single and batched, then 2 + 1.
    clock.advance_us(1);
    batch(4);
    let warnings = take_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with(&said), "{}", warnings[0]);
    assert!(
        warnings[0].ends_with("; 10 more since the last warning. Said at most once every 60 s."),
        "{}",
        warnings[0]
    );

    // And the interval runs from that second warning.
    clock.advance_us(interval - 1);
    single();
    assert_eq!(take_warnings(), Vec::<String>::new());
    clock.advance_us(1);
    single();
    let warnings = take_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].ends_with("; 4 more since the last warning. Said at most once every 60 s."),
        "{}",
        warnings[0]
    );
}
