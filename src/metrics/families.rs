//! Every metric family Ferry exports, with the `# HELP` text Prometheus
//! shows for it (`promtool check metrics` wants one on each family).

use metrics::{describe_counter, describe_gauge, describe_histogram};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Name, kind and help text of each family.
pub(super) const FAMILIES: &[(&str, Kind, &str)] = &[
    (
        "ferry_build_info",
        Kind::Gauge,
        "Always 1; the version label is the running Ferry's.",
    ),
    (
        "ferry_config_generation",
        Kind::Gauge,
        "The configuration in force: 1 at start, one more for each applied reload.",
    ),
    (
        "ferry_config_reloads_total",
        Kind::Counter,
        "Configuration reloads, by result (ok, error: refused, the running configuration stays).",
    ),
    (
        "ferry_configured_users",
        Kind::Gauge,
        "Users given a phase by name ([migration.users] and the users file), by phase.",
    ),
    (
        "ferry_sessions_total",
        Kind::Counter,
        "Client connections admitted, by listener (imaps, imap).",
    ),
    (
        "ferry_sessions_active",
        Kind::Gauge,
        "Client sessions open now, by listener and phase (preauth: not logged in yet).",
    ),
    (
        "ferry_session_ends_total",
        Kind::Counter,
        "Sessions ended, by reason (logout, client_closed, idle_timeout, shutdown, ...).",
    ),
    (
        "ferry_logins_total",
        Kind::Counter,
        "Client logins, by the user's phase and result (ok, rejected, unavailable: a store could not be used).",
    ),
    (
        "ferry_auth_throttled_total",
        Kind::Counter,
        "Logins slowed down (delayed) or refused from the cache of recent failures (known_failure).",
    ),
    (
        "ferry_commands_total",
        Kind::Counter,
        "Client commands answered, by command, the store(s) that served them (old, new, both, ferry: Ferry itself) and result (ok, no, bad).",
    ),
    (
        "ferry_command_duration_seconds",
        Kind::Histogram,
        "Time from a client command to its tagged answer, by store(s) (IDLE excluded).",
    ),
    (
        "ferry_backend_connects_total",
        Kind::Counter,
        "Ferry's logins to a store, by store and result (ok, rejected, error).",
    ),
    (
        "ferry_backend_errors_total",
        Kind::Counter,
        "Store connections that failed or were given up, by store and kind (connect, tls, io, timeout, protocol, token).",
    ),
    (
        "ferry_tls_handshake_failures_total",
        Kind::Counter,
        "Client TLS handshakes that failed, by listener; a connection closed before its first byte (a probe) is not one.",
    ),
    (
        "ferry_proxy_headers_total",
        Kind::Counter,
        "PROXY protocol headers read (ok, local: the balancer's own check) or connections refused for them (untrusted, malformed, timeout, closed).",
    ),
    (
        "ferry_limit_hits_total",
        Kind::Counter,
        "Times a configured limit was reached, by limit.",
    ),
    (
        "ferry_bytes_total",
        Kind::Counter,
        "Bytes read and written, by direction (in, out) and peer (client, old, new).",
    ),
    (
        "ferry_compress_sessions_total",
        Kind::Counter,
        "Sessions that turned on COMPRESS=DEFLATE.",
    ),
    (
        "ferry_copies_total",
        Kind::Counter,
        "COPY commands from Old/ into NEW, by result (ok, failed, trycreate).",
    ),
    (
        "ferry_copy_messages_total",
        Kind::Counter,
        "Messages copied from Old/ into NEW by clients' COPY commands.",
    ),
    (
        "ferry_copy_bytes_total",
        Kind::Counter,
        "Bytes of the messages copied from Old/ into NEW by clients' COPY commands.",
    ),
    (
        "ferry_phase_disconnects_total",
        Kind::Counter,
        "Sessions ended because their user's phase changed.",
    ),
    (
        "ferry_fleet_notes_total",
        Kind::Counter,
        "Notes to or from the other instances, by result (sent, failed, dropped, received).",
    ),
    (
        "ferry_migration_passes_total",
        Kind::Counter,
        "Background migration passes over a user, by result (ok, failed).",
    ),
    (
        "ferry_migration_errors_total",
        Kind::Counter,
        "Failed background migration passes, by kind (config, state, login, io, protocol, throttled, refused).",
    ),
    (
        "ferry_migration_messages_copied_total",
        Kind::Counter,
        "Messages the migration copier appended to NEW.",
    ),
    (
        "ferry_migration_bytes_copied_total",
        Kind::Counter,
        "Bytes of the messages the migration copier appended to NEW.",
    ),
    (
        "ferry_migration_users",
        Kind::Gauge,
        "Users by migration state, from the state store while the copier runs (0 before).",
    ),
    (
        "ferry_migration_users_paused",
        Kind::Gauge,
        "Users whose migration an admin paused.",
    ),
    (
        "ferry_migration_messages_remaining",
        Kind::Gauge,
        "Messages still to copy, over all users.",
    ),
    (
        "ferry_migration_bytes_remaining",
        Kind::Gauge,
        "Bytes still to copy, over all users.",
    ),
    (
        "ferry_migration_last_pass_timestamp_seconds",
        Kind::Gauge,
        "When the last migration pass finished (Unix time); 0: none yet.",
    ),
];

/// Gives every family its help text; before any is registered, so the
/// recorder knows it when the first series appears.
pub(super) fn describe() {
    for &(name, kind, help) in FAMILIES {
        match kind {
            Kind::Counter => describe_counter!(name, help),
            Kind::Gauge => describe_gauge!(name, help),
            Kind::Histogram => describe_histogram!(name, help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family metrics.rs records is described: a new one without
    /// help text would fail `promtool check metrics`.
    #[test]
    fn every_recorded_family_is_described() {
        let source = include_str!("../metrics.rs");
        let recorded: Vec<&str> = source
            .split("\"ferry_")
            .skip(1)
            .filter_map(|s| s.split_once('"'))
            .map(|(rest, _)| rest)
            .collect();
        assert!(recorded.len() > 20, "{recorded:?}");
        for name in recorded {
            assert!(
                FAMILIES
                    .iter()
                    .any(|(n, ..)| n.strip_prefix("ferry_") == Some(name)),
                "{name} has no help text in FAMILIES"
            );
        }
        for (name, kind, help) in FAMILIES {
            assert!(!help.is_empty(), "{name}");
            assert_eq!(
                name.ends_with("_total"),
                *kind == Kind::Counter,
                "{name}: counters, and only counters, end in _total"
            );
        }
    }
}
