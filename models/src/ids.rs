//! Entity ids: UUIDs behind a type per entity, so that a patient id can never be passed where a
//! payment id is expected. Most are UUIDv7 (time-ordered); a patient's is random (v4), because a
//! provider that registers a CPF registered elsewhere is given the patient's id, and a v7 id would
//! tell it when the patient was first registered.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a valid id (a UUID is expected)")]
pub struct IdError;

macro_rules! entity_id {
    ($name:ident) => {
        entity_id!($name, Uuid::now_v7);
    };
    ($name:ident, $generate:path) => {
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub fn new() -> Self {
                Self($generate())
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
entity_id!(PatientId, Uuid::new_v4);
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

    #[test]
    fn a_patient_id_tells_no_time_while_the_others_are_ordered() {
        assert_eq!(PatientId::new().as_uuid().get_version_num(), 4);
        assert_ne!(PatientId::new(), PatientId::new());
        for version in [PaymentId::new().as_uuid(), ProviderId::new().as_uuid(), ConversationId::new().as_uuid()] {
            assert_eq!(version.get_version_num(), 7);
        }
    }
}
