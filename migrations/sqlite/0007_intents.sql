-- Intent before effect. Every external effect (a gateway charge, a contract sent for signature)
-- is first written here, with our own stable id, in the same commit as the state change that
-- needs it; only then is the gateway called with that id, and its answer is recorded by the next
-- commit. After a crash a pending intent is resumed with the same id, so the gateway never holds
-- an effect we have no record of, and nothing is done twice. Never edit once applied.

CREATE TABLE intents (
    id             TEXT PRIMARY KEY,                    -- our id at the gateway (charge: <payment>-<installment>)
    payment_id     TEXT NOT NULL REFERENCES payments (id),
    kind           TEXT NOT NULL CHECK (kind IN ('charge', 'contract')),
    installment    BIGINT,                              -- the installment a charge is for
    status         TEXT NOT NULL CHECK (status IN ('pending', 'done', 'abandoned')),
    created_at_ms  BIGINT NOT NULL,
    done_at_ms     BIGINT
);
CREATE INDEX intents_pending ON intents (status, created_at_ms);
CREATE INDEX intents_payment ON intents (payment_id);

-- The payment a key created, written in the payment's own commit: a retry after a crash finds
-- the payment (and resumes it) instead of making a second one.
ALTER TABLE idempotency_keys ADD COLUMN payment_id TEXT;
CREATE INDEX idempotency_keys_payment ON idempotency_keys (payment_id);

-- The sweep reads by these instead of scanning every payment.
CREATE INDEX refunds_status ON refunds (status, created_at_ms);
CREATE INDEX charges_status ON charges (status, expires_at_ms);
CREATE INDEX payments_status ON payments (status, updated_at_ms);
