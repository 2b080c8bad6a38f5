-- The journal's identity and its epochs (src/journal/identity.rs, docs/adr/0007).
--
-- The central store keys an event by (gateway_id, epoch, seq). Every start of the gateway begins
-- a new epoch: its events are those with seq >= first_seq (up to the next epoch's first_seq).
-- A journal that goes back in time (deleted, truncated, restored from a backup, its WAL lost)
-- reuses seq numbers, but never an epoch, so central never takes a new event for an old one.

-- Which journal this is, when and why it was created. One row.
CREATE TABLE journal_identity (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    journal_id TEXT NOT NULL,  -- 128 random bits, hex
    created_at TEXT NOT NULL,  -- RFC 3339 UTC
    origin     TEXT NOT NULL   -- 'new' | 'legacy' | 'replaced a corrupt journal set aside as …'
);

-- One row per start. The epoch of event `seq` is the row with the greatest first_seq <= seq
-- (ties: the greatest id). Never updated, never deleted.
CREATE TABLE journal_epochs (
    id         INTEGER PRIMARY KEY,
    epoch      TEXT    NOT NULL UNIQUE,  -- 128 random bits, hex; '' for a legacy journal's events
    first_seq  INTEGER NOT NULL,
    started_at TEXT    NOT NULL
);

-- A journal from before epochs: its events already are at the central store under the legacy
-- epoch '' (the central migration gives existing rows that epoch), so they keep it and a resent
-- batch stays a repeat. A new journal has no events here, and gets its first epoch at start.
INSERT INTO journal_identity (id, journal_id, created_at, origin)
    SELECT 1, lower(hex(randomblob(16))), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'legacy'
    WHERE EXISTS (SELECT 1 FROM events);
INSERT INTO journal_epochs (epoch, first_seq, started_at)
    SELECT '', 0, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    WHERE EXISTS (SELECT 1 FROM events);
