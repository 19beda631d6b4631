//! Process-wide llama.cpp initialisation and log routing.

use std::ffi::{CStr, c_char, c_void};
use std::sync::Once;

use llama_cpp_sys_2 as sys;

static INIT: Once = Once::new();

/// Initialise llama.cpp once per process and route its log into `tracing`
/// (at debug level, so the CLI stays quiet unless `RUST_LOG=debug`).
pub fn init_backend() {
    INIT.call_once(|| {
        // SAFETY: plain C initialisers, called exactly once; the log callback is a
        // `'static` function that never unwinds into C.
        unsafe {
            sys::llama_log_set(Some(log_to_tracing), std::ptr::null_mut());
            sys::llama_backend_init();
        }
    });
}

unsafe extern "C" fn log_to_tracing(
    level: sys::ggml_log_level,
    text: *const c_char,
    _: *mut c_void,
) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string valid for the call.
    let msg = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    let msg = msg.trim_end();
    if msg.is_empty() {
        return;
    }
    if level == sys::GGML_LOG_LEVEL_ERROR {
        tracing::warn!(target: "llama.cpp", "{msg}");
    } else {
        tracing::debug!(target: "llama.cpp", "{msg}");
    }
}

/// Put the normal log route back after a temporary capture.
pub(super) fn restore_log() {
    // SAFETY: see init_backend.
    unsafe { sys::llama_log_set(Some(log_to_tracing), std::ptr::null_mut()) }
}
