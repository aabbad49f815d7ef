//! `flux_store_metrics`: the store's counters as Prometheus text or JSON,
//! through the caller's buffer.

mod support;

use std::ffi::c_char;
use std::ptr;

use flux_ffi::*;
use support::*;

/// The metrics in `format`, asking for the size first the way a C caller does.
fn metrics(store: *const flux_store, format: flux_metrics) -> String {
    let mut needed = 0;
    let rc = flux_store_metrics(store, format as u32, ptr::null_mut(), 0, &mut needed);
    assert_eq!(rc, flux_result::BufferTooSmall);
    let mut buf = vec![0u8; needed];
    let mut written = 0;
    let rc = flux_store_metrics(
        store,
        format as u32,
        buf.as_mut_ptr().cast::<c_char>(),
        buf.len(),
        &mut written,
    );
    assert_eq!(rc, flux_result::Ok, "{}", last_error());
    assert_eq!(written + 1, needed, "the size asked for, NUL included");
    assert_eq!(buf[written], 0, "NUL-terminated");
    buf.truncate(written);
    String::from_utf8(buf).unwrap()
}

#[test]
fn a_store_reports_its_limiters_decisions() {
    let config = config(MEMORY_NO_JITTER);
    let first = store(config);
    let login = limiter(first, config, "login", &params(2, 60.0, None));
    for _ in 0..3 {
        decide(login, b"10.0.0.1", 1).unwrap();
    }
    // Not a decision: not counted.
    assert_eq!(
        decide(login, b"10.0.0.1", 0).unwrap_err(),
        (
            flux_result::InvalidCost,
            "cost must be at least 1, got 0".to_owned()
        )
    );

    let text = metrics(first, flux_metrics::Prometheus);
    for line in [
        "flux_requests_total{endpoint=\"login\",decision=\"allowed\"} 2\n",
        "flux_requests_total{endpoint=\"login\",decision=\"blocked\"} 1\n",
        "flux_requests_total{endpoint=\"login\",decision=\"fail_open\"} 0\n",
        "flux_decision_seconds_count{endpoint=\"login\"} 3\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }

    let json: serde_json::Value =
        serde_json::from_str(&metrics(first, flux_metrics::Json)).unwrap();
    let login_json = &json["endpoints"]["login"];
    assert_eq!(
        (
            &login_json["allowed"],
            &login_json["blocked"],
            &login_json["total"]
        ),
        (&2.into(), &1.into(), &3.into())
    );
    assert_eq!(json["events_dropped"], 0);

    // Another store counts its own.
    let other = store(config);
    assert!(!metrics(other, flux_metrics::Prometheus).contains("login"));

    flux_limiter_free(login);
    flux_store_free(other);
    flux_store_free(first);
    flux_config_free(config);
}

#[test]
fn bad_arguments_are_reported() {
    let config = config(MEMORY_NO_JITTER);
    let store = store(config);
    let mut buf = [0 as c_char; 8];
    let mut written = 0;
    // Too small: nothing written but the size.
    let rc = flux_store_metrics(store, 0, buf.as_mut_ptr(), buf.len(), &mut written);
    assert_eq!(rc, flux_result::BufferTooSmall);
    assert!(written > buf.len());
    assert_eq!(buf, [0; 8]);
    assert!(
        last_error().contains("the metrics snapshot needs"),
        "{}",
        last_error()
    );

    let rc = flux_store_metrics(store, 7, buf.as_mut_ptr(), buf.len(), &mut written);
    assert_eq!(rc, flux_result::InvalidArgument);
    assert!(last_error().contains("got 7"), "{}", last_error());
    let rc = flux_store_metrics(ptr::null(), 0, buf.as_mut_ptr(), buf.len(), &mut written);
    assert_eq!(rc, flux_result::NullArgument);
    let rc = flux_store_metrics(store, 0, buf.as_mut_ptr(), buf.len(), ptr::null_mut());
    assert_eq!(rc, flux_result::NullArgument);
    let rc = flux_store_metrics(store, 0, ptr::null_mut(), 4096, &mut written);
    assert_eq!(rc, flux_result::NullArgument, "NULL with a length");

    flux_store_free(store);
    flux_config_free(config);
}
