//! Every raw pointer that crosses the boundary is turned into a Rust value
//! here, so the exported functions read like ordinary Rust.
//!
//! Handles are opaque zero-sized structs, one per Rust type ([`Handle`]).
//! Configurations are boxed; stores and limiters are reference counted
//! (`Arc`), because limiters and queued async requests keep their store alive.
//!
//! The `try_*!` macros return early from the exported function (or from the
//! closure inside [`ffi_panic_boundary!`]) with `FLUX_RESULT_NULL_ARGUMENT`
//! or `FLUX_RESULT_INVALID_UTF8` and a message naming the argument.

use std::any::Any;
use std::ffi::{c_char, CStr, CString};
use std::sync::Arc;

use crate::error::{fail, flux_result};

/// An opaque C handle that stands for one Rust type.
pub(crate) trait Handle {
    type Target;
}

/// A handle given to C as `Box::into_raw`.
pub(crate) trait BoxHandle: Handle {}

/// A handle given to C as `Arc::into_raw`.
pub(crate) trait ArcHandle: Handle {}

pub(crate) fn box_into_handle<H: BoxHandle>(value: H::Target) -> *mut H {
    Box::into_raw(Box::new(value)).cast()
}

/// Drops what [`box_into_handle`] made; NULL is ignored.
///
/// # Safety
/// `ptr` is NULL or came from `box_into_handle::<H>` and was not freed yet.
pub(crate) unsafe fn free_box_handle<H: BoxHandle>(ptr: *mut H) {
    if !ptr.is_null() {
        // SAFETY: per the contract above.
        drop(unsafe { Box::from_raw(ptr.cast::<H::Target>()) });
    }
}

pub(crate) fn arc_into_handle<H: ArcHandle>(value: Arc<H::Target>) -> *mut H {
    Arc::into_raw(value).cast_mut().cast()
}

/// A new strong reference to what the handle holds; `None` for NULL.
///
/// # Safety
/// `ptr` is NULL or a live handle made by `arc_into_handle::<H>`.
pub(crate) unsafe fn clone_arc<H: ArcHandle>(ptr: *const H) -> Option<Arc<H::Target>> {
    let ptr = ptr.cast::<H::Target>();
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the handle holds one strong count, which stays with the caller.
    unsafe {
        Arc::increment_strong_count(ptr);
        Some(Arc::from_raw(ptr))
    }
}

/// Releases the reference [`arc_into_handle`] gave out; NULL is ignored.
///
/// # Safety
/// `ptr` is NULL or came from `arc_into_handle::<H>` and was not freed yet.
pub(crate) unsafe fn free_arc_handle<H: ArcHandle>(ptr: *mut H) {
    if !ptr.is_null() {
        // SAFETY: per the contract above.
        drop(unsafe { Arc::from_raw(ptr.cast_const().cast::<H::Target>()) });
    }
}

/// Borrows what a handle stands for; `None` for NULL.
///
/// # Safety
/// `ptr` is NULL or a live handle of type `H`, alive for `'a`.
pub(crate) unsafe fn handle_ref<'a, H: Handle>(ptr: *const H) -> Option<&'a H::Target> {
    // SAFETY: per the contract above.
    unsafe { ptr.cast::<H::Target>().as_ref() }
}

/// Copies `message` into the caller's `buf` of `len` bytes, NUL-terminated
/// and truncated at a character boundary; returns its full length.
pub(crate) fn copy_message(message: &str, buf: *mut c_char, len: usize) -> usize {
    if !buf.is_null() && len > 0 {
        let mut n = message.len().min(len - 1);
        while !message.is_char_boundary(n) {
            n -= 1;
        }
        // SAFETY: the caller gives `len` writable bytes at `buf`; n < len.
        unsafe {
            std::ptr::copy_nonoverlapping(message.as_ptr(), buf.cast::<u8>(), n);
            *buf.add(n) = 0;
        }
    }
    message.len()
}

/// What an exported function returns when an argument is NULL or it panicked.
#[doc(hidden)]
pub trait FfiDefault {
    fn null_argument(message: String) -> Self;
    fn panicked(message: String) -> Self;
}

impl FfiDefault for flux_result {
    fn null_argument(message: String) -> Self {
        fail(flux_result::NullArgument, message)
    }
    fn panicked(message: String) -> Self {
        fail(flux_result::Panic, message)
    }
}

/// Sizes: 0 (`flux_last_error`).
impl FfiDefault for usize {
    fn null_argument(message: String) -> Self {
        fail(flux_result::NullArgument, message);
        0
    }
    fn panicked(message: String) -> Self {
        fail(flux_result::Panic, message);
        0
    }
}

/// Kinds: `u32::MAX`, which is no kind (`flux_store_kind`).
impl FfiDefault for u32 {
    fn null_argument(message: String) -> Self {
        fail(flux_result::NullArgument, message);
        u32::MAX
    }
    fn panicked(message: String) -> Self {
        fail(flux_result::Panic, message);
        u32::MAX
    }
}

/// Descriptors (`flux_completions_fd`): -1, which is none.
impl FfiDefault for i32 {
    fn null_argument(message: String) -> Self {
        fail(flux_result::NullArgument, message);
        -1
    }
    fn panicked(message: String) -> Self {
        fail(flux_result::Panic, message);
        -1
    }
}

/// Answers to a yes/no question (`flux_async_shutdown`): false.
impl FfiDefault for bool {
    fn null_argument(message: String) -> Self {
        fail(flux_result::NullArgument, message);
        false
    }
    fn panicked(message: String) -> Self {
        fail(flux_result::Panic, message);
        false
    }
}

/// Static strings (`flux_policy_name`): NULL.
impl FfiDefault for *const c_char {
    fn null_argument(message: String) -> Self {
        fail(flux_result::NullArgument, message);
        std::ptr::null()
    }
    fn panicked(message: String) -> Self {
        fail(flux_result::Panic, message);
        std::ptr::null()
    }
}

/// Functions without a result (`_free`): nothing to report but the message.
impl FfiDefault for () {
    fn null_argument(message: String) {
        fail(flux_result::NullArgument, message);
    }
    fn panicked(message: String) {
        fail(flux_result::Panic, message);
    }
}

/// The message of a caught panic, for `flux_last_error`.
#[doc(hidden)]
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    format!("internal error in flux (a Rust panic was caught): {what}")
}

/// Runs an exported function's body and turns a panic into
/// `FLUX_RESULT_PANIC` (or the type's documented default), never an abort:
/// the host may be a Python process.
#[doc(hidden)]
#[macro_export]
macro_rules! ffi_panic_boundary {
    ( $($body:tt)* ) => {
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| { $($body)* })) {
            Ok(value) => value,
            Err(payload) => $crate::ffi::FfiDefault::panicked($crate::ffi::panic_message(&*payload)),
        }
    };
}
pub(crate) use ffi_panic_boundary;

/// `&Target` from a handle argument, or return NULL_ARGUMENT.
macro_rules! try_ref_from_ptr {
    ( $ptr:ident ) => {
        // SAFETY: a non-NULL handle argument is a live handle (the C contract).
        match unsafe { $crate::ffi::handle_ref($ptr) } {
            Some(target) => target,
            None => {
                return $crate::ffi::FfiDefault::null_argument(format!(
                    "argument `{}` must not be NULL",
                    stringify!($ptr)
                ))
            }
        }
    };
}
pub(crate) use try_ref_from_ptr;

/// A new `Arc<Target>` from a handle argument, or return NULL_ARGUMENT.
macro_rules! try_clone_arc {
    ( $ptr:ident ) => {
        // SAFETY: a non-NULL handle argument is a live handle (the C contract).
        match unsafe { $crate::ffi::clone_arc($ptr) } {
            Some(target) => target,
            None => {
                return $crate::ffi::FfiDefault::null_argument(format!(
                    "argument `{}` must not be NULL",
                    stringify!($ptr)
                ))
            }
        }
    };
}
pub(crate) use try_clone_arc;

/// `&mut T` for an out-pointer, or return NULL_ARGUMENT.
macro_rules! try_out {
    ( $ptr:ident ) => {
        // SAFETY: a non-NULL out-pointer points at a writable T (the C contract).
        match unsafe { $ptr.as_mut() } {
            Some(out) => out,
            None => {
                return $crate::ffi::FfiDefault::null_argument(format!(
                    "argument `{}` must not be NULL",
                    stringify!($ptr)
                ))
            }
        }
    };
}
pub(crate) use try_out;

/// `&[T]` from a pointer and a count. NULL with a count of 0 is the empty
/// slice; NULL with a nonzero count returns NULL_ARGUMENT.
macro_rules! try_slice {
    ( $ptr:ident, $len:ident ) => {
        match $crate::ffi::slice_parts($ptr, $len) {
            // SAFETY: a non-NULL buffer holds `len` initialised items (the C contract).
            Ok(Some((ptr, len))) => unsafe { ::std::slice::from_raw_parts(ptr, len) },
            Ok(None) => &[],
            Err(()) => {
                return $crate::ffi::FfiDefault::null_argument(format!(
                    "argument `{}` is NULL but `{}` is {}",
                    stringify!($ptr),
                    stringify!($len),
                    $len
                ))
            }
        }
    };
}
pub(crate) use try_slice;

/// `&mut [T]` from a pointer and a count, with the rules of [`try_slice!`].
macro_rules! try_slice_mut {
    ( $ptr:ident, $len:ident ) => {
        match $crate::ffi::slice_parts($ptr.cast_const(), $len) {
            // SAFETY: a non-NULL buffer holds `len` writable items (the C contract).
            Ok(Some((_, len))) => unsafe { ::std::slice::from_raw_parts_mut($ptr, len) },
            Ok(None) => &mut [],
            Err(()) => {
                return $crate::ffi::FfiDefault::null_argument(format!(
                    "argument `{}` is NULL but `{}` is {}",
                    stringify!($ptr),
                    stringify!($len),
                    $len
                ))
            }
        }
    };
}
pub(crate) use try_slice_mut;

/// Splits the NULL cases off a (pointer, count) pair.
#[allow(clippy::type_complexity)]
pub(crate) fn slice_parts<T>(ptr: *const T, len: usize) -> Result<Option<(*const T, usize)>, ()> {
    match (ptr.is_null(), len) {
        (true, 0) => Ok(None),
        (true, _) => Err(()),
        (false, 0) => Ok(None),
        (false, len) => Ok(Some((ptr, len))),
    }
}

/// `&str` from a NUL-terminated string; NULL returns NULL_ARGUMENT, bad
/// UTF-8 returns INVALID_UTF8.
macro_rules! try_str {
    ( $ptr:ident ) => {
        // SAFETY: a non-NULL string argument is NUL-terminated (the C contract).
        match unsafe { $crate::ffi::c_str($ptr) } {
            Some(Ok(s)) => s,
            Some(Err(e)) => return $crate::ffi::invalid_utf8(stringify!($ptr), e),
            None => {
                return $crate::ffi::FfiDefault::null_argument(format!(
                    "argument `{}` must not be NULL",
                    stringify!($ptr)
                ))
            }
        }
    };
}
pub(crate) use try_str;

/// `Option<&str>` from a NUL-terminated string that may be NULL.
macro_rules! try_opt_str {
    ( $ptr:ident ) => {
        // SAFETY: a non-NULL string argument is NUL-terminated (the C contract).
        match unsafe { $crate::ffi::c_str($ptr) } {
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => return $crate::ffi::invalid_utf8(stringify!($ptr), e),
            None => None,
        }
    };
}
pub(crate) use try_opt_str;

/// `&str` from a buffer and its length in bytes (NUL bytes allowed).
macro_rules! try_str_from_buf {
    ( $ptr:ident, $len:ident ) => {{
        let $ptr = $ptr.cast::<u8>();
        let bytes: &[u8] = $crate::ffi::try_slice!($ptr, $len);
        match ::std::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => return $crate::ffi::invalid_utf8(stringify!($ptr), e),
        }
    }};
}
pub(crate) use try_str_from_buf;

/// Copies `text` and a NUL into the caller's `buf` of `len` bytes, the way
/// every text output of the ABI does: on `FLUX_RESULT_OK` `*written` is the
/// text's length (without the NUL); when it does not fit (NULL `buf` with
/// `len` 0 included), nothing is copied, `*written` is the size needed (NUL
/// included) and the result is `FLUX_RESULT_BUFFER_TOO_SMALL`. `what` names
/// the text in that message.
pub(crate) fn write_text(
    text: &str,
    buf: *mut c_char,
    len: usize,
    written: &mut usize,
    what: &str,
) -> flux_result {
    if text.len() >= len {
        *written = text.len() + 1;
        return fail(
            flux_result::BufferTooSmall,
            format!(
                "{what} needs {} bytes, the buffer has {len}",
                text.len() + 1
            ),
        );
    }
    let buf: &mut [c_char] = try_slice_mut!(buf, len);
    for (dst, &src) in buf.iter_mut().zip(text.as_bytes()) {
        *dst = src as c_char;
    }
    buf[text.len()] = 0;
    *written = text.len();
    flux_result::Ok
}

/// `name` as a C string, for a table of names kept for the process's life.
pub(crate) fn c_name(name: &str) -> CString {
    CString::new(name).expect("names have no NUL")
}

/// The name of the C value `value` in a table of (value, name), as the
/// static string the `flux_*_name` functions return; NULL when absent.
pub(crate) fn static_name(names: &'static [(u32, CString)], value: u32) -> *const c_char {
    names
        .iter()
        .find(|(v, _)| *v == value)
        .map_or(std::ptr::null(), |(_, name)| name.as_ptr())
}

/// # Safety
/// `ptr` is NULL or a NUL-terminated string alive for `'a`.
pub(crate) unsafe fn c_str<'a>(ptr: *const c_char) -> Option<Result<&'a str, std::str::Utf8Error>> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: per the contract above.
    Some(unsafe { CStr::from_ptr(ptr) }.to_str())
}

pub(crate) fn invalid_utf8(argument: &str, error: std::str::Utf8Error) -> flux_result {
    fail(
        flux_result::InvalidUtf8,
        format!(
            "argument `{argument}` is not valid UTF-8 (bad byte at offset {})",
            error.valid_up_to()
        ),
    )
}

/// A callback argument, or return NULL_ARGUMENT.
macro_rules! try_callback {
    ( $cb:ident ) => {
        match $cb {
            Some(cb) => cb,
            None => {
                return $crate::ffi::FfiDefault::null_argument(format!(
                    "argument `{}` must not be NULL",
                    stringify!($cb)
                ))
            }
        }
    };
}
pub(crate) use try_callback;
