//! The HTTP edge: axum router, DTOs, auth, OpenAPI.

pub mod analytics;
pub mod app;
pub mod auth;
pub mod catalogue;
mod charts;
pub mod chat;
mod checkout;
pub mod config;
pub mod dto;
pub mod error;
mod events;
mod export;
mod lookups;
pub mod models;
pub mod money;
mod notify;
mod ops;
mod parties;
pub mod payments;
mod people;
mod plots;
mod portal;
mod privacy;
mod risk;
mod schema;
mod share;
pub mod state;
pub mod training;

pub use app::{ScorerParts, Server, load_model, router, start, start_with};
pub use config::{Config, Limits, MoneySettings, PatientSettings};

/// Default provider thresholds, read off the bundled model's evaluation report.
pub const DEFAULT_REVIEW_SCORE_MIN: u16 = 200;
pub const DEFAULT_DECLINE_SCORE_MIN: u16 = 460;
pub use payments::{IDEMPOTENCY_HEADER, PreparedPayment, REPLAYED_HEADER, prepare};
