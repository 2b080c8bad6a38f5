-- The open alerts (the board, `/api/alerts`, the alert book at start) are read by this index
-- instead of a scan of every alert ever raised: 36,500 resolved alerts (a year of a community)
-- made each board refresh scan the whole table (tests/bench console, docs/PERFORMANCE.md).
-- The query must repeat the index's WHERE (`state IN ('raised','acknowledged')`) to use it.
CREATE INDEX alerts_open ON alerts(id) WHERE state IN ('raised', 'acknowledged');
-- The visits page and the overview's visits done: missed check-ins resolved in a period.
CREATE INDEX alerts_kind_resolved ON alerts(kind, resolved_at);
-- The resident page's latest alerts (`WHERE resident_id = ? ORDER BY id DESC LIMIT 20`) and the
-- overview's counts by period (`raised_at` ranges).
CREATE INDEX alerts_resident ON alerts(resident_id, id) WHERE resident_id IS NOT NULL;
CREATE INDEX alerts_raised_at ON alerts(raised_at);
