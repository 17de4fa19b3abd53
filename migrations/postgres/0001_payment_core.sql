-- The payment core: who pays whom, what was decided, and what happened, in integer centavos.
-- Timestamps are milliseconds since the Unix epoch (UTC) so that both engines store and compare
-- them alike. Never edit this file once applied: add a new migration.

CREATE TABLE providers (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL,
    cnpj                 TEXT NOT NULL UNIQUE,            -- normalised, no mask
    fee_bps              BIGINT NOT NULL CHECK (fee_bps BETWEEN 0 AND 10000),
    escrow               BIGINT NOT NULL CHECK (escrow IN (0, 1)),
    score_fail_mode      TEXT NOT NULL CHECK (score_fail_mode IN ('open', 'closed')),
    max_amount_centavos  BIGINT NOT NULL CHECK (max_amount_centavos > 0),
    api_key_hash         TEXT NOT NULL UNIQUE,            -- SHA-256 of the API key; the key is shown once
    created_at_ms        BIGINT NOT NULL
);

CREATE TABLE patients (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    cpf            TEXT NOT NULL UNIQUE,
    email          TEXT NOT NULL,
    phone          TEXT NOT NULL,
    token_hash     TEXT NOT NULL UNIQUE,
    created_at_ms  BIGINT NOT NULL
);

-- Which providers may see and charge which patients.
CREATE TABLE provider_patients (
    provider_id    TEXT NOT NULL REFERENCES providers (id),
    patient_id     TEXT NOT NULL REFERENCES patients (id),
    created_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (provider_id, patient_id)
);

CREATE TABLE payments (
    id                    TEXT PRIMARY KEY,
    provider_id           TEXT NOT NULL REFERENCES providers (id),
    patient_id            TEXT NOT NULL REFERENCES patients (id),
    tuss_code             TEXT NOT NULL,
    description           TEXT NOT NULL,
    amount_centavos       BIGINT NOT NULL CHECK (amount_centavos > 0),
    method                TEXT NOT NULL CHECK (method IN ('pix', 'boleto', 'card')),
    installments_count    BIGINT NOT NULL CHECK (installments_count >= 1),
    monthly_interest_bps  BIGINT NOT NULL CHECK (monthly_interest_bps >= 0),
    total_centavos        BIGINT NOT NULL,
    cet_annual_bps        BIGINT NOT NULL,
    status                TEXT NOT NULL,
    device_id             TEXT NOT NULL,
    ip                    TEXT NOT NULL,
    created_at_ms         BIGINT NOT NULL,
    updated_at_ms         BIGINT NOT NULL
);
CREATE INDEX payments_patient ON payments (patient_id, created_at_ms);
CREATE INDEX payments_provider ON payments (provider_id, created_at_ms);

CREATE TABLE installments (
    payment_id       TEXT NOT NULL REFERENCES payments (id),
    number           BIGINT NOT NULL,
    due_date         TEXT NOT NULL,                       -- ISO 8601 date, America/Sao_Paulo calendar
    amount_centavos  BIGINT NOT NULL CHECK (amount_centavos > 0),
    PRIMARY KEY (payment_id, number)
);

-- Append-only: one row per scoring of a payment.
CREATE TABLE decisions (
    id               TEXT PRIMARY KEY,
    payment_id       TEXT NOT NULL REFERENCES payments (id),
    outcome          TEXT NOT NULL CHECK (outcome IN ('approve', 'review', 'decline')),
    score            BIGINT NOT NULL CHECK (score BETWEEN 0 AND 1000),
    reasons          TEXT NOT NULL,                       -- JSON array of {code, message}
    rules_hit        TEXT NOT NULL,                       -- JSON array of rule names
    model_version    TEXT NOT NULL,
    latency_us       BIGINT NOT NULL,
    created_at_ms    BIGINT NOT NULL
);
CREATE INDEX decisions_payment ON decisions (payment_id, created_at_ms);

-- Double-entry ledger: the entries of one posting sum to zero. Balances are sums, never stored.
CREATE TABLE ledger_entries (
    id               BIGSERIAL PRIMARY KEY,
    posting_id       TEXT NOT NULL,
    payment_id       TEXT REFERENCES payments (id),
    kind             TEXT NOT NULL,
    account          TEXT NOT NULL,
    amount_centavos  BIGINT NOT NULL CHECK (amount_centavos <> 0),
    created_at_ms    BIGINT NOT NULL
);
CREATE INDEX ledger_entries_account ON ledger_entries (account);
CREATE INDEX ledger_entries_posting ON ledger_entries (posting_id);

-- Stripe-style idempotency keys, scoped to the caller. A row is 'started' while its request runs
-- and 'completed' with the exact response once the request's effects are committed (in the same
-- transaction as those effects).
CREATE TABLE idempotency_keys (
    scope            TEXT NOT NULL,
    key              TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('started', 'completed')),
    response_status  BIGINT,
    response_body    TEXT,
    locked_at_ms     BIGINT NOT NULL,
    created_at_ms    BIGINT NOT NULL,
    expires_at_ms    BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at_ms);

-- Every state change of a payment, numbered 1, 2, 3… per payment with no gaps (the payment's
-- actor is its only writer; the primary key refuses a duplicate number).
CREATE TABLE events (
    payment_id     TEXT NOT NULL REFERENCES payments (id),
    seq            BIGINT NOT NULL CHECK (seq >= 1),
    provider_id    TEXT NOT NULL,
    kind           TEXT NOT NULL,
    data           TEXT NOT NULL,                         -- JSON
    created_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (payment_id, seq)
);
CREATE INDEX events_provider ON events (provider_id, created_at_ms);

-- Block list: values are stored as SHA-256 hashes, never in clear.
CREATE TABLE blocklist (
    kind           TEXT NOT NULL CHECK (kind IN ('cpf', 'device', 'ip')),
    value_hash     TEXT NOT NULL,
    reason         TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (kind, value_hash)
);
