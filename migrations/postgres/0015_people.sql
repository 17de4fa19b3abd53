-- People with their own identities (issue 12): admin-created accounts for admins, analysts and
-- support agents, each with their own bearer tokens (stored as SHA-256 hashes of 32 random
-- bytes, with an expiry, revocable), an append-only audit log of what people write, and review
-- cases claimed by one person at a time. Never edit once applied.

CREATE TABLE people (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    email           TEXT NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('admin', 'analyst', 'support')),
    created_by      TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    disabled_at_ms  BIGINT
);
CREATE UNIQUE INDEX people_email ON people (email);

CREATE TABLE person_tokens (
    id              TEXT PRIMARY KEY,
    person_id       TEXT NOT NULL REFERENCES people (id),
    token_hash      TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    revoked_at_ms   BIGINT
);
CREATE UNIQUE INDEX person_tokens_hash ON person_tokens (token_hash);
CREATE INDEX person_tokens_person ON person_tokens (person_id);

-- Append-only: nothing updates or deletes a row.
CREATE TABLE audit_log (
    id              TEXT PRIMARY KEY,
    at_ms           BIGINT NOT NULL,
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    target          TEXT NOT NULL,
    before_json     TEXT,
    after_json      TEXT
);
CREATE INDEX audit_log_at ON audit_log (at_ms);

ALTER TABLE review_cases ADD COLUMN claimed_by TEXT;
ALTER TABLE review_cases ADD COLUMN claimed_at_ms BIGINT;
