//! Prometheus metrics. Names are `ferry_*` in base units; labels come from closed
//! sets (never a user or mailbox name).

use metrics::{counter, gauge};

use crate::config::Phase;

pub fn login(phase: Phase, result: &'static str) {
    counter!("ferry_logins_total", "phase" => phase.as_str(), "result" => result).increment(1);
}

pub fn session_started(listener: &'static str) {
    counter!("ferry_sessions_total", "listener" => listener).increment(1);
    gauge!("ferry_sessions_active").increment(1.0);
}

pub fn session_ended() {
    gauge!("ferry_sessions_active").decrement(1.0);
}

pub fn backend_connect_error(store: &'static str, kind: &'static str) {
    counter!("ferry_backend_errors_total", "store" => store, "kind" => kind).increment(1);
}

pub fn tls_handshake_failed(listener: &'static str) {
    counter!("ferry_tls_handshake_failures_total", "listener" => listener).increment(1);
}

/// One cross-store COPY: its result, and the messages and bytes it copied.
pub fn copy(result: &'static str, messages: u64, bytes: u64) {
    counter!("ferry_copies_total", "result" => result).increment(1);
    counter!("ferry_copy_messages_total").increment(messages);
    counter!("ferry_copy_bytes_total").increment(bytes);
}
