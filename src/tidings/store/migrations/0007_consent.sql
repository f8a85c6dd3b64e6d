-- Consent (issue 10): invites with their capability token (SHA-256 only), acceptances and
-- refusals, relationships, scope requests, chat, alerts, and a per-identity inbox of events.
-- JSON columns hold language maps, permission lists and feature flags as the core made them.
CREATE TABLE consent_invites (
    id TEXT PRIMARY KEY,
    requester TEXT NOT NULL,
    token_hash BLOB NOT NULL UNIQUE,
    app_code TEXT NOT NULL,
    display_name TEXT NOT NULL,
    consent TEXT NOT NULL,
    permissions TEXT NOT NULL,
    mode TEXT NOT NULL,
    features TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    status TEXT NOT NULL,
    status_at REAL
) WITHOUT ROWID;
CREATE INDEX consent_invites_by_requester ON consent_invites (requester, created_at);
CREATE TABLE consent_acceptances (
    invite_id TEXT NOT NULL REFERENCES consent_invites (id),
    identity_key TEXT NOT NULL,
    identity TEXT NOT NULL,
    at REAL NOT NULL,
    relationship_id TEXT NOT NULL,
    PRIMARY KEY (invite_id, identity_key)
) WITHOUT ROWID;
CREATE TABLE consent_refusals (
    invite_id TEXT NOT NULL REFERENCES consent_invites (id),
    identity TEXT NOT NULL,
    at REAL NOT NULL,
    reason TEXT
);
CREATE INDEX consent_refusals_by_invite ON consent_refusals (invite_id);
CREATE TABLE consent_relationships (
    id TEXT PRIMARY KEY,
    invite_id TEXT NOT NULL,
    requester TEXT NOT NULL,
    accepter TEXT NOT NULL,
    permissions TEXT NOT NULL,
    features TEXT NOT NULL,
    app_code TEXT NOT NULL,
    created_at REAL NOT NULL,
    state TEXT NOT NULL,
    revoked_at REAL,
    revoked_by TEXT,
    revoke_reason TEXT
) WITHOUT ROWID;
CREATE INDEX consent_relationships_by_requester ON consent_relationships (requester, accepter);
CREATE INDEX consent_relationships_by_accepter ON consent_relationships (accepter);
CREATE TABLE consent_scope_requests (
    id TEXT PRIMARY KEY,
    relationship_id TEXT NOT NULL,
    permissions TEXT NOT NULL,
    message TEXT,
    created_at REAL NOT NULL,
    state TEXT NOT NULL,
    decided_at REAL
) WITHOUT ROWID;
CREATE INDEX consent_scope_requests_by_relationship
    ON consent_scope_requests (relationship_id, created_at);
CREATE TABLE consent_chat (
    relationship_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sender TEXT NOT NULL,
    text TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (relationship_id, seq)
) WITHOUT ROWID;
CREATE TABLE consent_alerts (
    id TEXT PRIMARY KEY,
    relationship_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    level TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    ack_required INTEGER NOT NULL,
    ack_id TEXT,
    at REAL NOT NULL,
    acked_at REAL,
    acked_by TEXT
) WITHOUT ROWID;
CREATE TABLE consent_inbox (
    identity TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (identity, seq)
) WITHOUT ROWID;
