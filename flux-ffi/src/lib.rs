//! The C ABI of Flux: the one door through which C, C++ and Python (ctypes)
//! reach the same Rust core. `include/flux.h` is generated from this crate
//! by cbindgen (`make header`).
//!
//! Conventions, in the manner of rustls-ffi: every symbol starts with
//! `flux_`; handles are opaque pointers made by a constructor and released
//! by their `_free`, which accepts NULL; a fallible function returns a
//! [`flux_result`] and writes its output through an out-pointer, only on
//! success, and leaves a message for [`flux_last_error`]; NULL pointers, bad
//! UTF-8 and lengths that do not match are errors, and a panic is caught at
//! the boundary ([`ffi_panic_boundary!`]) and becomes `FLUX_RESULT_PANIC`.
//!
//! All raw-pointer handling lives in `ffi.rs`; each other module holds the
//! functions of one topic, and modules depend on each other in one
//! direction only: `error` and `decision` (plain types) below `ffi`, then
//! `completions` (the queue async batches are answered into),
//! `worker` (the async thread), `store`, `limiter`, and the calls on top
//! (`decide`, `decide_async`, `messages`).

// The exported names are C names, and they are what cbindgen writes.
#![allow(non_camel_case_types)]
// Exported functions are called from C, where `unsafe` means nothing; the
// pointer contracts are on each function's documentation and every
// dereference goes through the checked helpers of ffi.rs.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

#[doc(hidden)]
pub mod ffi;

mod completions;
mod config;
mod decide;
mod decide_async;
mod decision;
mod error;
mod fork;
mod limiter;
mod logging;
mod messages;
mod store;
mod worker;

pub use completions::*;
pub use config::*;
pub use decide::*;
pub use decide_async::*;
pub use decision::*;
pub use error::*;
pub use limiter::*;
pub use logging::*;
pub use messages::*;
pub use store::*;
pub use worker::*;

use std::ffi::c_char;

/// The library's version, e.g. "0.2.0": a static NUL-terminated string,
/// never to be freed.
#[no_mangle]
pub extern "C" fn flux_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
