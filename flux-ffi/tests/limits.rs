//! Limits as the C ABI gives them: rates as text, several at once, shadow
//! mode, peeks, refunds and resets, policies by name, and a configuration
//! handed over as JSON.

mod support;

use std::ffi::{c_char, CStr, CString};
use std::ptr;

use flux_ffi::*;
use support::*;

fn memory() -> (*mut flux_config, *mut flux_store) {
    let config = config(MEMORY_NO_JITTER);
    (config, store(config))
}

/// A limiter of `rate` ("10/second;1000/day"), kept alive with its text.
fn rated(store: *const flux_store, config: *const flux_config, rate: &str) -> *mut flux_limiter {
    let text = CString::new(rate).unwrap();
    let params = flux_limit_params {
        set: FLUX_PARAM_RATE,
        rate: text.as_ptr(),
        ..Default::default()
    };
    limiter(store, config, "rated", &params)
}

fn apply(limiter: *const flux_limiter, op: flux_op, key: &[u8], cost: u64) -> flux_decision {
    let mut out = flux_decision::default();
    let rc = flux_limiter_apply(
        limiter,
        op as u32,
        ptr::null(),
        0,
        key.as_ptr(),
        key.len(),
        cost,
        &mut out,
    );
    assert_eq!(rc, flux_result::Ok, "{}", last_error());
    out
}

#[test]
fn a_limit_of_several_rates_lists_its_quotas_and_reports_the_one_closest_to_refusing() {
    let (config, store) = memory();
    let limiter = rated(store, config, "3/second;5/minute");
    let mut quotas = [flux_quota_info::default(); 8];
    let mut count = 0;
    let rc = flux_limiter_quotas(limiter, quotas.as_mut_ptr(), quotas.len(), &mut count);
    assert_eq!((rc, count), (flux_result::Ok, 2));
    let listed: Vec<(u64, f64)> = quotas[..2].iter().map(|q| (q.requests, q.period)).collect();
    assert_eq!(listed, [(3, 1.0), (5, 60.0)]);
    // Too small a buffer says how many it needs and writes nothing.
    let mut one = [flux_quota_info::default(); 1];
    let rc = flux_limiter_quotas(limiter, one.as_mut_ptr(), 1, &mut count);
    assert_eq!(
        (rc, count, one[0].requests),
        (flux_result::BufferTooSmall, 2, 0)
    );

    let decisions: Vec<flux_decision> = (0..4).map(|_| decide(limiter, b"k", 1).unwrap()).collect();
    let summary: Vec<(bool, u32, u64)> = decisions
        .iter()
        .map(|d| (d.allowed, d.quota, d.remaining))
        .collect();
    // 3/second is the closer to refusing until the minute has 5 - 3 left.
    assert_eq!(
        summary,
        [(true, 0, 2), (true, 0, 1), (true, 0, 0), (false, 0, 0)]
    );
    flux_limiter_free(limiter);
    flux_store_free(store);
    flux_config_free(config);
}

#[test]
fn a_bad_rate_is_refused_with_the_part_at_fault() {
    let (config, store) = memory();
    let text = CString::new("10/fortnight").unwrap();
    let params = flux_limit_params {
        set: FLUX_PARAM_RATE,
        rate: text.as_ptr(),
        ..Default::default()
    };
    let (code, message) = try_limiter(store, config, "api", None, Some(&params)).unwrap_err();
    assert_eq!(code, flux_result::InvalidLimit);
    assert!(
        message.starts_with("invalid rate \"10/fortnight\": unknown unit \"fortnight\""),
        "{message}"
    );
    let null = flux_limit_params {
        set: FLUX_PARAM_RATE,
        ..Default::default()
    };
    assert_eq!(
        try_limiter(store, config, "api", None, Some(&null)),
        Err((
            flux_result::NullArgument,
            "params->rate must not be NULL when FLUX_PARAM_RATE is set".into()
        ))
    );
    let both = flux_limit_params {
        set: FLUX_PARAM_RATE | FLUX_PARAM_REQUESTS,
        rate: CString::new("5/second").unwrap().into_raw(),
        requests: 3,
        ..Default::default()
    };
    let (code, message) = try_limiter(store, config, "api", None, Some(&both)).unwrap_err();
    // SAFETY: made by into_raw above.
    drop(unsafe { CString::from_raw(both.rate.cast_mut()) });
    assert_eq!(code, flux_result::InvalidLimit);
    assert!(
        message.starts_with("rate replaces requests and period"),
        "{message}"
    );
    flux_store_free(store);
    flux_config_free(config);
}

#[test]
fn a_shadow_limit_admits_what_it_would_refuse() {
    let (config, store) = memory();
    let params = flux_limit_params {
        set: FLUX_PARAM_REQUESTS | FLUX_PARAM_PERIOD | FLUX_PARAM_SHADOW,
        requests: 1,
        period: 60.0,
        shadow: true,
        ..Default::default()
    };
    let limiter = limiter(store, config, "shadow", &params);
    let first = decide(limiter, b"k", 1).unwrap();
    let second = decide(limiter, b"k", 1).unwrap();
    assert_eq!(
        (first.allowed, first.source),
        (true, flux_source::Storage as u32)
    );
    assert_eq!(
        (second.allowed, second.source),
        (true, flux_source::Shadow as u32)
    );
    flux_limiter_free(limiter);
    flux_store_free(store);
    flux_config_free(config);
}

#[test]
fn peek_refund_and_reset() {
    let (config, store) = memory();
    let limiter = limiter(store, config, "ops", &params(2, 60.0, None));
    assert_eq!(apply(limiter, flux_op::Peek, b"k", 1).remaining, 1);
    for _ in 0..2 {
        assert!(apply(limiter, flux_op::Decide, b"k", 1).allowed);
    }
    assert!(!apply(limiter, flux_op::Peek, b"k", 1).allowed);
    assert!(apply(limiter, flux_op::Refund, b"k", 1).allowed);
    assert!(decide(limiter, b"k", 1).unwrap().allowed);
    assert!(!decide(limiter, b"k", 1).unwrap().allowed);

    let mut removed = 0;
    let rc = flux_limiter_reset(limiter, ptr::null(), 0, b"k".as_ptr(), 1, &mut removed);
    assert_eq!((rc, removed), (flux_result::Ok, 1));
    assert_eq!(apply(limiter, flux_op::Peek, b"k", 1).remaining, 1);

    let mut out = flux_decision::default();
    let rc = flux_limiter_apply(limiter, 7, ptr::null(), 0, b"k".as_ptr(), 1, 1, &mut out);
    assert_eq!(rc, flux_result::InvalidArgument);
    assert_eq!(
        last_error(),
        "op must be FLUX_OP_DECIDE (0), FLUX_OP_PEEK (1) or FLUX_OP_REFUND (2), got 7"
    );
    let rc = flux_limiter_apply(
        limiter,
        flux_op::Refund as u32,
        ptr::null(),
        0,
        b"k".as_ptr(),
        1,
        0,
        &mut out,
    );
    assert_eq!(rc, flux_result::InvalidCost);
    assert_eq!(last_error(), "cost must be at least 1, got 0");
    flux_limiter_free(limiter);
    flux_store_free(store);
    flux_config_free(config);
}

#[test]
fn policies_are_named_by_the_core() {
    let mut out = 99;
    let name = CString::new("sliding_window").unwrap();
    assert_eq!(
        flux_policy_from_name(name.as_ptr(), &mut out),
        flux_result::Ok
    );
    assert_eq!(out, flux_policy::SlidingWindow as u32);
    let bad = CString::new("bogus").unwrap();
    assert_eq!(
        flux_policy_from_name(bad.as_ptr(), &mut out),
        flux_result::InvalidLimit
    );
    assert_eq!(
        out,
        flux_policy::SlidingWindow as u32,
        "no output on failure"
    );
    assert_eq!(
        last_error(),
        "policy must be one of \"gcra\", \"token_bucket\", \"leaky_bucket\", \"fixed_window\", \
         \"sliding_window\", got \"bogus\""
    );
}

/// The names `flux_policy_name` and `flux_source_name` give for 0, 1, 2, ...
/// until the first NULL, and the NULL's value.
fn names(name_of: extern "C" fn(u32) -> *const c_char) -> Vec<String> {
    (0..)
        .map_while(|value| {
            let name = name_of(value);
            // SAFETY: a static NUL-terminated string when not NULL.
            (!name.is_null()).then(|| unsafe { CStr::from_ptr(name) }.to_str().unwrap().to_owned())
        })
        .collect()
}

#[test]
fn every_policy_and_source_has_a_name_for_its_value() {
    let policies = names(flux_policy_name);
    assert_eq!(
        policies,
        [
            "gcra",
            "token_bucket",
            "leaky_bucket",
            "fixed_window",
            "sliding_window"
        ]
    );
    for (value, name) in policies.iter().enumerate() {
        let mut out = u32::MAX;
        let name = CString::new(name.as_str()).unwrap();
        assert_eq!(
            flux_policy_from_name(name.as_ptr(), &mut out),
            flux_result::Ok
        );
        assert_eq!(out as usize, value, "{name:?}");
    }
    assert!(flux_policy_name(u32::MAX).is_null());
    assert_eq!(
        names(flux_source_name),
        ["storage", "fail_open", "local_cache", "shadow"]
    );
    assert!(flux_source_name(u32::MAX).is_null());
}

#[test]
fn an_unknown_policy_value_is_refused_with_every_value_allowed() {
    let config = config(MEMORY_NO_JITTER);
    let store = store(config);
    let allowed = names(flux_policy_name)
        .iter()
        .enumerate()
        .map(|(value, name)| format!("FLUX_POLICY_{} ({value})", name.to_uppercase()))
        .collect::<Vec<_>>()
        .join(", ");
    let first_unknown = names(flux_policy_name).len() as u32;
    for value in [first_unknown, u32::MAX] {
        let params = flux_limit_params {
            set: FLUX_PARAM_POLICY | FLUX_PARAM_REQUESTS | FLUX_PARAM_PERIOD,
            policy: value,
            requests: 5,
            period: 60.0,
            ..Default::default()
        };
        assert_eq!(
            try_limiter(store, config, "s", None, Some(&params)),
            Err((
                flux_result::InvalidLimit,
                format!("policy must be one of {allowed}, got {value}")
            )),
            "never a limiter of some other policy"
        );
    }
    flux_store_free(store);
    flux_config_free(config);
}

#[test]
fn a_configuration_built_in_code_arrives_as_json() {
    let json = r#"{"flux": {"key_prefix": "app:", "jitter_enabled": false},
                   "rate_limits": {"api": {"rate": "2/second;3/minute", "shadow": null}}}"#;
    let origin = CString::new("FluxConfig").unwrap();
    let mut config = ptr::null_mut();
    let rc = flux_config_from_json(
        json.as_ptr().cast(),
        json.len(),
        origin.as_ptr(),
        &mut config,
    );
    assert_eq!(rc, flux_result::Ok, "{}", last_error());
    let store = store(config);
    let name = CString::new("api").unwrap();
    let mut limiter = ptr::null_mut();
    let rc = flux_limiter_new(
        store,
        config,
        c"api".as_ptr(),
        name.as_ptr(),
        ptr::null(),
        &mut limiter,
    );
    assert_eq!(rc, flux_result::Ok, "{}", last_error());
    let mut count = 0;
    let mut quotas = [flux_quota_info::default(); 2];
    flux_limiter_quotas(limiter, quotas.as_mut_ptr(), 2, &mut count);
    assert_eq!((count, quotas[1].requests), (2, 3));

    let bad = r#"{"rate_limits": {"api": {"requests": 0}}}"#;
    let mut other = ptr::null_mut();
    let rc = flux_config_from_json(bad.as_ptr().cast(), bad.len(), origin.as_ptr(), &mut other);
    assert_eq!(rc, flux_result::Config);
    assert!(other.is_null());
    assert_eq!(
        last_error(),
        "FluxConfig: rate_limits.api.requests: must be a whole number of at least 1, got 0"
    );
    flux_limiter_free(limiter);
    flux_store_free(store);
    flux_config_free(config);
}

/// The scope `flux_default_scope` gives, or its error code and message.
fn default_scope(
    config: *const flux_config,
    name: Option<&str>,
    params: &flux_limit_params,
    base: Option<&str>,
) -> Result<String, (flux_result, String)> {
    let name = name.map(|n| CString::new(n).unwrap());
    let base = base.map(|b| CString::new(b).unwrap());
    let as_ptr = |s: &Option<CString>| s.as_ref().map_or(ptr::null(), |s| s.as_ptr());
    let mut buf = [0 as std::ffi::c_char; 64];
    let mut written = 0;
    let rc = flux_default_scope(
        config,
        as_ptr(&name),
        params,
        as_ptr(&base),
        buf.as_mut_ptr(),
        buf.len(),
        &mut written,
    );
    if rc != flux_result::Ok {
        return Err((rc, last_error()));
    }
    let bytes: Vec<u8> = buf[..written].iter().map(|&c| c as u8).collect();
    Ok(String::from_utf8(bytes).unwrap())
}

#[test]
fn default_scopes_keep_limits_written_in_code_apart_and_named_ones_by_name() {
    let config = config(
        "[rate_limit]\nrequests = 100\nperiod = 60\n\
         [rate_limits.login]\nrequests = 5\nperiod = 300\n",
    );
    let none = flux_limit_params::default();
    let rate = CString::new("10/second;1000/day").unwrap();
    let several = flux_limit_params {
        set: FLUX_PARAM_RATE,
        rate: rate.as_ptr(),
        ..Default::default()
    };
    let burst = flux_limit_params {
        set: FLUX_PARAM_REQUESTS | FLUX_PARAM_BURST,
        requests: 5,
        burst: 9,
        ..Default::default()
    };
    let cases = [
        (None, &none, None, "default@100/60s"),
        (Some("login"), &none, None, "login"),
        (Some("login"), &none, Some("app.views.login"), "login"),
        (
            Some("login"),
            &burst,
            Some("app.views.login"),
            "app.views.login@5/300s+b9",
        ),
        (
            None,
            &several,
            Some("app.search"),
            "app.search@10/1s;1000/86400s",
        ),
        (None, &burst, None, "default@5/60s+b9"),
    ];
    for (name, params, base, scope) in cases {
        assert_eq!(
            default_scope(config, name, params, base).as_deref(),
            Ok(scope)
        );
    }
    // A bad limit fails as making its limiter would.
    let (code, message) = default_scope(config, Some("nope"), &none, None).unwrap_err();
    assert_eq!(code, flux_result::UnknownLimit);
    assert!(message.contains("\"nope\""), "{message}");
    let zero = flux_limit_params {
        set: FLUX_PARAM_REQUESTS,
        requests: 0,
        ..Default::default()
    };
    let (code, message) = default_scope(config, None, &zero, None).unwrap_err();
    assert_eq!(code, flux_result::InvalidLimit);
    assert!(message.starts_with("requests must be"), "{message}");
    // Too small a buffer says what it needs.
    let mut tiny = [0 as std::ffi::c_char; 4];
    let mut written = 0;
    let rc = flux_default_scope(
        config,
        ptr::null(),
        &none,
        ptr::null(),
        tiny.as_mut_ptr(),
        tiny.len(),
        &mut written,
    );
    assert_eq!((rc, written), (flux_result::BufferTooSmall, 16));
    flux_config_free(config);
}
