-- How an analyst closed a review case: upheld (the charge was not the patient's: cancelled or
-- refunded, labelled fraud) or rejected (the charge stands, labelled legitimate). Never edit once
-- applied.

ALTER TABLE review_cases ADD COLUMN outcome TEXT;
ALTER TABLE review_cases ADD COLUMN note TEXT;
ALTER TABLE review_cases ADD COLUMN closed_at_ms BIGINT;
