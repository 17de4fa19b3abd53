-- LGPD erasure: when a patient's personal data was erased. Their payments, ledger entries and CPF
-- stay (financial records the law makes us keep for the retention period); names, contacts,
-- devices, addresses and chats do not. Never edit once applied.
ALTER TABLE patients ADD COLUMN erased_at_ms BIGINT;
