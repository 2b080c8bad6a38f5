-- Central store: every event of every gateway, exactly once per (gateway_id, seq).
CREATE TABLE IF NOT EXISTS events (
    gateway_id   TEXT        NOT NULL,
    seq          BIGINT      NOT NULL,
    site_id      TEXT        NOT NULL,
    kind         TEXT        NOT NULL,
    device_id    TEXT,
    device_seq   BIGINT,
    alert_id     BIGINT,
    received_at  TIMESTAMPTZ NOT NULL,
    device_time  TIMESTAMPTZ,
    body         JSONB       NOT NULL,
    stored_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, seq)
);
CREATE INDEX IF NOT EXISTS events_device ON events (gateway_id, device_id, device_seq);
CREATE INDEX IF NOT EXISTS events_kind_time ON events (kind, received_at);
