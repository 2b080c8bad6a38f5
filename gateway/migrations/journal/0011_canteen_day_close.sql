-- The canteen manager's day and the claim (issue 12, docs/CANTEEN.md, docs/adr/0011).
--
-- How a top-up was paid (cash, wechat, alipay, bank, other), for the daily cash reconciliation.
-- Rows written before this migration have none ('unspecified' in reports). The ledger stays
-- append-only: the column is only ever set on INSERT.
ALTER TABLE ledger ADD COLUMN method TEXT;

-- Residents staff reported away or in hospital: a card tapped while one is open is flagged on
-- the day report for a person to look at (never refused). Closed by a "back" (ended_*), never
-- deleted.
CREATE TABLE resident_away (
    id          INTEGER PRIMARY KEY,
    resident_id TEXT NOT NULL,
    kind        TEXT NOT NULL,  -- away | hospital
    note        TEXT,
    set_by      TEXT NOT NULL,
    set_at      TEXT NOT NULL,  -- RFC 3339 UTC
    ended_by    TEXT,
    ended_at    TEXT
);
CREATE INDEX resident_away_resident ON resident_away(resident_id);

-- The day close and the claim read by instant and by meal date.
CREATE INDEX ledger_at ON ledger(at);
CREATE INDEX taps_received ON taps(received_at);
CREATE INDEX meals_day ON meals(local_date);
