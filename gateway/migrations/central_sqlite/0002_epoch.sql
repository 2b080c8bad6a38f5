-- The journal's epoch joins the idempotency key: (gateway_id, epoch, seq) (docs/adr/0007).
-- SQLite cannot change a primary key in place: the table is rebuilt; existing rows get the
-- legacy epoch ''.
CREATE TABLE events_with_epoch (
    gateway_id   TEXT    NOT NULL,
    epoch        TEXT    NOT NULL DEFAULT '',
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
    PRIMARY KEY (gateway_id, epoch, seq)
);
INSERT INTO events_with_epoch
    (gateway_id, epoch, seq, site_id, kind, device_id, device_seq, alert_id, received_at, device_time, body, stored_at)
    SELECT gateway_id, '', seq, site_id, kind, device_id, device_seq, alert_id, received_at, device_time, body, stored_at
    FROM events;
DROP TABLE events;
ALTER TABLE events_with_epoch RENAME TO events;
CREATE INDEX events_device ON events (gateway_id, device_id, device_seq);
