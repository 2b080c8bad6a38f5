-- Residents a roster import took off the roster (moved away, died): their name is kept for the
-- claim reports of the months they still ate in. A resident who comes back is removed from here.
-- Their balance can be paid out in cash: ledger.kind 'payout' (negative), never beyond the balance.
CREATE TABLE departed_residents (
    resident_id TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    departed_at TEXT NOT NULL,
    departed_by TEXT NOT NULL
);
