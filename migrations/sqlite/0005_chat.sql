-- The patients' support chat: conversations, their transcripts, and the review cases a patient
-- opens by disputing a charge. Never edit once applied.

CREATE TABLE chat_conversations (
    id              TEXT PRIMARY KEY,
    patient_id      TEXT NOT NULL REFERENCES patients (id),
    -- 'bot' while the bot answers; 'handed_off' once a person has taken over (the bot is silent).
    status          TEXT NOT NULL CHECK (status IN ('bot', 'handed_off')),
    handoff_reason  TEXT,
    slots           TEXT NOT NULL,                       -- JSON: what the bot remembers between turns
    last_seq        BIGINT NOT NULL DEFAULT 0,
    created_at_ms   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL
);
CREATE INDEX chat_conversations_patient ON chat_conversations (patient_id, created_at_ms);
CREATE INDEX chat_conversations_status ON chat_conversations (status, updated_at_ms);

CREATE TABLE chat_messages (
    conversation_id  TEXT NOT NULL REFERENCES chat_conversations (id),
    seq              BIGINT NOT NULL CHECK (seq >= 1),
    role             TEXT NOT NULL CHECK (role IN ('patient', 'bot', 'agent')),
    text             TEXT NOT NULL,
    intent           TEXT,
    confidence_bps   BIGINT,                              -- the classifier's probability, in basis points
    created_at_ms    BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);

CREATE TABLE review_cases (
    id               TEXT PRIMARY KEY,
    payment_id       TEXT NOT NULL REFERENCES payments (id),
    reason           TEXT NOT NULL,
    conversation_id  TEXT REFERENCES chat_conversations (id),
    status           TEXT NOT NULL CHECK (status IN ('open', 'closed')),
    created_at_ms    BIGINT NOT NULL
);
CREATE INDEX review_cases_status ON review_cases (status, created_at_ms);
CREATE UNIQUE INDEX review_cases_open_payment ON review_cases (payment_id, reason) WHERE status = 'open';
