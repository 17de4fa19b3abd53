//! The patients' support bot: a subword tokenizer trained on our own Portuguese corpus, an intent
//! classifier over it, the entities Brazilians write (amounts, installment counts, dates, payment
//! references), and the dialogue policy that turns them, with the patient's own payments, into
//! answers in Portuguese.

pub mod dialogue;
pub mod entities;
pub mod intents;
pub mod tokenizer;

pub use intents::{IntentModel, Prediction};
pub use tokenizers::Tokenizer;
