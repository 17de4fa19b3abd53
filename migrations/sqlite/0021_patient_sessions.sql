-- The patient app's sign-in (issue 13). A provider (or support) gives the patient a link carrying a
-- short-lived, single-use sign-in code; the app exchanges it for a session that expires. Both are
-- stored as the SHA-256 of their secret, which is shown once. Never edit once applied.
CREATE TABLE patient_sign_in_codes (
    code_hash       TEXT PRIMARY KEY,
    patient_id      TEXT NOT NULL REFERENCES patients (id),
    created_by      TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    used_at_ms      BIGINT
);
CREATE INDEX patient_sign_in_codes_patient ON patient_sign_in_codes (patient_id);

CREATE TABLE patient_sessions (
    token_hash      TEXT PRIMARY KEY,
    patient_id      TEXT NOT NULL REFERENCES patients (id),
    created_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    revoked_at_ms   BIGINT
);
CREATE INDEX patient_sessions_patient ON patient_sessions (patient_id);
