-- Duplicate detection in bounded space (issue 15): message_ids kept every (sender, id) as two
-- strings, twice (the primary key and the age index), for seven days. message_keys keeps one
-- key per message (96 bits of SHA-256 of the sender, then the id: _sql.dedupe_key, computed
-- here the same way) and the millisecond after which it was stored (_sql.dedupe_stamp); the
-- age index lets the pruner take the oldest rows in small chunks.
CREATE TABLE message_keys (
    key BYTEA PRIMARY KEY,
    stored_at BIGINT NOT NULL
);
CREATE INDEX message_keys_by_age ON message_keys (stored_at);
INSERT INTO message_keys (key, stored_at)
    SELECT substring(sha256(convert_to(sender, 'UTF8')) FROM 1 FOR 12)
               || convert_to(msg_id, 'UTF8'),
           floor(accepted_at * 1000)::bigint + 1
    FROM message_ids
    ON CONFLICT DO NOTHING;
DROP TABLE message_ids;
