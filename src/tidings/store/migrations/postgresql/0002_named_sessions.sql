-- Named persistent sessions (issue 4): queue row kinds, gap bookkeeping, persistence state.
ALTER TABLE queue ADD COLUMN kind BIGINT NOT NULL DEFAULT 0;
CREATE TABLE gaps (
    identity TEXT COLLATE "C" NOT NULL,
    instance TEXT COLLATE "C" NOT NULL,
    dropped BIGINT NOT NULL,
    lost TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (identity, instance)
);
CREATE TABLE persistence (
    identity TEXT COLLATE "C" NOT NULL,
    instance TEXT COLLATE "C" NOT NULL,
    nonce TEXT COLLATE "C",
    memento TEXT COLLATE "C",
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (identity, instance)
);
