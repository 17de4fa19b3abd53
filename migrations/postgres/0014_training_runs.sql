-- Training from the store: each run, started over HTTP or from the command line, trains on the
-- features recorded with each decision (what serving saw) joined with the labels, and registers
-- what it made as a model version. Its progress and result are here. Never edit once applied.

CREATE TABLE training_runs (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    stage           TEXT NOT NULL,
    stages_done     BIGINT NOT NULL,
    stages          BIGINT NOT NULL,
    rows_used       BIGINT,
    positives       BIGINT,
    label_cutoff_ms BIGINT,
    model_id        TEXT REFERENCES model_versions (id),
    error           TEXT,
    started_by      TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    finished_at_ms  BIGINT
);
CREATE INDEX training_runs_created ON training_runs (created_at_ms);
