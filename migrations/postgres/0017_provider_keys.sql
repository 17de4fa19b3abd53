-- Several API keys per provider (issue 12): each stored as the SHA-256 of the key (shown once, at
-- creation), with a label, who made it, and when it was revoked. A provider's first key (the one
-- in `providers.api_key_hash`) becomes its first row here; from now on keys are looked up here
-- only, so a revoked first key stops working. Never edit once applied.

CREATE TABLE provider_keys (
    id              TEXT PRIMARY KEY,
    provider_id     TEXT NOT NULL REFERENCES providers (id),
    key_hash        TEXT NOT NULL,
    label           TEXT NOT NULL,
    created_by      TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    revoked_at_ms   BIGINT
);
CREATE UNIQUE INDEX provider_keys_hash ON provider_keys (key_hash);
CREATE INDEX provider_keys_provider ON provider_keys (provider_id);

INSERT INTO provider_keys (id, provider_id, key_hash, label, created_by, created_at_ms)
SELECT 'first-' || id, id, api_key_hash, 'first key', 'admin', created_at_ms FROM providers;
