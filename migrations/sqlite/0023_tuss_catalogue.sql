-- The TUSS catalogue (issue 14), loaded by `medpay catalogue import`: each code's official term
-- and validity (ISO dates; '' for open-ended). Replaced whole by each import; its version (in
-- `settings`, `tuss_catalogue_version`) tells running nodes to read it again. No catalogue: any
-- well-formed code is taken, as before. Never edit once applied.
CREATE TABLE tuss_catalogue (
    code          TEXT PRIMARY KEY,
    term          TEXT NOT NULL,
    table_code    TEXT NOT NULL,
    valid_from    TEXT NOT NULL,
    valid_until   TEXT NOT NULL
);
