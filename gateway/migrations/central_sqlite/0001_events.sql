-- Embedded central store (demo, single site): the same model as the PostgreSQL one.
CREATE TABLE IF NOT EXISTS events (
    gateway_id   TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    site_id      TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    device_id    TEXT,
    device_seq   INTEGER,
    alert_id     INTEGER,
    received_at  TEXT    NOT NULL,
    device_time  TEXT,
    body         TEXT    NOT NULL,
    stored_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (gateway_id, seq)
);
CREATE INDEX IF NOT EXISTS events_device ON events (gateway_id, device_id, device_seq);
