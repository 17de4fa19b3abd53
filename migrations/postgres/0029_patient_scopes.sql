-- Provider-scoped patient credentials and the provider's own view of a patient (issue 12).
--
-- A patient is one person (one CPF), but a credential a provider was handed for them (the token
-- shown at registration, a session from the provider's sign-in link) opens only what concerns
-- that provider. A provider that registers a CPF registered elsewhere is told nothing of it: it
-- gets its own link, its own view (the name, e-mail and phone it gave) and a token scoped to it.
-- Never edit once applied.

-- The provider the patient's first token was shown to; NULL when the admin registered them.
-- Links made at registration share the patient's creation time, which tells them apart from
-- links made later by a checkout link.
ALTER TABLE patients ADD COLUMN token_provider_id TEXT REFERENCES providers (id);
UPDATE patients SET token_provider_id = (
    SELECT provider_id FROM provider_patients
    WHERE provider_patients.patient_id = patients.id
      AND provider_patients.created_at_ms = patients.created_at_ms
    ORDER BY provider_id LIMIT 1);

-- Tokens shown to a provider that registered a patient already registered elsewhere.
CREATE TABLE patient_tokens (
    token_hash      TEXT PRIMARY KEY,
    patient_id      TEXT NOT NULL REFERENCES patients (id),
    provider_id     TEXT NOT NULL REFERENCES providers (id),
    created_at_ms   BIGINT NOT NULL
);
CREATE INDEX patient_tokens_patient ON patient_tokens (patient_id);

-- The provider's own view: what it gave when it registered the patient (NULL: the patient's own).
ALTER TABLE provider_patients ADD COLUMN name TEXT;
ALTER TABLE provider_patients ADD COLUMN email TEXT;
ALTER TABLE provider_patients ADD COLUMN phone TEXT;

-- A sign-in link a provider made opens a session scoped to it; support's and the admin's do not.
ALTER TABLE patient_sign_in_codes ADD COLUMN provider_id TEXT REFERENCES providers (id);
UPDATE patient_sign_in_codes SET provider_id = substr(created_by, 10) WHERE created_by LIKE 'provider:%';
ALTER TABLE patient_sessions ADD COLUMN provider_id TEXT REFERENCES providers (id);
-- Sessions opened before scopes existed cannot tell whose link opened them: they end, and the
-- patient signs in again (a session lasts a day anyway).
UPDATE patient_sessions SET revoked_at_ms = created_at_ms WHERE revoked_at_ms IS NULL;

-- A conversation belongs to the scope of the credential that started it: the bot tells a
-- provider-scoped session only of that provider's payments, and the transcript stays in it.
ALTER TABLE chat_conversations ADD COLUMN provider_id TEXT REFERENCES providers (id);
