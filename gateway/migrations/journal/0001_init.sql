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
    kind          TEXT    NOT NULL,  -- sos
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
    resolve_note  TEXT
);
-- At most one open alert of a kind per device: further presses join it.
CREATE UNIQUE INDEX alerts_one_open ON alerts(device_id, kind)
    WHERE state IN ('raised', 'acknowledged');

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
