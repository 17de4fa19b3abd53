-- The outbox of the MongoDB export becomes append-only: each change adds a row and nothing is
-- looked up on the payment path. Under 0027 every trigger was an upsert on `UNIQUE (kind, ref)`,
-- and a payment's random id lands on a random page of that index: four to five upserts per
-- payment dirtied pages all over it, which the load run measured (on SQLite) as about a fifth of
-- the throughput with MONGODB_URL set. Now a payment changed four times while it waits has four
-- rows; the exporter reads each thing once per batch and deletes the rows it claimed (a change
-- after the claim is a row of its own, exported by a later pass). The sequence never reuses a
-- seq, so a late completion can only delete rows it exported. Never edit once applied.
CREATE OR REPLACE FUNCTION log_outbox_add(add_kind TEXT, add_ref TEXT) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM settings WHERE name = 'log_export') THEN
        INSERT INTO log_outbox (kind, ref) VALUES (add_kind, add_ref);
    END IF;
END $$;

ALTER TABLE log_outbox DROP CONSTRAINT log_outbox_kind_ref_key;
DROP INDEX log_outbox_due;
ALTER TABLE log_outbox DROP COLUMN version;
