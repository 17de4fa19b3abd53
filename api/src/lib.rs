//! The HTTP edge: axum router, DTOs, auth, OpenAPI.

pub mod app;
pub mod auth;
pub mod config;
pub mod dto;
pub mod error;
mod ops;
mod parties;
pub mod payments;
pub mod state;

pub use app::{Server, router, start, start_with};
pub use config::{Config, Limits};
pub use payments::{IDEMPOTENCY_HEADER, PreparedPayment, REPLAYED_HEADER, prepare};
