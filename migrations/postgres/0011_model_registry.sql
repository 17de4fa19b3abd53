-- Models as data. Every model version is immutable and named by the SHA-256 of its artefact; its
-- lineage (what it was trained on, with what code) and its evaluation report are kept beside it.
-- Aliases point at versions (`champion` decides payments; `challenger` is the candidate), and
-- every move of an alias is recorded with who, when and why: rollback moves `champion` back to
-- the version it held before. Never edit once applied.

CREATE TABLE model_versions (
    id             TEXT PRIMARY KEY,          -- SHA-256 (hex) of the artefact's JSON
    version        TEXT NOT NULL,             -- the artefact's own name, as decisions record it
    kind           TEXT NOT NULL,
    artefact       TEXT NOT NULL,
    lineage        TEXT NOT NULL,             -- JSON
    report         TEXT,                      -- JSON, the evaluation report
    created_by     TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL
);
CREATE INDEX model_versions_created ON model_versions (created_at_ms);

CREATE TABLE model_aliases (
    alias          TEXT PRIMARY KEY CHECK (alias IN ('champion', 'challenger')),
    version_id     TEXT NOT NULL REFERENCES model_versions (id),
    moved_at_ms    BIGINT NOT NULL
);

CREATE TABLE model_alias_moves (
    id             TEXT PRIMARY KEY,
    alias          TEXT NOT NULL,
    from_version   TEXT REFERENCES model_versions (id),
    to_version     TEXT NOT NULL REFERENCES model_versions (id),
    moved_by       TEXT NOT NULL,
    reason         TEXT NOT NULL,
    moved_at_ms    BIGINT NOT NULL
);
CREATE INDEX model_alias_moves_alias ON model_alias_moves (alias, moved_at_ms);
