-- List entries' hashes become keyed (HMAC-SHA256 with the server's list key): entries made before
-- hold a plain SHA-256 ('sha256') and are matched as such until re-entered. The key itself is
-- MEDPAY_LIST_KEY when set; otherwise one is made once and kept here. Never edit once applied.
ALTER TABLE list_entries ADD COLUMN hash_kind TEXT NOT NULL DEFAULT 'sha256';
CREATE TABLE settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
