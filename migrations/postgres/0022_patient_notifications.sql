-- Notifications to patients (issue 13): the outbox of e-mails. A row is derived once per fact
-- (its id names the fact: `charge_issued:<charge>`, `installment_due:<payment>:<n>`, …, so deriving
-- it again changes nothing), then sent, retried with backoff, by whichever node claims it first.
-- `subject` and `body` are kept as sent, without the sign-in link, for the patient's app.
-- Never edit once applied.
CREATE TABLE patient_notifications (
    id                  TEXT PRIMARY KEY,
    patient_id          TEXT NOT NULL REFERENCES patients (id),
    payment_id          TEXT NOT NULL REFERENCES payments (id),
    kind                TEXT NOT NULL CHECK (kind IN ('charge_issued', 'payment_confirmed', 'installment_due', 'refund_completed', 'contract_to_sign')),
    ref_id              TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed', 'skipped')),
    attempts            BIGINT NOT NULL DEFAULT 0,
    next_attempt_at_ms  BIGINT NOT NULL,
    claimed_until_ms    BIGINT,
    subject             TEXT,
    body                TEXT,
    last_error          TEXT,
    created_at_ms       BIGINT NOT NULL,
    sent_at_ms          BIGINT
);
CREATE INDEX patient_notifications_due ON patient_notifications (state, next_attempt_at_ms);
CREATE INDEX patient_notifications_patient ON patient_notifications (patient_id, created_at_ms);
-- What the notifier reads by time: only the last minutes of each, never the whole table.
CREATE INDEX charges_created ON charges (created_at_ms);
CREATE INDEX charges_paid ON charges (paid_at_ms);
CREATE INDEX refunds_completed ON refunds (completed_at_ms);
CREATE INDEX contracts_created ON contracts (created_at_ms);
CREATE INDEX installments_due ON installments (due_date);
