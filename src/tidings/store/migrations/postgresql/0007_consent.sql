-- Consent (issue 10): invites with their capability token (SHA-256 only), acceptances and
-- refusals, relationships, scope requests, chat, alerts, and a per-identity inbox of events.
-- JSON columns hold language maps, permission lists and feature flags as the core made them.
CREATE TABLE consent_invites (
    id TEXT COLLATE "C" PRIMARY KEY,
    requester TEXT COLLATE "C" NOT NULL,
    token_hash BYTEA NOT NULL UNIQUE,
    app_code TEXT COLLATE "C" NOT NULL,
    display_name TEXT COLLATE "C" NOT NULL,
    consent TEXT COLLATE "C" NOT NULL,
    permissions TEXT COLLATE "C" NOT NULL,
    mode TEXT COLLATE "C" NOT NULL,
    features TEXT COLLATE "C" NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    status TEXT COLLATE "C" NOT NULL,
    status_at DOUBLE PRECISION
);
CREATE INDEX consent_invites_by_requester ON consent_invites (requester, created_at);
CREATE TABLE consent_acceptances (
    invite_id TEXT COLLATE "C" NOT NULL REFERENCES consent_invites (id),
    identity_key TEXT COLLATE "C" NOT NULL,
    identity TEXT COLLATE "C" NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    relationship_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (invite_id, identity_key)
);
CREATE TABLE consent_refusals (
    rowid BIGINT GENERATED ALWAYS AS IDENTITY,
    invite_id TEXT COLLATE "C" NOT NULL REFERENCES consent_invites (id),
    identity TEXT COLLATE "C" NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    reason TEXT COLLATE "C"
);
CREATE INDEX consent_refusals_by_invite ON consent_refusals (invite_id);
CREATE TABLE consent_relationships (
    id TEXT COLLATE "C" PRIMARY KEY,
    invite_id TEXT COLLATE "C" NOT NULL,
    requester TEXT COLLATE "C" NOT NULL,
    accepter TEXT COLLATE "C" NOT NULL,
    permissions TEXT COLLATE "C" NOT NULL,
    features TEXT COLLATE "C" NOT NULL,
    app_code TEXT COLLATE "C" NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    state TEXT COLLATE "C" NOT NULL,
    revoked_at DOUBLE PRECISION,
    revoked_by TEXT COLLATE "C",
    revoke_reason TEXT COLLATE "C"
);
CREATE INDEX consent_relationships_by_requester ON consent_relationships (requester, accepter);
CREATE INDEX consent_relationships_by_accepter ON consent_relationships (accepter);
CREATE TABLE consent_scope_requests (
    id TEXT COLLATE "C" PRIMARY KEY,
    relationship_id TEXT COLLATE "C" NOT NULL,
    permissions TEXT COLLATE "C" NOT NULL,
    message TEXT COLLATE "C",
    created_at DOUBLE PRECISION NOT NULL,
    state TEXT COLLATE "C" NOT NULL,
    decided_at DOUBLE PRECISION
);
CREATE INDEX consent_scope_requests_by_relationship
    ON consent_scope_requests (relationship_id, created_at);
CREATE TABLE consent_chat (
    relationship_id TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    sender TEXT COLLATE "C" NOT NULL,
    text TEXT COLLATE "C" NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (relationship_id, seq)
);
CREATE TABLE consent_alerts (
    id TEXT COLLATE "C" PRIMARY KEY,
    relationship_id TEXT COLLATE "C" NOT NULL,
    sender TEXT COLLATE "C" NOT NULL,
    level TEXT COLLATE "C" NOT NULL,
    title TEXT COLLATE "C" NOT NULL,
    body TEXT COLLATE "C" NOT NULL,
    ack_required BIGINT NOT NULL,
    ack_id TEXT COLLATE "C",
    at DOUBLE PRECISION NOT NULL,
    acked_at DOUBLE PRECISION,
    acked_by TEXT COLLATE "C"
);
CREATE TABLE consent_inbox (
    identity TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    data TEXT COLLATE "C" NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (identity, seq)
);
