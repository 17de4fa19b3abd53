//! Entity ids: UUIDv7 (time-ordered) behind a type per entity, so that a patient id can never be
//! passed where a payment id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a valid id (a UUID is expected)")]
pub struct IdError;

macro_rules! entity_id {
    ($name:ident) => {
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(input: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(input).map(Self).map_err(|_| IdError)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(formatter)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(formatter, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

entity_id!(PaymentId);
entity_id!(PatientId);
entity_id!(ProviderId);
entity_id!(ConversationId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trip_and_reject() {
        let id = PaymentId::new();
        assert_eq!(id.to_string().parse::<PaymentId>().unwrap(), id);
        assert_eq!("not-an-id".parse::<PaymentId>(), Err(IdError));
    }
}
