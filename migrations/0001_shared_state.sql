-- maskgate shared state, schema version 1.
--
-- Applied by the gateway at start (embedded in the binary), inside one
-- transaction holding a transaction-level advisory lock, so two instances
-- starting at once apply it once. Never edit an applied migration: add
-- 0002_*.sql instead.

-- Failed authentications per identity (`key:…`, `cert:…`, `ip:…`): the
-- times (Unix milliseconds) within the lockout window.
CREATE TABLE maskgate_auth_failures (
    identity TEXT PRIMARY KEY,
    times    BIGINT[] NOT NULL
);

-- Locks in force (and expired ones not yet replaced).
CREATE TABLE maskgate_locks (
    identity TEXT PRIMARY KEY,
    since_ms BIGINT NOT NULL,
    until_ms BIGINT NOT NULL
);

-- Frozen accounts.
CREATE TABLE maskgate_freezes (
    account   TEXT PRIMARY KEY,
    frozen_by TEXT NOT NULL,
    at_ms     BIGINT NOT NULL
);

-- Records released per principal per calendar day (record budgets).
CREATE TABLE maskgate_budgets (
    principal TEXT NOT NULL,
    day       TEXT NOT NULL,
    records   BIGINT NOT NULL,
    PRIMARY KEY (principal, day)
);

-- Decrypt grants: the grant as JSON (the file store's format), its id and
-- issue time as columns. A use locks the row (SELECT … FOR UPDATE).
CREATE TABLE maskgate_grants (
    id           TEXT PRIMARY KEY,
    issued_at_ms BIGINT NOT NULL,
    grant_json   TEXT NOT NULL
);

-- The audit log: every line (record or signed checkpoint) exactly as the
-- file log would hold it, in order of `pos` (1, 2, …). `seq` is the
-- record's seq (NULL for a checkpoint line).
CREATE TABLE maskgate_audit_lines (
    pos  BIGINT PRIMARY KEY,
    seq  BIGINT UNIQUE,
    line TEXT NOT NULL
);

-- The chain's head: one row, locked by every append (SELECT … FOR UPDATE),
-- so appends from all instances form one chain. `checkpoint_line` is the
-- newest signed checkpoint (the file log's audit-head.json): it anchors the
-- log's length for `audit verify`.
CREATE TABLE maskgate_audit_head (
    id                 SMALLINT PRIMARY KEY CHECK (id = 1),
    seq                BIGINT NOT NULL,
    hash               BYTEA NOT NULL,
    sealed_seq         BIGINT NOT NULL,
    last_checkpoint_ms BIGINT NOT NULL,
    next_pos           BIGINT NOT NULL,
    checkpoint_line    TEXT
);
INSERT INTO maskgate_audit_head VALUES (1, 0, decode(repeat('00', 32), 'hex'), 0, 0, 1, NULL);

-- The audit lines are append-only for everyone going through the table's
-- normal privileges (defence in depth: `audit verify` is the real check).
CREATE FUNCTION maskgate_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'maskgate_audit_lines is append-only';
END
$$;
CREATE TRIGGER maskgate_audit_lines_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON maskgate_audit_lines
    FOR EACH STATEMENT EXECUTE FUNCTION maskgate_audit_append_only();
