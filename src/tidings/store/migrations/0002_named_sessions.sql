-- Named persistent sessions (issue 4): queue row kinds, gap bookkeeping, persistence state.
ALTER TABLE queue ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;
CREATE TABLE gaps (
    identity TEXT NOT NULL,
    instance TEXT NOT NULL,
    dropped INTEGER NOT NULL,
    lost TEXT NOT NULL,
    PRIMARY KEY (identity, instance)
) WITHOUT ROWID;
CREATE TABLE persistence (
    identity TEXT NOT NULL,
    instance TEXT NOT NULL,
    nonce TEXT,
    memento TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (identity, instance)
) WITHOUT ROWID;
