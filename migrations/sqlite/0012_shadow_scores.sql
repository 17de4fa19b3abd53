-- The challenger scores every live payment beside the champion without touching the decision:
-- its version and score are kept with the decision, so that the two can be compared on the same
-- payments as labels arrive. Never edit once applied.

ALTER TABLE decisions ADD COLUMN shadow_model_version TEXT;
ALTER TABLE decisions ADD COLUMN shadow_score BIGINT;
