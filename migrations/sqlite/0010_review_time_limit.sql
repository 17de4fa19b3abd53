-- How long a payment its decision sent to review waits for an analyst: after this many hours its
-- case is resolved by the provider's score_fail_mode (open approves, closed declines), without a
-- label (nobody looked). Never edit once applied.

ALTER TABLE providers ADD COLUMN review_time_limit_hours BIGINT NOT NULL DEFAULT 24;
