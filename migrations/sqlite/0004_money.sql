-- Moving the money: the gateway charges of each payment (one per installment), refunds and
-- their kin (chargebacks, PIX MED claims), the gateways' webhooks as received (deduplicated by
-- their id, applied in order), and installment contracts. Never edit once applied.

-- The fee and escrow choice in force when the payment was made: later changes to the provider do
-- not change how an existing payment splits.
ALTER TABLE payments ADD COLUMN fee_bps BIGINT NOT NULL DEFAULT 0;
ALTER TABLE payments ADD COLUMN escrow BIGINT NOT NULL DEFAULT 0;

-- One gateway charge per installment. The id is our client request id at the gateway, so that a
-- charge whose creation timed out is found again there instead of created twice.
CREATE TABLE charges (
    id                TEXT PRIMARY KEY,
    payment_id        TEXT NOT NULL REFERENCES payments (id),
    installment       BIGINT NOT NULL CHECK (installment >= 1),
    method            TEXT NOT NULL CHECK (method IN ('pix', 'boleto', 'card')),
    gateway_id        TEXT NOT NULL UNIQUE,
    amount_centavos   BIGINT NOT NULL CHECK (amount_centavos > 0),
    status            TEXT NOT NULL CHECK (status IN ('active', 'paid', 'cancelled')),
    br_code           TEXT,
    linha_digitavel   TEXT,
    barcode           TEXT,
    due_date          TEXT,
    expires_at_ms     BIGINT,
    paid_at_ms        BIGINT,
    created_at_ms     BIGINT NOT NULL,
    UNIQUE (payment_id, installment)
);

-- Money going back: refunds asked by the provider or by the procedure's cancellation, and
-- chargebacks and MED claims announced by the gateway.
CREATE TABLE refunds (
    id               TEXT PRIMARY KEY,
    payment_id       TEXT NOT NULL REFERENCES payments (id),
    charge_id        TEXT NOT NULL REFERENCES charges (id),
    kind             TEXT NOT NULL CHECK (kind IN ('refund', 'cancellation', 'chargeback', 'med')),
    amount_centavos  BIGINT NOT NULL CHECK (amount_centavos > 0),
    reason           TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('requested', 'completed')),
    gateway_id       TEXT,
    created_at_ms    BIGINT NOT NULL,
    completed_at_ms  BIGINT
);
CREATE INDEX refunds_payment ON refunds (payment_id);

-- Every webhook a gateway sent, once (its id is the key); 'pending' until its payment's actor has
-- applied it, which may wait for an earlier one that has not arrived yet.
CREATE TABLE gateway_webhooks (
    gateway          TEXT NOT NULL,
    webhook_id       TEXT NOT NULL,
    payment_id       TEXT,
    kind             TEXT NOT NULL,
    body             TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'applied', 'ignored')),
    note             TEXT NOT NULL DEFAULT '',
    received_at_ms   BIGINT NOT NULL,
    applied_at_ms    BIGINT,
    PRIMARY KEY (gateway, webhook_id)
);
CREATE INDEX gateway_webhooks_pending ON gateway_webhooks (state, payment_id);

-- Installment contracts signed through ClickSign before the first charge.
CREATE TABLE contracts (
    payment_id     TEXT PRIMARY KEY REFERENCES payments (id),
    envelope_id    TEXT NOT NULL UNIQUE,
    status         TEXT NOT NULL CHECK (status IN ('sent', 'signed', 'refused')),
    created_at_ms  BIGINT NOT NULL,
    signed_at_ms   BIGINT
);

CREATE INDEX ledger_entries_payment ON ledger_entries (payment_id);
