//! The DWCP control process: an HTTP API (rollout, flags, health, migration jobs, metrics)
//! over state persisted in redb, reaching the dataplane only through the shared-memory region
//! of `dwcp-shm` (table writes, command ring, event ring, statistics blocks).
//!
//! Modules: `api` (serde types shared by config and API), `config`, `error`, `store`
//! (redb), `rollout` (pure state machine), `core` (state hub and shm bridge), `metrics`,
//! `http` (axum router), `server` (tasks and serving). TLS is not implemented: the API binds
//! to loopback by default and is meant to sit behind a local proxy when exposed.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod core;
pub mod error;
pub mod http;
pub mod metrics;
pub mod rollout;
pub mod server;
pub mod store;

pub use config::Config;
pub use core::Core;
pub use error::{ApiError, ControlError};
