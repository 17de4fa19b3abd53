-- Evidence a provider (or the platform's staff) gives for a disputed payment, a chargeback or a MED
-- claim (issue 13). The file is in the document store at `evidence/<payment>/<id>.<ext>`; this row
-- lists it. Never edit once applied.
CREATE TABLE dispute_evidence (
    id              TEXT PRIMARY KEY,
    payment_id      TEXT NOT NULL REFERENCES payments (id),
    content_type    TEXT NOT NULL,
    bytes           BIGINT NOT NULL,
    sha256          TEXT NOT NULL,
    uploaded_by     TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL
);
CREATE INDEX dispute_evidence_payment ON dispute_evidence (payment_id, created_at_ms);
