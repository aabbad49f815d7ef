//! A panic inside Rust never crosses into C: the boundary every exported
//! function runs in turns it into FLUX_RESULT_PANIC and a message.

mod support;

use flux_ffi::{ffi_panic_boundary, flux_result};
use support::last_error;

/// An exported function built like every flux_* function, whose body panics.
#[allow(unreachable_code)]
extern "C" fn exported_that_panics(divisor: u32) -> flux_result {
    ffi_panic_boundary! {
        if divisor == 0 {
            panic!("divisor was {divisor}");
        }
        flux_result::Ok
    }
}

extern "C" fn size_that_panics() -> usize {
    ffi_panic_boundary! {
        let empty: Vec<usize> = Vec::new();
        empty[3]
    }
}

#[test]
fn a_panic_becomes_a_result_code_with_its_message() {
    assert_eq!(exported_that_panics(1), flux_result::Ok);
    assert_eq!(exported_that_panics(0), flux_result::Panic);
    assert_eq!(
        last_error(),
        "internal error in flux (a Rust panic was caught): divisor was 0"
    );
}

#[test]
fn a_function_without_a_result_returns_its_documented_default() {
    assert_eq!(size_that_panics(), 0);
    assert!(
        last_error().contains("index out of bounds"),
        "{}",
        last_error()
    );
}
