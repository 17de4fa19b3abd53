-- Provider events and webhooks. Each provider's events are numbered 1, 2, 3… with no gaps
-- (providers.last_event_seq is taken and raised inside the transaction that writes the events, so
-- numbers are committed in order): that number is the cursor of the event feed, the live streams
-- and the webhook outbox. Never edit once applied.

ALTER TABLE providers ADD COLUMN last_event_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN provider_seq BIGINT;
UPDATE events SET provider_seq = (
    SELECT COUNT(*) FROM events e2
    WHERE e2.provider_id = events.provider_id
      AND (e2.created_at_ms < events.created_at_ms
           OR (e2.created_at_ms = events.created_at_ms
               AND (e2.payment_id < events.payment_id OR (e2.payment_id = events.payment_id AND e2.seq <= events.seq)))));
UPDATE providers SET last_event_seq = (SELECT COALESCE(MAX(provider_seq), 0) FROM events WHERE events.provider_id = providers.id);
CREATE UNIQUE INDEX events_provider_seq ON events (provider_id, provider_seq);

-- Where a provider wants its events. The secret signs every delivery (HMAC-SHA256); it is needed
-- in clear to sign, so it is stored as given and shown once.
CREATE TABLE webhook_endpoints (
    id                    TEXT PRIMARY KEY,
    provider_id           TEXT NOT NULL REFERENCES providers (id),
    url                   TEXT NOT NULL,
    event_types           TEXT NOT NULL,                  -- JSON array; empty means every type
    secret                TEXT NOT NULL,
    status                TEXT NOT NULL CHECK (status IN ('enabled', 'disabled')),
    disabled_reason       TEXT,
    consecutive_failures  BIGINT NOT NULL DEFAULT 0,
    cursor                BIGINT NOT NULL,                -- last provider_seq turned into deliveries
    created_at_ms         BIGINT NOT NULL
);
CREATE INDEX webhook_endpoints_provider ON webhook_endpoints (provider_id);

-- The outbox: one delivery per event per endpoint, retried until delivered or given up.
CREATE TABLE webhook_deliveries (
    id                  TEXT PRIMARY KEY,
    endpoint_id         TEXT NOT NULL REFERENCES webhook_endpoints (id),
    provider_id         TEXT NOT NULL,
    provider_seq        BIGINT NOT NULL,
    payment_id          TEXT NOT NULL,
    event_seq           BIGINT NOT NULL,
    event_type          TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts            BIGINT NOT NULL DEFAULT 0,
    next_attempt_at_ms  BIGINT NOT NULL,
    last_status_code    BIGINT,
    last_error          TEXT,
    created_at_ms       BIGINT NOT NULL,
    delivered_at_ms     BIGINT,
    UNIQUE (endpoint_id, provider_seq)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at_ms);

CREATE TABLE webhook_attempts (
    delivery_id   TEXT NOT NULL REFERENCES webhook_deliveries (id),
    attempt       BIGINT NOT NULL,
    at_ms         BIGINT NOT NULL,
    status_code   BIGINT,
    error         TEXT,
    duration_ms   BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
