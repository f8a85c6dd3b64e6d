-- Expiring messages: every envelope row carries the wall-clock time it expires
-- (seconds since the epoch; NULL for server bookkeeping: gap markers, kept failures). Rows
-- queued by an earlier version expire 7 days after they were queued, the longest expiry.
ALTER TABLE queue ADD COLUMN expires_at DOUBLE PRECISION;
UPDATE queue SET expires_at = enqueued_at + 604800 WHERE kind = 0;
CREATE INDEX queue_by_expiry ON queue (expires_at) WHERE expires_at IS NOT NULL;
