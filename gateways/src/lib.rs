//! Clients of the external systems MedPay talks to, each with a local sandbox server of the same
//! request and response shapes (the real systems cannot be reached from here; tests, demos and
//! load runs use the sandboxes).

pub mod celcoin;
pub mod celcoin_sandbox;
pub mod clicksign;
pub mod receita;
pub mod resilience;
