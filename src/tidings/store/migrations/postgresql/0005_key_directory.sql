-- The key directory: every accepted node info publication (history, never edited) and
-- revocations (kept forever: a revoked key is never published again).
CREATE TABLE key_publications (
    sign_id TEXT COLLATE "C" NOT NULL,
    published BIGINT NOT NULL,
    identity TEXT COLLATE "C" NOT NULL,
    instance TEXT COLLATE "C" NOT NULL,
    expires BIGINT NOT NULL,
    document TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (sign_id, published)
);
CREATE INDEX key_publications_by_identity ON key_publications (identity, sign_id);
CREATE TABLE key_revocations (
    sign_id TEXT COLLATE "C" PRIMARY KEY,
    revoked BIGINT NOT NULL,
    revoked_by TEXT COLLATE "C" NOT NULL
);
