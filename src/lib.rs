//! Ferry: an IMAP proxy for mail-system migrations.
//!
//! Data flow (one task per client session, on one of the per-core workers):
//!
//! ```text
//! client ─TLS/STARTTLS─▶ listener ─▶ driver (the only async glue)
//!                                       │ bytes in/out
//!                                       ▼
//!                        session (sans-IO state machine)
//!                         ├─ frame:     lines + literals, streamed, both directions
//!                         ├─ route:     CommandBody → which store, rewritten how
//!                         ├─ namespace: client names ↔ (store, backend name), mUTF-7 safe
//!                         └─ merge:     LIST/LSUB/CAPABILITY/NAMESPACE of both stores
//!                                       │
//!                        backend (connect, TLS, login) ─▶ OLD store / NEW store
//! ```
//!
//! The session never touches a socket or a clock; the driver feeds it bytes and
//! performs the actions it returns.

pub mod backend;
pub mod config;
pub mod driver;
pub mod frame;
pub mod listener;
pub mod merge;
pub mod metrics;
pub mod mutf7;
pub mod namespace;
pub mod route;
pub mod sasl;
pub mod session;
pub mod subscriptions;
pub mod throttle;
pub mod tls;
pub mod wake;
pub mod workers;

pub use listener::Ferry;
