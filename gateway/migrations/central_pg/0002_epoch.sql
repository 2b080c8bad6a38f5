-- The journal's epoch joins the idempotency key: (gateway_id, epoch, seq) (docs/adr/0007).
-- A gateway whose journal went back in time (deleted, truncated, restored, WAL lost) reuses seq
-- numbers, never an epoch. Rows stored before epochs keep the legacy epoch ''; so does a gateway
-- of an older version still inserting without the column, exactly as before.
ALTER TABLE events ADD COLUMN IF NOT EXISTS epoch TEXT NOT NULL DEFAULT '';
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_pkey;
ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (gateway_id, epoch, seq);
