-- The gateway journal. One writer task owns every table here (see src/journal/writer.rs).

-- Every event the gateway accepted, in commit order. `seq` is gateway-monotonic and, with the
-- gateway id, the idempotency key at the central store. The outbox is this table above the
-- forwarder's cursor.
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY,
    kind        TEXT    NOT NULL,  -- alarm_press, alarm_cancel, checkin, alert_raised, alert_acknowledged, ...
    device_id   TEXT,
    device_seq  INTEGER,           -- the device's own sequence number (dedupe key with device_id)
    alert_id    INTEGER,
    received_at TEXT    NOT NULL,  -- gateway clock, RFC 3339 UTC with milliseconds
    device_time TEXT,              -- the device's clock as reported, RFC 3339 UTC; may be wrong
    body        TEXT    NOT NULL   -- JSON
);
CREATE INDEX events_device ON events(device_id, device_seq);

-- Current state of every alert; the history is in `events`.
CREATE TABLE alerts (
    id            INTEGER PRIMARY KEY,
    kind          TEXT    NOT NULL,  -- sos | device_offline | low_battery | missed_checkin
    subject       TEXT    NOT NULL,  -- the resident id, or the device id when no resident
    priority      TEXT    NOT NULL,  -- high | medium | low
    device_id     TEXT    NOT NULL,
    resident_id   TEXT,
    location      TEXT,
    state         TEXT    NOT NULL,  -- raised | acknowledged | resolved | cancelled
    press_count   INTEGER NOT NULL,
    raised_seq    INTEGER NOT NULL,
    raised_at     TEXT    NOT NULL,
    acked_by      TEXT,
    acked_at      TEXT,
    acked_via     TEXT,
    ack_note      TEXT,
    resolved_by   TEXT,
    resolved_at   TEXT,
    resolved_via  TEXT,
    resolve_note  TEXT,
    detail        TEXT,              -- e.g. "no heartbeat since …", "battery 12%"
    notified_at   TEXT,              -- first time staff were told (the "notified" stage)
    escalation_step INTEGER NOT NULL DEFAULT 0  -- last ladder step fired (0 = first)
);
-- At most one open alert of a kind per subject (resident): further presses join it.
CREATE UNIQUE INDEX alerts_one_open ON alerts(subject, kind)
    WHERE state IN ('raised', 'acknowledged');

-- Webhook deliveries, written in the same transaction as the alert change they announce, sent
-- and retried by the webhook sender until the target answers 2xx.
CREATE TABLE webhook_outbox (
    id           INTEGER PRIMARY KEY,
    created_at   TEXT    NOT NULL,
    alert_id     INTEGER NOT NULL,
    staff_id     TEXT    NOT NULL,
    url          TEXT    NOT NULL,
    body         TEXT    NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    delivered_at TEXT
);
CREATE INDEX webhook_pending ON webhook_outbox(id) WHERE delivered_at IS NULL;

-- Local dates on which the daily check-in was evaluated (so a restart neither skips nor repeats it).
CREATE TABLE checkin_runs (
    local_date TEXT PRIMARY KEY,
    ran_at     TEXT NOT NULL,
    missed     INTEGER NOT NULL
);

-- Input the gateway could not accept, kept for people to read. Never forwarded, never deleted by
-- the gateway.
CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY,
    received_at TEXT    NOT NULL,
    source      TEXT    NOT NULL,  -- mqtt topic, serial port, http path
    reason      TEXT    NOT NULL,  -- malformed_json, unknown_device, bad_topic, oversize, unknown_version, ...
    detail      TEXT    NOT NULL,
    payload     BLOB    NOT NULL,  -- at most the first 4096 bytes
    payload_len INTEGER NOT NULL
);

-- Latest heartbeat per device (coalesced; heartbeats are not events).
CREATE TABLE device_status (
    device_id   TEXT PRIMARY KEY,
    last_seen   TEXT NOT NULL,
    battery_mv  INTEGER,
    battery_pct INTEGER,
    rssi        INTEGER
);

-- How far the outbox forwarder has got: every event with seq <= forwarded_upto is at the central
-- store. Only ever moves forward.
CREATE TABLE forward_cursor (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    forwarded_upto INTEGER NOT NULL
);
INSERT INTO forward_cursor (id, forwarded_upto) VALUES (1, 0);

-- Canteen. Cards bind to residents (lost cards stay, marked lost).
CREATE TABLE cards (
    card_id     TEXT PRIMARY KEY,  -- UID hex, upper case
    resident_id TEXT NOT NULL,
    state       TEXT NOT NULL,     -- active | lost
    changed_at  TEXT NOT NULL,
    changed_by  TEXT
);

-- Every tap and the answer the reader got (re-sent as is for a retransmission).
CREATE TABLE taps (
    id          INTEGER PRIMARY KEY,
    reader      TEXT    NOT NULL,
    reader_seq  INTEGER NOT NULL,
    card_id     TEXT    NOT NULL,
    received_at TEXT    NOT NULL,
    meal_id     INTEGER,
    answer      TEXT    NOT NULL,  -- JSON Down::Display
    UNIQUE (reader, reader_seq)
);
CREATE INDEX taps_card ON taps(card_id, id);

CREATE TABLE meals (
    id           INTEGER PRIMARY KEY,
    resident_id  TEXT    NOT NULL,
    card_id      TEXT    NOT NULL,
    reader       TEXT    NOT NULL,
    local_date   TEXT    NOT NULL,
    period       TEXT    NOT NULL,
    price_fen    INTEGER NOT NULL,
    subsidy_fen  INTEGER NOT NULL,
    payable_fen  INTEGER NOT NULL,
    applied      TEXT    NOT NULL,  -- JSON list of subsidy names
    at           TEXT    NOT NULL,
    delivered_by TEXT,              -- staff id for meals delivered to the door
    voided_by    TEXT,              -- staff void: the charge is refunded in the ledger
    voided_at    TEXT,
    void_reason  TEXT
);
CREATE INDEX meals_resident_day ON meals(resident_id, local_date);

-- Money, in fen, append-only: top-ups positive, charges negative. A balance is SUM(amount_fen).
CREATE TABLE ledger (
    id          INTEGER PRIMARY KEY,
    resident_id TEXT    NOT NULL,
    kind        TEXT    NOT NULL,  -- topup | charge | refund
    amount_fen  INTEGER NOT NULL,
    meal_id     INTEGER,
    staff_id    TEXT,
    reason      TEXT,
    at          TEXT    NOT NULL
);
CREATE INDEX ledger_resident ON ledger(resident_id);
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
