//! Catalog schema and its migrations.
//!
//! Migrations are append-only: `MIGRATIONS[i]` takes the database from
//! `user_version` i to i+1. A catalog newer than this binary is refused rather
//! than guessed at. The catalog is a cache of the vault (it can always be
//! rebuilt from a tier), but it is still migrated in place, in a transaction.

/// Each entry upgrades `user_version` N to N+1.
pub const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the core tables.
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- A pack, as sealed. size = ciphertext bytes (the object size in every tier).
CREATE TABLE packs (
    id      BLOB PRIMARY KEY,
    size    INTEGER NOT NULL,
    blobs   INTEGER NOT NULL,
    chunks  INTEGER NOT NULL,
    created TEXT NOT NULL
);

-- Where each pack lives, per tier, for the 3-2-1 rule.
CREATE TABLE pack_copies (
    pack_id     BLOB NOT NULL REFERENCES packs(id),
    tier        TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('present', 'pending', 'missing', 'corrupt')),
    size        INTEGER,
    updated     TEXT NOT NULL,
    verified_at TEXT,
    PRIMARY KEY (pack_id, tier)
) WITHOUT ROWID;

-- Blobs (zstd frames or raw runs) inside packs.
CREATE TABLE blobs (
    id         INTEGER PRIMARY KEY,
    pack_id    BLOB NOT NULL REFERENCES packs(id),
    offset     INTEGER NOT NULL,
    stored_len INTEGER NOT NULL,
    raw_len    INTEGER NOT NULL,
    codec      INTEGER NOT NULL,
    kind       INTEGER NOT NULL
);
CREATE INDEX blobs_by_pack ON blobs(pack_id);

-- Chunk id -> where its bytes are. offset is inside the decoded blob.
CREATE TABLE chunks (
    id     BLOB PRIMARY KEY,
    blob   INTEGER NOT NULL REFERENCES blobs(id),
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL
) WITHOUT ROWID;

-- Committed snapshots. manifest = the decrypted manifest JSON.
CREATE TABLE snapshots (
    id          TEXT PRIMARY KEY,
    job         TEXT NOT NULL,
    kind        TEXT NOT NULL,
    created     TEXT NOT NULL,
    host        TEXT NOT NULL,
    raw_size    INTEGER NOT NULL,
    stored_size INTEGER NOT NULL,
    chunk_count INTEGER NOT NULL,
    tags        TEXT NOT NULL,
    pinned      INTEGER NOT NULL DEFAULT 0,
    manifest    TEXT NOT NULL
);
CREATE INDEX snapshots_by_job ON snapshots(job, created);

-- Where each manifest lives, per tier.
CREATE TABLE snapshot_copies (
    snapshot_id TEXT NOT NULL REFERENCES snapshots(id),
    tier        TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('present', 'pending', 'missing', 'corrupt')),
    updated     TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, tier)
) WITHOUT ROWID;

-- Every backup / restore / verify / rebuild, whatever its outcome.
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    job         TEXT,
    started     TEXT NOT NULL,
    finished    TEXT,
    bytes       INTEGER,
    outcome     TEXT NOT NULL CHECK (outcome IN ('running', 'ok', 'failed', 'partial')),
    error       TEXT,
    snapshot_id TEXT,
    details     TEXT
);
"#,
    // 1 -> 2: retention and prune (vault-format/SPEC.md "Deletion").
    r#"
-- The reason a snapshot is pinned (pins/<id> in the tier is the truth).
ALTER TABLE snapshots ADD COLUMN pin_reason TEXT;

-- When S3 Object Lock lets an object be deleted (RFC 3339), where known.
ALTER TABLE pack_copies ADD COLUMN retained_until TEXT;
ALTER TABLE snapshot_copies ADD COLUMN retained_until TEXT;

-- Further places a chunk is stored: `chunks` holds its first (the one
-- restores use); a repack or two hosts storing the same chunk add more.
-- Prune needs them to know what every pack holds.
CREATE TABLE chunk_copies (
    id     BLOB NOT NULL,
    blob   INTEGER NOT NULL REFERENCES blobs(id),
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    PRIMARY KEY (id, blob)
) WITHOUT ROWID;
CREATE INDEX chunk_copies_by_blob ON chunk_copies(blob);

-- Objects decided for deletion and not yet deleted from a tier: written
-- before the delete, removed after it, so an interrupted or refused delete
-- is finished later (prune, forget, sync).
CREATE TABLE deletions (
    key            TEXT NOT NULL,
    tier           TEXT NOT NULL,
    reason         TEXT NOT NULL,
    decided        TEXT NOT NULL,
    retained_until TEXT,
    last_error     TEXT,
    PRIMARY KEY (key, tier)
) WITHOUT ROWID;
"#,
    // 2 -> 3: the WAL archive (vault-format/SPEC.md "WAL archive").
    r#"
-- Every WAL file archived by `coffer wal push`, per job. The local tier's
-- wal/<job tag>/<name> object is the truth; this is its cache, plus what
-- only this host knows: when it was pushed and which S3 batch holds it.
CREATE TABLE wal_files (
    job     TEXT NOT NULL,
    name    TEXT NOT NULL,
    tli     INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    hash    BLOB NOT NULL,
    size    INTEGER NOT NULL,
    stored  INTEGER NOT NULL,
    pushed  TEXT NOT NULL,
    batch   TEXT,
    PRIMARY KEY (job, name)
) WITHOUT ROWID;
CREATE INDEX wal_files_pending ON wal_files(job, batch, pushed);

-- The cluster a job archives: the first segment pushed decides it.
CREATE TABLE wal_systems (
    job               TEXT PRIMARY KEY,
    system_identifier TEXT NOT NULL,
    segment_size      INTEGER NOT NULL
);
"#,
    // 3 -> 4: a manifest is checked by the hash of its sealed bytes, as a
    // pack is by its id (vault-format/SPEC.md "Snapshots"). NULL: not known
    // (committed before, or learned without the bytes).
    r#"
ALTER TABLE snapshots ADD COLUMN sealed_hash TEXT;
"#,
];
