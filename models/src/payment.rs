//! The payment's life: its method, its status machine and the risk decision it received.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    Pix,
    Boleto,
    Card,
}

/// Every status a payment can be in. Names are the wire names (snake_case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Requested,
    Approved,
    InReview,
    Declined,
    AwaitingPayment,
    Paid,
    HeldInEscrow,
    Released,
    Refunded,
    PartiallyRefunded,
    ChargedBack,
    Cancelled,
    Expired,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a payment cannot go from {from} to {to}")]
pub struct TransitionError {
    pub from: PaymentStatus,
    pub to: PaymentStatus,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 13] = [
        PaymentStatus::Requested,
        PaymentStatus::Approved,
        PaymentStatus::InReview,
        PaymentStatus::Declined,
        PaymentStatus::AwaitingPayment,
        PaymentStatus::Paid,
        PaymentStatus::HeldInEscrow,
        PaymentStatus::Released,
        PaymentStatus::Refunded,
        PaymentStatus::PartiallyRefunded,
        PaymentStatus::ChargedBack,
        PaymentStatus::Cancelled,
        PaymentStatus::Expired,
    ];

    /// The statuses this one may move to. Anything else is refused.
    pub fn successors(self) -> &'static [PaymentStatus] {
        use PaymentStatus::*;
        match self {
            Requested => &[Approved, InReview, Declined, Cancelled],
            InReview => &[Approved, Declined, Cancelled, Expired],
            Approved => &[AwaitingPayment, Cancelled, Expired],
            AwaitingPayment => &[Paid, Cancelled, Expired],
            // A paid payment either goes to escrow (provider asked for it) or is settled; both
            // can be refunded or charged back.
            Paid => &[HeldInEscrow, Refunded, PartiallyRefunded, ChargedBack],
            HeldInEscrow => &[Released, Refunded, PartiallyRefunded, ChargedBack],
            Released => &[Refunded, PartiallyRefunded, ChargedBack],
            // What a partial refund left in escrow is still released after the procedure.
            PartiallyRefunded => &[PartiallyRefunded, Refunded, ChargedBack, Released],
            Declined | Refunded | ChargedBack | Cancelled | Expired => &[],
        }
    }

    pub fn transition(self, to: PaymentStatus) -> Result<PaymentStatus, TransitionError> {
        if self.successors().contains(&to) { Ok(to) } else { Err(TransitionError { from: self, to }) }
    }

    pub fn is_terminal(self) -> bool {
        self.successors().is_empty()
    }

    pub fn as_str(self) -> &'static str {
        use PaymentStatus::*;
        match self {
            Requested => "requested",
            Approved => "approved",
            InReview => "in_review",
            Declined => "declined",
            AwaitingPayment => "awaiting_payment",
            Paid => "paid",
            HeldInEscrow => "held_in_escrow",
            Released => "released",
            Refunded => "refunded",
            PartiallyRefunded => "partially_refunded",
            ChargedBack => "charged_back",
            Cancelled => "cancelled",
            Expired => "expired",
        }
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for PaymentStatus {
    type Err = String;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        PaymentStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == input)
            .ok_or_else(|| format!("unknown payment status {input:?}"))
    }
}

impl PaymentMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::Pix => "pix",
            PaymentMethod::Boleto => "boleto",
            PaymentMethod::Card => "card",
        }
    }
}

impl FromStr for PaymentMethod {
    type Err = String;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        match input {
            "pix" => Ok(PaymentMethod::Pix),
            "boleto" => Ok(PaymentMethod::Boleto),
            "card" => Ok(PaymentMethod::Card),
            other => Err(format!("unknown payment method {other:?}")),
        }
    }
}

/// What scoring decided. A decline is an outcome, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum DecisionOutcome {
    Approve,
    Review,
    Decline,
}

impl DecisionOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionOutcome::Approve => "approve",
            DecisionOutcome::Review => "review",
            DecisionOutcome::Decline => "decline",
        }
    }

    /// The status a new payment takes after this decision.
    pub fn status(self) -> PaymentStatus {
        match self {
            DecisionOutcome::Approve => PaymentStatus::Approved,
            DecisionOutcome::Review => PaymentStatus::InReview,
            DecisionOutcome::Decline => PaymentStatus::Declined,
        }
    }
}

impl FromStr for DecisionOutcome {
    type Err = String;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        match input {
            "approve" => Ok(DecisionOutcome::Approve),
            "review" => Ok(DecisionOutcome::Review),
            "decline" => Ok(DecisionOutcome::Decline),
            other => Err(format!("unknown outcome {other:?}")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// Stable code, e.g. `amount_far_above_usual` or a rule's name.
    pub code: String,
    /// Plain words for the analyst.
    pub message: String,
    /// Portuguese, for the patient.
    #[serde(default)]
    pub message_pt: String,
}

/// One scoring of one payment: appended, never changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub outcome: DecisionOutcome,
    /// 0 (no risk seen) to 1000 (certain fraud).
    pub score: u16,
    pub reasons: Vec<Reason>,
    pub rules_hit: Vec<String>,
    pub model_version: String,
}

/// What a payment gets when scoring does not answer within its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Send it to review.
    Open,
    /// Decline it.
    Closed,
}

impl FailMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailMode::Open => "open",
            FailMode::Closed => "closed",
        }
    }

    pub fn outcome(self) -> DecisionOutcome {
        match self {
            FailMode::Open => DecisionOutcome::Review,
            FailMode::Closed => DecisionOutcome::Decline,
        }
    }
}

impl FromStr for FailMode {
    type Err = String;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        match input {
            "open" => Ok(FailMode::Open),
            "closed" => Ok(FailMode::Closed),
            other => Err(format!("unknown score_fail_mode {other:?}")),
        }
    }
}

/// What kind of value a block or allow list holds. Values are stored hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ListKind {
    Cpf,
    Device,
    Ip,
    /// A card fingerprint from the card gateway.
    Card,
}

impl ListKind {
    pub const ALL: [ListKind; 4] = [ListKind::Cpf, ListKind::Device, ListKind::Ip, ListKind::Card];

    pub fn as_str(self) -> &'static str {
        match self {
            ListKind::Cpf => "cpf",
            ListKind::Device => "device",
            ListKind::Ip => "ip",
            ListKind::Card => "card",
        }
    }
}

impl FromStr for ListKind {
    type Err = String;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        ListKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == input)
            .ok_or_else(|| format!("unknown list kind {input:?}"))
    }
}

/// Allow lists approve what they hold; block lists decline it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ListType {
    Allow,
    Block,
}

impl ListType {
    pub fn as_str(self) -> &'static str {
        match self {
            ListType::Allow => "allow",
            ListType::Block => "block",
        }
    }
}

impl FromStr for ListType {
    type Err = String;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        match input {
            "allow" => Ok(ListType::Allow),
            "block" => Ok(ListType::Block),
            other => Err(format!("unknown list {other:?}; allow or block")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_transitions_pass_and_every_other_is_refused() {
        let mut allowed = 0;
        for from in PaymentStatus::ALL {
            for to in PaymentStatus::ALL {
                let result = from.transition(to);
                if from.successors().contains(&to) {
                    assert_eq!(result, Ok(to));
                    allowed += 1;
                } else {
                    assert_eq!(result, Err(TransitionError { from, to }), "{from} -> {to}");
                }
            }
        }
        assert_eq!(allowed, 29);
    }

    #[test]
    fn a_few_transitions_by_name() {
        use PaymentStatus::*;
        assert!(Requested.transition(Approved).is_ok());
        assert!(Declined.transition(Approved).is_err());
        assert!(Paid.transition(Requested).is_err());
        assert!(Refunded.is_terminal());
        assert!(HeldInEscrow.transition(Released).is_ok());
        assert!(Approved.transition(Paid).is_err(), "a charge must be issued before it is paid");
    }

    #[test]
    fn wire_names_round_trip() {
        for status in PaymentStatus::ALL {
            assert_eq!(status.as_str().parse::<PaymentStatus>().unwrap(), status);
            assert_eq!(serde_json::to_string(&status).unwrap(), format!("\"{}\"", status.as_str()));
        }
        assert!("paid!".parse::<PaymentStatus>().is_err());
    }
}
