-- Relationship expiry (issue 10): an invite may say when the relationships its acceptance makes
-- end (grant_expires_at), and each relationship keeps its own expires_at (NULL: until revoked).
-- The partial index serves the expiry sweep: active relationships that expire, soonest first.
ALTER TABLE consent_invites ADD COLUMN grant_expires_at DOUBLE PRECISION;
ALTER TABLE consent_relationships ADD COLUMN expires_at DOUBLE PRECISION;
CREATE INDEX consent_relationships_by_expiry ON consent_relationships (expires_at)
    WHERE state = 'active' AND expires_at IS NOT NULL;
