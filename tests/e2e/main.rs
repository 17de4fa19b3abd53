//! End-to-end tests: the real app on port 0, a real database (SQLite and PostgreSQL, fresh per
//! test), real Redis where the test is about sharing state between nodes.

mod analysts;
mod analytics;
mod catalogue;
mod chat;
mod crash;
mod dashboard;
mod documents;
mod durability;
mod events;
mod lifecycle;
mod logs;
mod money;
mod notifications;
mod patient_app;
mod payments;
mod people;
mod privacy;
mod refunds;
mod risk;
mod scopes;
mod support;
mod tenancy;
mod training;
