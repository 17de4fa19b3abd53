//! The patients' support bot (issue 6). So far: reading amounts and installment counts the way
//! Brazilians write them.

pub mod entities;
