-- The canary: the share of live payments (basis points, chosen by a hash of the payment id) the
-- challenger decides while the champion scores them in shadow. One row; each change is recorded
-- with who, when and why in model_canary_changes. Never edit once applied.

CREATE TABLE model_canary_changes (
    id           TEXT PRIMARY KEY,
    share_bps    BIGINT NOT NULL CHECK (share_bps BETWEEN 0 AND 10000),
    set_by       TEXT NOT NULL,
    reason       TEXT NOT NULL,
    set_at_ms    BIGINT NOT NULL
);
CREATE INDEX model_canary_changes_at ON model_canary_changes (set_at_ms);
