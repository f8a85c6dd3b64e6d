-- The key directory: every accepted node info publication (history, never edited) and
-- revocations (kept forever: a revoked key is never published again).
CREATE TABLE key_publications (
    sign_id TEXT NOT NULL,
    published INTEGER NOT NULL,
    identity TEXT NOT NULL,
    instance TEXT NOT NULL,
    expires INTEGER NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (sign_id, published)
) WITHOUT ROWID;
CREATE INDEX key_publications_by_identity ON key_publications (identity, sign_id);
CREATE TABLE key_revocations (
    sign_id TEXT PRIMARY KEY,
    revoked INTEGER NOT NULL,
    revoked_by TEXT NOT NULL
) WITHOUT ROWID;
