-- Real-time scoring: provider thresholds, the features each decision scored, the analysts'
-- rules, allow and block lists, and fraud labels for training. Never edit once applied.

-- Scores at or above review_score_min go to review; at or above decline_score_min are declined.
ALTER TABLE providers ADD COLUMN review_score_min BIGINT NOT NULL DEFAULT 200;
ALTER TABLE providers ADD COLUMN decline_score_min BIGINT NOT NULL DEFAULT 460;

-- The feature vector each decision scored (JSON object name → value): backtests replay rules over
-- it and training reads it with the labels.
ALTER TABLE decisions ADD COLUMN features TEXT NOT NULL DEFAULT '{}';

-- Analysts' rules, in the small rule language. Deleting one keeps its row (deleted_at_ms) so that
-- old decisions still name a rule that can be read.
CREATE TABLE rules (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    source         TEXT NOT NULL,
    action         TEXT NOT NULL CHECK (action IN ('allow', 'decline', 'review')),
    created_at_ms  BIGINT NOT NULL,
    deleted_at_ms  BIGINT
);
CREATE UNIQUE INDEX rules_live_name ON rules (name) WHERE deleted_at_ms IS NULL;

-- The rules the payment core started with (the velocity limits of its rules-only scorer).
INSERT INTO rules (id, name, source, action, created_at_ms) VALUES
    ('00000000-0000-7000-8000-000000000001', 'declines_24h', 'decline if patient_declines_24h >= 3', 'decline', 0),
    ('00000000-0000-7000-8000-000000000002', 'velocity_payments_1h', 'review if patient_payments_1h >= 5', 'review', 0),
    ('00000000-0000-7000-8000-000000000003', 'velocity_amount_24h', 'review if patient_amount_24h_centavos + amount_centavos > 5000000', 'review', 0),
    ('00000000-0000-7000-8000-000000000004', 'device_many_patients', 'decline if device_patients_24h >= 4', 'decline', 0);

-- Allow and block lists; values are SHA-256 hashes, never in clear.
CREATE TABLE list_entries (
    list           TEXT NOT NULL CHECK (list IN ('allow', 'block')),
    kind           TEXT NOT NULL CHECK (kind IN ('cpf', 'device', 'ip', 'card')),
    value_hash     TEXT NOT NULL,
    reason         TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (list, kind, value_hash)
);
INSERT INTO list_entries (list, kind, value_hash, reason, created_at_ms)
    SELECT 'block', kind, value_hash, reason, created_at_ms FROM blocklist;
DROP TABLE blocklist;

-- Whether a payment was fraud, as an analyst, a chargeback or a PIX MED claim said. The latest
-- word wins; training reads these beside the decisions' features.
CREATE TABLE payment_labels (
    payment_id     TEXT PRIMARY KEY REFERENCES payments (id),
    is_fraud       BIGINT NOT NULL CHECK (is_fraud IN (0, 1)),
    source         TEXT NOT NULL CHECK (source IN ('analyst', 'chargeback', 'med')),
    note           TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL
);
