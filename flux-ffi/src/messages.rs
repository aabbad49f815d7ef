//! Reading why a call failed: the calling thread's last error, and inside a
//! batch callback, each request's.

use std::ffi::c_char;

use crate::error::{read_batch_error, read_last_error};
use crate::ffi::{copy_message, ffi_panic_boundary};

/// Copies the calling thread's last error message into `buf` and returns
/// the message's full length in bytes (not counting the NUL).
///
/// The copy is NUL-terminated and truncated to fit `len` bytes (at a UTF-8
/// character boundary); it is complete when the returned length is below
/// `len`. With `buf` NULL or `len` 0 nothing is copied, which tells the size
/// to allocate (return value + 1). The message is the one set by the last
/// `flux_*` call on this thread that did not return `FLUX_RESULT_OK`; a
/// successful call leaves it as it was. An empty message (0) means no call
/// on this thread has failed yet.
///
/// Thread-safe: each thread has its own last error.
#[no_mangle]
pub extern "C" fn flux_last_error(buf: *mut c_char, len: usize) -> usize {
    ffi_panic_boundary! {
        read_last_error(|message| copy_message(message, buf, len))
    }
}

/// Inside a `flux_batch_callback`: copies the message of request `index`
/// of the batch being answered into `buf`, as `flux_last_error` copies
/// its message, and returns the message's full length in bytes (not
/// counting the NUL).
///
/// Each request whose `results[index]` is not `FLUX_RESULT_OK` has a
/// message, the one the same call alone would have left for
/// `flux_last_error` (Redis's reply included). 0 (and nothing copied, the
/// buffer left as it was) for a request that succeeded, an `index` beyond
/// the batch, or a call outside a batch callback: the messages live only
/// while the callback runs, on its thread. Copy what you keep.
#[no_mangle]
pub extern "C" fn flux_batch_error(index: usize, buf: *mut c_char, len: usize) -> usize {
    ffi_panic_boundary! {
        read_batch_error(index, |message| message.map_or(0, |m| copy_message(m, buf, len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{fail, flux_result, last_error};

    fn read(len: usize) -> (usize, Vec<u8>) {
        let mut buf = vec![0x7f_u8; len];
        let full = flux_last_error(buf.as_mut_ptr().cast(), len);
        (full, buf)
    }

    #[test]
    fn message_is_copied_whole_or_truncated_at_a_character() {
        fail(flux_result::Config, "héllo");
        assert_eq!(flux_last_error(std::ptr::null_mut(), 0), 6);
        let (full, buf) = read(16);
        assert_eq!(full, 6);
        assert_eq!(&buf[..7], "héllo\0".as_bytes());
        // 3 bytes of room: "h" and the 2-byte "é" do not both fit with the NUL.
        let (_, buf) = read(3);
        assert_eq!(&buf[..2], b"h\0");
    }

    #[test]
    fn each_thread_has_its_own_message() {
        fail(flux_result::Config, "here");
        std::thread::spawn(|| assert_eq!(last_error(), ""))
            .join()
            .unwrap();
        assert_eq!(last_error(), "here");
    }
}
