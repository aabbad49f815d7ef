//! Bad arguments at the boundary are error codes with messages that name the
//! argument, never undefined behaviour; outputs are written only on success.

mod support;

use std::ffi::{c_char, CStr};
use std::ptr;

use flux_ffi::*;
use support::*;

fn memory() -> (*mut flux_config, *mut flux_store) {
    let config = config(MEMORY_NO_JITTER);
    (config, store(config))
}

#[test]
fn null_handles_and_out_pointers_are_refused_by_name() {
    let (config, store) = memory();
    let limiter = limiter(store, config, "api", &params(10, 10.0, None));
    let mut decision = flux_decision::default();

    let rc = flux_limiter_decide(ptr::null(), b"k".as_ptr(), 1, 1, &mut decision);
    assert_eq!(rc, flux_result::NullArgument);
    assert_eq!(last_error(), "argument `limiter` must not be NULL");

    let rc = flux_limiter_decide(limiter, b"k".as_ptr(), 1, 1, ptr::null_mut());
    assert_eq!(rc, flux_result::NullArgument);
    assert_eq!(last_error(), "argument `out` must not be NULL");

    assert_eq!(
        flux_config_default(ptr::null_mut()),
        flux_result::NullArgument
    );
    assert_eq!(last_error(), "argument `out` must not be NULL");
    let mut out = ptr::null_mut();
    assert_eq!(
        flux_store_new(ptr::null(), &mut out),
        flux_result::NullArgument
    );
    assert_eq!(last_error(), "argument `config` must not be NULL");
    assert!(out.is_null());
    assert_eq!(flux_store_preload(ptr::null()), flux_result::NullArgument);
    assert_eq!(flux_store_kind(ptr::null()), u32::MAX);
    let mut deleted = 7;
    assert_eq!(
        flux_store_clear(ptr::null(), &mut deleted),
        flux_result::NullArgument
    );
    assert_eq!(deleted, 7, "no output on failure");
    assert_eq!(
        try_limiter(ptr::null(), config, "api", None, None),
        Err((
            flux_result::NullArgument,
            "argument `store` must not be NULL".into()
        ))
    );
    assert_eq!(
        try_limiter(store, ptr::null(), "api", None, None),
        Err((
            flux_result::NullArgument,
            "argument `config` must not be NULL".into()
        ))
    );
    let mut quota = flux_quota_info::default();
    assert_eq!(
        flux_limiter_quota(ptr::null(), &mut quota),
        flux_result::NullArgument
    );

    // Every _free takes NULL.
    flux_limiter_free(ptr::null_mut());
    flux_store_free(ptr::null_mut());
    flux_config_free(ptr::null_mut());

    flux_limiter_free(limiter);
    flux_store_free(store);
    flux_config_free(config);
}

#[test]
fn a_key_is_any_bytes_with_a_length_and_null_only_when_empty() {
    let (config, store) = memory();
    let limiter = limiter(store, config, "api", &params(1, 60.0, None));

    // NULL with a length is refused, and nothing is written.
    let mut decision = flux_decision {
        limit: 99,
        ..Default::default()
    };
    let rc = flux_limiter_decide(limiter, ptr::null(), 5, 1, &mut decision);
    assert_eq!(rc, flux_result::NullArgument);
    assert_eq!(last_error(), "argument `key` is NULL but `key_len` is 5");
    assert_eq!(decision.limit, 99);

    // NULL with length 0 is the empty key, which is a key like any other.
    assert!(decide(limiter, &[], 1).unwrap().allowed);
    let rc = flux_limiter_decide(limiter, ptr::null(), 0, 1, &mut decision);
    assert_eq!(rc, flux_result::Ok);
    assert!(!decision.allowed, "the empty key has used its one call");

    // The length, not a NUL, ends a key: these are three different callers.
    assert!(decide(limiter, b"a\0b", 1).unwrap().allowed);
    assert!(decide(limiter, b"a\0c", 1).unwrap().allowed);
    assert!(decide(limiter, b"a", 1).unwrap().allowed);
    assert!(!decide(limiter, b"a\0b", 1).unwrap().allowed);

    flux_limiter_free(limiter);
    flux_store_free(store);
    flux_config_free(config);
}

/// `flux_limiter_decide_endpoint`: the decision, or the code and message.
fn decide_at(
    limiter: *const flux_limiter,
    endpoint: &[u8],
    key: &[u8],
) -> Result<flux_decision, (flux_result, String)> {
    let mut out = flux_decision::default();
    let rc = flux_limiter_decide_endpoint(
        limiter,
        endpoint.as_ptr(),
        endpoint.len(),
        key.as_ptr(),
        key.len(),
        1,
        &mut out,
    );
    match rc {
        flux_result::Ok => Ok(out),
        code => Err((code, last_error())),
    }
}

#[test]
fn an_endpoint_is_utf8_with_a_length_and_a_limit_of_its_own() {
    let (config, store) = memory();
    let limiter = limiter(store, config, "api", &params(1, 60.0, None));
    // The length, not a NUL, ends an endpoint: four limits, and the
    // limiter's own (no endpoint, or an empty one) a fifth.
    for endpoint in [&b"a\0b"[..], b"a\0c", b"a", b"a:b"] {
        assert!(decide_at(limiter, endpoint, b"k").unwrap().allowed);
    }
    assert!(!decide_at(limiter, b"a\0b", b"k").unwrap().allowed);
    assert!(decide(limiter, b"k", 1).unwrap().allowed);
    assert!(!decide_at(limiter, b"", b"k").unwrap().allowed);
    let mut out = flux_decision::default();
    let rc = flux_limiter_decide_endpoint(limiter, ptr::null(), 0, b"k".as_ptr(), 1, 1, &mut out);
    assert_eq!((rc, out.allowed), (flux_result::Ok, false));

    assert_eq!(
        decide_at(limiter, b"caf\xe9", b"k").unwrap_err(),
        (
            flux_result::InvalidUtf8,
            "argument `endpoint` is not valid UTF-8 (bad byte at offset 3)".to_owned()
        )
    );
    let rc = flux_limiter_decide_endpoint(limiter, ptr::null(), 3, b"k".as_ptr(), 1, 1, &mut out);
    assert_eq!(rc, flux_result::NullArgument);
    assert_eq!(
        last_error(),
        "argument `endpoint` is NULL but `endpoint_len` is 3"
    );

    flux_limiter_free(limiter);
    flux_store_free(store);
    flux_config_free(config);
}

#[test]
fn strings_must_be_utf8() {
    let (config, store) = memory();
    let bad = b"ap\xffi\0";
    let mut out = ptr::null_mut();
    let rc = flux_limiter_new(
        store,
        config,
        bad.as_ptr().cast(),
        ptr::null(),
        ptr::null(),
        &mut out,
    );
    assert_eq!(rc, flux_result::InvalidUtf8);
    assert_eq!(
        last_error(),
        "argument `scope` is not valid UTF-8 (bad byte at offset 2)"
    );
    assert!(out.is_null());

    let rc = flux_limiter_new(
        store,
        config,
        c"api".as_ptr(),
        bad.as_ptr().cast(),
        ptr::null(),
        &mut out,
    );
    assert_eq!(rc, flux_result::InvalidUtf8);
    assert_eq!(
        last_error(),
        "argument `name` is not valid UTF-8 (bad byte at offset 2)"
    );

    let toml = b"[flux]\nkey_prefix = \"\xc3\x28\"\n";
    let mut config_out = ptr::null_mut();
    let rc = flux_config_from_toml(
        toml.as_ptr().cast(),
        toml.len(),
        ptr::null(),
        &mut config_out,
    );
    assert_eq!(rc, flux_result::InvalidUtf8);
    assert_eq!(
        last_error(),
        "argument `toml` is not valid UTF-8 (bad byte at offset 21)"
    );
    assert!(config_out.is_null());

    let rc = flux_config_from_toml(ptr::null(), 3, ptr::null(), &mut config_out);
    assert_eq!(rc, flux_result::NullArgument);
    assert_eq!(last_error(), "argument `toml` is NULL but `len` is 3");

    let rc = flux_config_from_file(bad.as_ptr().cast(), &mut config_out);
    assert_eq!(rc, flux_result::InvalidUtf8);
    assert_eq!(
        last_error(),
        "argument `path` is not valid UTF-8 (bad byte at offset 2)"
    );

    flux_store_free(store);
    flux_config_free(config);
}

#[test]
fn bad_limit_parameters_are_refused_with_the_field_named() {
    let (config, store) = memory();
    let refused =
        |p: flux_limit_params| try_limiter(store, config, "api", None, Some(&p)).unwrap_err();

    assert_eq!(
        refused(params(0, 10.0, None)),
        (
            flux_result::InvalidLimit,
            "requests must be a whole number of at least 1, got 0".into()
        )
    );
    assert_eq!(
        refused(params(-5, 10.0, None)),
        (
            flux_result::InvalidLimit,
            "requests must be a whole number of at least 1, got -5".into()
        )
    );
    assert_eq!(
        refused(params(10, 0.0, None)),
        (
            flux_result::InvalidLimit,
            "period must be a number of seconds greater than 0 (at least 0.000001), got 0".into()
        )
    );
    assert_eq!(
        refused(params(10, f64::NAN, None)),
        (
            flux_result::InvalidLimit,
            "period must be a number of seconds greater than 0 (at least 0.000001), got NaN".into()
        )
    );
    assert_eq!(
        refused(params(10, 10.0, Some(0))),
        (
            flux_result::InvalidLimit,
            "burst must be at least 1, got 0".into()
        )
    );
    assert_eq!(
        refused(params(10, 10.0, Some(-1))),
        (
            flux_result::InvalidLimit,
            "burst must be at least 1, got -1".into()
        )
    );
    let policy = |value: u32| flux_limit_params {
        set: FLUX_PARAM_POLICY,
        policy: value,
        ..Default::default()
    };
    assert_eq!(
        refused(policy(9)),
        (
            flux_result::InvalidLimit,
            "policy must be one of FLUX_POLICY_GCRA (0), FLUX_POLICY_TOKEN_BUCKET (1), \
             FLUX_POLICY_LEAKY_BUCKET (2), FLUX_POLICY_FIXED_WINDOW (3), \
             FLUX_POLICY_SLIDING_WINDOW (4), got 9"
                .into()
        )
    );
    let max_wait = flux_limit_params {
        set: FLUX_PARAM_MAX_WAIT,
        max_wait: 1.0,
        ..Default::default()
    };
    assert_eq!(
        refused(max_wait),
        (
            flux_result::InvalidLimit,
            "max_wait applies to leaky_bucket only; gcra cannot delay a call".into()
        )
    );
    let window_burst = flux_limit_params {
        policy: flux_policy::FixedWindow as u32,
        set: FLUX_PARAM_POLICY | FLUX_PARAM_BURST,
        burst: 5,
        ..Default::default()
    };
    assert_eq!(refused(window_burst).0, flux_result::InvalidLimit);
    assert!(last_error().starts_with("burst applies to gcra, token_bucket and leaky_bucket"));
    assert_eq!(
        refused(flux_limit_params {
            set: 128,
            ..Default::default()
        }),
        (
            flux_result::InvalidArgument,
            "set has unknown bits 0x80; allowed are the FLUX_PARAM_* values".into()
        )
    );
    // A field whose bit is not set does not count, however bad its value.
    let unset = flux_limit_params {
        requests: -1,
        period: -1.0,
        ..Default::default()
    };
    let limiter = try_limiter(store, config, "api", None, Some(&unset)).unwrap();
    flux_limiter_free(limiter);

    assert_eq!(
        try_limiter(store, config, "", None, None),
        Err((
            flux_result::InvalidArgument,
            "scope must not be empty: it keeps this limit's keys apart from other limits'".into()
        ))
    );

    flux_store_free(store);
    flux_config_free(config);
}

#[test]
fn costs_outside_the_limit_are_refused() {
    let (config, store) = memory();
    let limiter = limiter(store, config, "api", &params(10, 10.0, None));
    assert_eq!(
        decide(limiter, b"k", 0),
        Err((
            flux_result::InvalidCost,
            "cost must be at least 1, got 0".into()
        ))
    );
    assert_eq!(
        decide(limiter, b"k", 11),
        Err((
            flux_result::InvalidCost,
            "cost 11 can never be admitted: the limit holds at most 10 at once".into()
        ))
    );
    // The same check without deciding, for callers that validate up front.
    assert_eq!(flux_limiter_check_cost(limiter, 10), flux_result::Ok);
    assert_eq!(
        flux_limiter_check_cost(limiter, 11),
        flux_result::InvalidCost
    );
    assert_eq!(
        last_error(),
        "cost 11 can never be admitted: the limit holds at most 10 at once"
    );
    assert_eq!(
        flux_limiter_check_cost(limiter, 0),
        flux_result::InvalidCost
    );
    assert_eq!(
        flux_limiter_check_cost(ptr::null(), 1),
        flux_result::NullArgument
    );
    let d = decide(limiter, b"k", 10).unwrap();
    assert!(d.allowed);
    assert_eq!(d.remaining, 0);
    flux_limiter_free(limiter);
    flux_store_free(store);
    flux_config_free(config);
}

#[test]
fn named_limits_come_from_the_configuration_and_params_override_them() {
    let config = config(
        "[flux]\njitter_enabled = false\n\
         [rate_limit]\nrequests = 100\nperiod = 60\n\
         [rate_limits.login]\npolicy = \"leaky_bucket\"\nrequests = 5\nperiod = 60\nburst = 2\nmax_wait = 1.5\n",
    );
    let store = store(config);
    let quota_of = |limiter: *const flux_limiter| {
        let mut q = flux_quota_info::default();
        assert_eq!(flux_limiter_quota(limiter, &mut q), flux_result::Ok);
        (q.policy, q.requests, q.period, q.burst, q.max_wait)
    };

    let default = try_limiter(store, config, "api", None, None).unwrap();
    assert_eq!(
        quota_of(default),
        (flux_policy::Gcra as u32, 100, 60.0, 100, 0.0)
    );

    let login = try_limiter(store, config, "login", Some("login"), None).unwrap();
    assert_eq!(
        quota_of(login),
        (flux_policy::LeakyBucket as u32, 5, 60.0, 2, 1.5)
    );

    // A new period keeps the named burst; new requests take their own burst.
    let p = flux_limit_params {
        set: FLUX_PARAM_PERIOD,
        period: 30.0,
        ..Default::default()
    };
    let faster = try_limiter(store, config, "login", Some("login"), Some(&p)).unwrap();
    assert_eq!(
        quota_of(faster),
        (flux_policy::LeakyBucket as u32, 5, 30.0, 2, 1.5)
    );
    let more = try_limiter(
        store,
        config,
        "login",
        Some("login"),
        Some(&params(8, 60.0, None)),
    )
    .unwrap();
    assert_eq!(
        quota_of(more),
        (flux_policy::LeakyBucket as u32, 8, 60.0, 8, 1.5)
    );

    assert_eq!(
        try_limiter(store, config, "x", Some("signup"), None),
        Err((
            flux_result::UnknownLimit,
            "rate_limits.signup: no limit named \"signup\"; defined: \"login\"".into()
        ))
    );

    for limiter in [default, login, faster, more] {
        flux_limiter_free(limiter);
    }
    flux_store_free(store);
    flux_config_free(config);
}

#[test]
fn configuration_errors_name_the_origin_line_and_key() {
    let text = "[rate_limit]\nrequests = 0\n";
    let mut out = ptr::null_mut();
    let rc = flux_config_from_toml(
        text.as_ptr().cast(),
        text.len(),
        c"app.toml".as_ptr(),
        &mut out,
    );
    assert_eq!(rc, flux_result::Config);
    assert_eq!(
        last_error(),
        "app.toml:2: rate_limit.requests: must be a whole number of at least 1, got 0"
    );
    assert!(out.is_null());

    let rc = flux_config_from_file(c"/nonexistent/flux.toml".as_ptr(), &mut out);
    assert_eq!(rc, flux_result::Config);
    assert!(
        last_error().starts_with("/nonexistent/flux.toml: cannot read the file:"),
        "{}",
        last_error()
    );
}

#[test]
fn the_configuration_reads_back_as_json() {
    let text = "[flux]\nkey_prefix = \"app:\"\n[rate_limits.login]\nrequests = 5\nperiod = 60\n";
    let mut config = ptr::null_mut();
    let rc = flux_config_from_toml(
        text.as_ptr().cast(),
        text.len(),
        c"flux.toml".as_ptr(),
        &mut config,
    );
    assert_eq!(rc, flux_result::Ok);

    // Asking with no buffer tells the size, NUL included.
    let mut needed = 0;
    let rc = flux_config_to_json(config, ptr::null_mut(), 0, &mut needed);
    assert_eq!(rc, flux_result::BufferTooSmall);
    assert!(last_error().starts_with(&format!("the configuration's JSON needs {needed} bytes")));
    let mut buf = vec![0x55 as c_char; needed];
    let mut written = 0;
    let rc = flux_config_to_json(config, buf.as_mut_ptr(), needed - 1, &mut written);
    assert_eq!(rc, flux_result::BufferTooSmall);
    assert_eq!(written, needed);
    assert_eq!(buf[0], 0x55, "nothing copied when it does not fit");

    let rc = flux_config_to_json(config, buf.as_mut_ptr(), needed, &mut written);
    assert_eq!(rc, flux_result::Ok);
    assert_eq!(written, needed - 1);
    // SAFETY: the buffer was just NUL-terminated by the call.
    let json = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap();
    assert_eq!(json.len(), written);
    for part in [
        r#""origin":"flux.toml""#,
        r#""storage":"memory""#,
        r#""key_prefix":"app:""#,
        r#""rate_limit":{"policy":"gcra","rate":"100/60s","requests":100,"period":60.0,"burst":null,"max_wait":0.0,"shadow":false}"#,
        r#""rate_limits":{"login":{"policy":"gcra","rate":"5/60s","requests":5,"period":60.0,"burst":null,"max_wait":0.0,"shadow":false}}"#,
        r#""timeout_ms":200"#,
        r#""sample_rate":1.0"#,
    ] {
        assert!(json.contains(part), "{part} not in {json}");
    }
    flux_config_free(config);
}

#[test]
fn a_url_reads_back_with_its_password_hidden() {
    let url = c"redis://app:se/cr@t@cache:6379/0?password=also";
    let mut needed = 0;
    let rc = flux_redact_url(url.as_ptr(), ptr::null_mut(), 0, &mut needed);
    assert_eq!(rc, flux_result::BufferTooSmall);
    let mut buf = vec![0 as c_char; needed];
    let mut written = 0;
    let rc = flux_redact_url(url.as_ptr(), buf.as_mut_ptr(), needed, &mut written);
    assert_eq!(rc, flux_result::Ok);
    // SAFETY: the buffer was just NUL-terminated by the call.
    let shown = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap();
    assert_eq!(shown, "redis://app:***@cache:6379/0?password=***");
    assert_eq!(written, shown.len());
    let rc = flux_redact_url(ptr::null(), buf.as_mut_ptr(), needed, &mut written);
    assert_eq!(rc, flux_result::NullArgument);
}

#[test]
fn version_and_store_kind() {
    // SAFETY: a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(flux_version()) };
    assert_eq!(version.to_str().unwrap(), env!("CARGO_PKG_VERSION"));

    let (config, store) = memory();
    assert_eq!(flux_store_kind(store), flux_storage::Memory as u32);
    flux_store_free(store);
    flux_config_free(config);
}

#[test]
fn clear_forgets_every_key_under_the_prefix() {
    let (config, store) = memory();
    let limiter = limiter(store, config, "api", &params(1, 60.0, None));
    assert!(decide(limiter, b"a", 1).unwrap().allowed);
    assert!(decide(limiter, b"b", 1).unwrap().allowed);
    assert!(!decide(limiter, b"a", 1).unwrap().allowed);
    let mut deleted = 0;
    assert_eq!(flux_store_clear(store, &mut deleted), flux_result::Ok);
    assert_eq!(deleted, 2);
    assert!(decide(limiter, b"a", 1).unwrap().allowed);
    assert_eq!(
        flux_store_preload(store),
        flux_result::Ok,
        "nothing to load in memory"
    );
    flux_limiter_free(limiter);
    flux_store_free(store);
    flux_config_free(config);
}
