-- The escrow release is an effect like a charge: written as an intent in the commit that marks
-- the payment released, performed at Celcoin after it. Never edit once applied.

ALTER TABLE intents DROP CONSTRAINT intents_kind_check;
ALTER TABLE intents ADD CONSTRAINT intents_kind_check CHECK (kind IN ('charge', 'contract', 'release'));
