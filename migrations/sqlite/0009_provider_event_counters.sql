-- A provider's event counter in a row of its own. The providers row is what every new payment's
-- foreign key locks (FOR KEY SHARE, on PostgreSQL); with the counter on it, every write batch also
-- updated that row, and the two together made it the hottest row of the database (a long chain of
-- row versions and multixacts walked by every payment: most of PostgreSQL's CPU under load).
-- The writer raises the counter with an upsert at the end of each batch. Never edit once applied.

CREATE TABLE provider_event_counters (
    provider_id     TEXT PRIMARY KEY,
    last_event_seq  BIGINT NOT NULL
);
INSERT INTO provider_event_counters (provider_id, last_event_seq)
    SELECT id, last_event_seq FROM providers;
ALTER TABLE providers DROP COLUMN last_event_seq;

-- No query reads payments by status (the sweep reads intents, charges and refunds), and an index
-- on it made every status change of a payment a new row version in every index of the table
-- (PostgreSQL cannot update in place, "HOT", a row whose indexed columns change).
DROP INDEX payments_status;
