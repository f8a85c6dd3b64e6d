CREATE TABLE accounts (
    name TEXT PRIMARY KEY,
    password_hash TEXT,
    profile TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);
CREATE TABLE api_keys (
    key_hash BLOB PRIMARY KEY,
    account TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
    label TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE sessions (
    identity TEXT NOT NULL,
    instance TEXT NOT NULL,
    routing_rule TEXT NOT NULL DEFAULT 'identity',
    queue_limit INTEGER,
    policy TEXT,
    last_seen REAL NOT NULL,
    PRIMARY KEY (identity, instance)
) WITHOUT ROWID;
CREATE TABLE queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    identity TEXT NOT NULL,
    instance TEXT NOT NULL,
    sender TEXT NOT NULL,
    msg_id TEXT,
    needs_ack INTEGER NOT NULL,
    payload BLOB NOT NULL,
    enqueued_at REAL NOT NULL
);
CREATE INDEX queue_by_session ON queue (identity, instance, seq);
CREATE INDEX queue_by_message ON queue (identity, instance, sender, msg_id);
CREATE TABLE message_ids (
    sender TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    accepted_at REAL NOT NULL,
    PRIMARY KEY (sender, msg_id)
) WITHOUT ROWID;
CREATE INDEX message_ids_by_age ON message_ids (accepted_at);
CREATE TABLE contacts (
    owner TEXT NOT NULL,
    identity TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (owner, identity)
) WITHOUT ROWID;
CREATE TABLE delegations (
    owner TEXT NOT NULL,
    target TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (owner, target)
) WITHOUT ROWID;
