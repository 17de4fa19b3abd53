-- A provider's checkout links (issue 12): a patient who opens one chooses that provider, and may
-- then pay it (and it may see them). Stored as the SHA-256 of the link's secret, shown once.
-- Never edit once applied.
CREATE TABLE checkout_links (
    id              TEXT PRIMARY KEY,
    provider_id     TEXT NOT NULL REFERENCES providers (id),
    token_hash      TEXT NOT NULL,
    label           TEXT NOT NULL,
    created_by      TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL
);
CREATE UNIQUE INDEX checkout_links_hash ON checkout_links (token_hash);
CREATE INDEX checkout_links_provider ON checkout_links (provider_id);
