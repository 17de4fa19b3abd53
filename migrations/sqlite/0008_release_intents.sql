-- The escrow release is an effect like a charge: written as an intent in the commit that marks
-- the payment released, performed at Celcoin after it. SQLite cannot change a CHECK in place, so
-- the table is rebuilt (same columns, same indexes). Never edit once applied.

CREATE TABLE intents_new (
    id             TEXT PRIMARY KEY,
    payment_id     TEXT NOT NULL REFERENCES payments (id),
    kind           TEXT NOT NULL CHECK (kind IN ('charge', 'contract', 'release')),
    installment    BIGINT,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'done', 'abandoned')),
    created_at_ms  BIGINT NOT NULL,
    done_at_ms     BIGINT
);
INSERT INTO intents_new (id, payment_id, kind, installment, status, created_at_ms, done_at_ms)
    SELECT id, payment_id, kind, installment, status, created_at_ms, done_at_ms FROM intents;
DROP TABLE intents;
ALTER TABLE intents_new RENAME TO intents;
CREATE INDEX intents_pending ON intents (status, created_at_ms);
CREATE INDEX intents_payment ON intents (payment_id);
