//! Loading a configuration: from a file, from TOML text, by discovery, or
//! the defaults. One schema and one set of messages for every language.

use std::ffi::c_char;
use std::path::Path;

use flux_core::config::{redact_url, Config};

use crate::error::{fail, flux_result};
use crate::ffi::{
    box_into_handle, ffi_panic_boundary, free_box_handle, try_opt_str, try_out, try_ref_from_ptr,
    try_str, try_str_from_buf, write_text, BoxHandle, Handle,
};

/// A validated configuration (flux.toml).
///
/// Made by `flux_config_default`, `flux_config_from_file`,
/// `flux_config_from_toml` or `flux_config_discover`; owned by the caller,
/// who frees it with `flux_config_free`. It never changes once made, so many
/// threads may read it at once. Stores and limiters copy what they need from
/// it: it may be freed while they live.
#[derive(Debug)]
pub struct flux_config {
    _private: [u8; 0],
}

impl Handle for flux_config {
    type Target = Config;
}
impl BoxHandle for flux_config {}

fn config_result(
    loaded: Result<Config, flux_core::config::ConfigError>,
    out: &mut *mut flux_config,
) -> flux_result {
    match loaded {
        Ok(config) => {
            *out = box_into_handle(config);
            flux_result::Ok
        }
        Err(e) => fail(flux_result::Config, e.to_string()),
    }
}

/// Writes to `*out` the defaults Flux runs with when there is no flux.toml
/// (the memory store: limits are per process).
///
/// Returns `FLUX_RESULT_OK`, or `FLUX_RESULT_NULL_ARGUMENT` when `out` is
/// NULL. Free the result with `flux_config_free`.
#[no_mangle]
pub extern "C" fn flux_config_default(out: *mut *mut flux_config) -> flux_result {
    ffi_panic_boundary! {
        let out = try_out!(out);
        config_result(Ok(Config::default()), out)
    }
}

/// Loads and validates the flux.toml at `path` (NUL-terminated UTF-8), then
/// applies `FLUX_REDIS_URL` from the environment, and writes it to `*out`.
///
/// Returns `FLUX_RESULT_CONFIG` when the file cannot be read or is invalid;
/// the message names the file, the line, the key and what it allows. Free the
/// result with `flux_config_free`.
#[no_mangle]
pub extern "C" fn flux_config_from_file(
    path: *const c_char,
    out: *mut *mut flux_config,
) -> flux_result {
    ffi_panic_boundary! {
        let path = try_str!(path);
        let out = try_out!(out);
        config_result(Config::load_file(Path::new(path)), out)
    }
}

/// Parses and validates flux.toml text: `toml` points at `len` bytes of
/// UTF-8 (no NUL needed). `origin` (NUL-terminated, may be NULL) names the
/// text in error messages and in the JSON's "origin", as a file name would.
/// Reads no environment: `FLUX_REDIS_URL` is not applied.
///
/// Returns `FLUX_RESULT_CONFIG` with a message naming the line and key when
/// the text is invalid. Free the result with `flux_config_free`.
#[no_mangle]
pub extern "C" fn flux_config_from_toml(
    toml: *const c_char,
    len: usize,
    origin: *const c_char,
    out: *mut *mut flux_config,
) -> flux_result {
    ffi_panic_boundary! {
        let text = try_str_from_buf!(toml, len);
        let origin = try_opt_str!(origin);
        let out = try_out!(out);
        config_result(Config::from_toml_str(text, origin.map(Path::new)), out)
    }
}

/// Parses and validates a configuration given as JSON: `json` points at
/// `len` bytes of UTF-8 holding one object with flux.toml's sections and
/// keys (`{"redis": {"url": "redis://..."}, "rate_limits": {"api":
/// {"rate": "10/second"}}}`), a key left out or `null` taking its default.
/// The same schema, defaults and messages as flux.toml: how a program that
/// builds its configuration in code hands it over. `origin`
/// (NUL-terminated, may be NULL) names it in error messages. Reads no
/// environment.
///
/// Returns `FLUX_RESULT_CONFIG` with a message naming the key when the JSON
/// is invalid. Free the result with `flux_config_free`.
#[no_mangle]
pub extern "C" fn flux_config_from_json(
    json: *const c_char,
    len: usize,
    origin: *const c_char,
    out: *mut *mut flux_config,
) -> flux_result {
    ffi_panic_boundary! {
        let text = try_str_from_buf!(json, len);
        let origin = try_opt_str!(origin);
        let out = try_out!(out);
        config_result(Config::from_json_str(text, origin.map(Path::new)), out)
    }
}

/// Finds the configuration the way every Flux program does: the file named
/// by `$FLUX_CONFIG` (which must exist), else `./flux.toml`, else
/// `./config/flux.toml`, else the defaults; then applies `FLUX_REDIS_URL`.
///
/// Returns `FLUX_RESULT_CONFIG` when a file was found but is invalid: a
/// broken file never falls back to the defaults. Free the result with
/// `flux_config_free`.
#[no_mangle]
pub extern "C" fn flux_config_discover(out: *mut *mut flux_config) -> flux_result {
    ffi_panic_boundary! {
        let out = try_out!(out);
        config_result(Config::discover().map(|(config, _)| config), out)
    }
}

/// Writes the whole configuration, defaults filled in, as one JSON object
/// into `buf` (`len` bytes), NUL-terminated: the sections `redis`, `flux`,
/// `analytics`, `rate_limit` and `rate_limits` (by name) with the keys of
/// flux.toml, and `origin` (the file, or null). A limit gives its `rate`
/// as text ("10/1s;1000/86400s") and also the `requests` and `period` of
/// its first rate; its `burst` is null when it is left to default to
/// `requests`. The Redis password is included as written. The same object,
/// without `origin` and a limit's derived `requests` and `period`, loads
/// back with `flux_config_from_json`.
///
/// On `FLUX_RESULT_OK`, `*written` is the length of the JSON (not counting
/// the NUL). When `len` is too small (NULL `buf` with `len` 0 included),
/// returns `FLUX_RESULT_BUFFER_TOO_SMALL` with nothing copied and `*written`
/// set to the buffer size needed, NUL included.
#[no_mangle]
pub extern "C" fn flux_config_to_json(
    config: *const flux_config,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> flux_result {
    ffi_panic_boundary! {
        let config = try_ref_from_ptr!(config);
        let written = try_out!(written);
        let json = serde_json::to_string(config).expect("a configuration serializes");
        write_text(&json, buf, len, written, "the configuration's JSON")
    }
}

/// Writes to `buf` (`len` bytes, NUL-terminated) the Redis URL `url`
/// (NUL-terminated UTF-8) as Flux's own messages show it: what follows the
/// userinfo's first `:` up to its last `@`, and everything after a `pass=`
/// or `password=` query parameter, replaced by `***`. For a host's own
/// messages, so they hide what Flux hides, by the same rule.
///
/// On `FLUX_RESULT_OK`, `*written` is the text's length (without the NUL);
/// when `len` is too small, returns `FLUX_RESULT_BUFFER_TOO_SMALL` with
/// `*written` the size needed, NUL included.
#[no_mangle]
pub extern "C" fn flux_redact_url(
    url: *const c_char,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> flux_result {
    ffi_panic_boundary! {
        let url = try_str!(url);
        let written = try_out!(written);
        write_text(&redact_url(url), buf, len, written, "the URL")
    }
}

/// Frees a configuration. NULL is ignored; freeing twice is undefined.
#[no_mangle]
pub extern "C" fn flux_config_free(config: *mut flux_config) {
    ffi_panic_boundary! {
        // SAFETY: `config` is NULL or came from a flux_config_* constructor (the C contract).
        unsafe { free_box_handle(config) }
    }
}
