-- When the signed copy of a contract was fetched from ClickSign into the document store (issue
-- 13); NULL while it is owed. Signed contracts without it are fetched by a sweep, on any node.
-- Never edit once applied.
ALTER TABLE contracts ADD COLUMN signed_copy_at_ms BIGINT;
