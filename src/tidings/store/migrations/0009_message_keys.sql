-- Duplicate detection in bounded space (issue 15): message_ids kept every (sender, id) as two
-- strings, twice (the primary key and the age index), for seven days. message_keys keeps one
-- key per message (96 bits of SHA-256 of the sender, then the id: _sql.dedupe_key) and the
-- millisecond after which it was stored (_sql.dedupe_stamp); the age index lets the pruner
-- take the oldest rows in small chunks. Rows still in the table are carried over (tidings_dedupe_key is
-- _sql.dedupe_key, registered on every connection by sqlite.py).
CREATE TABLE message_keys (
    key BLOB PRIMARY KEY,
    stored_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX message_keys_by_age ON message_keys (stored_at);
INSERT INTO message_keys (key, stored_at)
    SELECT tidings_dedupe_key(sender, msg_id), CAST(accepted_at * 1000 AS INTEGER) + 1 FROM message_ids
    WHERE true ON CONFLICT DO NOTHING;
DROP TABLE message_ids;
