//! Ferry: an IMAP proxy for mail-system migrations.
//!
//! Data flow (one task per client session, on one of the per-core workers):
//!
//! ```text
//! server (Ferry: start, reload, shutdown)
//!   └─ listener ─TLS/STARTTLS─▶ driver (the only async glue)
//!                                 │ Event + now   ▲ Action
//!                                 ▼               │
//!                        session (sans-IO state machine)
//!                         ├─ frame:     lines + literals, streamed, both directions
//!                         ├─ clock:     every deadline, from the time events bring
//!                         ├─ route:     CommandBody → which store, rewritten how
//!                         ├─ namespace: client names ↔ (store, backend name), mUTF-7 safe
//!                         └─ merge:     LIST/LSUB/CAPABILITY/NAMESPACE of both stores
//!                                       │
//!                        backend (connect, TLS, login) ─▶ OLD store / NEW store
//! ```
//!
//! The session never touches a socket, the clock or a global; the driver
//! hands it events with the time they happened and performs the actions it
//! returns. `ARCHITECTURE.md` has the map.

pub mod admin;
pub mod answers;
pub mod backend;
pub mod caps;
pub mod config;
pub mod context;
pub mod control;
pub mod copier;
pub mod deflate;
pub mod driver;
pub mod extensions;
pub mod fleet;
pub mod frame;
pub mod identity;
pub mod listener;
pub mod listext;
pub mod merge;
pub mod metrics;
pub mod mutf7;
pub mod namespace;
pub mod oauth;
pub mod proxy;
pub mod route;
pub mod sasl;
pub mod server;
pub mod session;
pub mod sessions;
pub mod state;
pub mod subscriptions;
pub mod throttle;
pub mod tls;
pub mod url;
pub mod verb;
pub mod wake;
pub mod wire;
pub mod workers;

pub use server::Ferry;
