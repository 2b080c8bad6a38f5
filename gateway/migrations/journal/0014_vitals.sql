-- Health kiosks (两测): readings, kiosk sessions, residents' target ranges (src/vitals/, ADR 0009).
-- Numbered after the issue (14) so that migrations added by other work in parallel do not collide.

-- Every kiosk input by (kiosk, kiosk seq): a reading or a card tap. A retransmission gets the
-- stored answer; the same seq with other content is a conflict. Never updated.
CREATE TABLE vital_inputs (
    device_id   TEXT    NOT NULL,
    device_seq  INTEGER NOT NULL,
    fingerprint TEXT    NOT NULL,
    answer      TEXT    NOT NULL,   -- the Down::Reading sent, JSON
    received_at TEXT    NOT NULL,
    PRIMARY KEY (device_id, device_seq)
);

-- A card tapped on a kiosk binds the kiosk's following readings to its resident until
-- expires_at or the next tap on that kiosk (closed_at).
CREATE TABLE vital_sessions (
    id          INTEGER PRIMARY KEY,
    kiosk       TEXT NOT NULL,
    resident_id TEXT NOT NULL,
    card_id     TEXT NOT NULL,
    opened_at   TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    closed_at   TEXT
);
CREATE INDEX vital_sessions_kiosk ON vital_sessions (kiosk, id);

-- Readings in canonical integers (units.rs): mmHg, 0.1 mmol/L, %, 0.1 °C, 0.1 kg, /min.
-- resident_id NULL = unassigned (shown to staff, never attached to the previous person).
CREATE TABLE vital_readings (
    id          INTEGER PRIMARY KEY,
    seq         INTEGER NOT NULL,            -- the vital_reading event's seq
    device_id   TEXT    NOT NULL,
    device_seq  INTEGER NOT NULL,
    resident_id TEXT,
    session_id  INTEGER,
    how         TEXT    NOT NULL,            -- 'session' | 'named' | 'unassigned'
    measure     TEXT    NOT NULL,
    v1          INTEGER NOT NULL,
    v2          INTEGER,
    value_in    TEXT    NOT NULL,            -- as sent, with its unit: "98.6 degF"
    context     TEXT,
    arm         TEXT,
    device_time TEXT,
    received_at TEXT    NOT NULL,
    judged_sum  INTEGER,                     -- BP: systolic sum of the window's readings …
    judged_sum2 INTEGER,                     -- … diastolic sum
    judged_n    INTEGER,                     -- … and how many
    findings    TEXT,                        -- JSON [{kind, priority, detail, alert_id}]
    UNIQUE (device_id, device_seq)
);
CREATE INDEX vital_readings_resident ON vital_readings (resident_id, measure, received_at);
CREATE INDEX vital_readings_unassigned ON vital_readings (received_at) WHERE resident_id IS NULL;

-- Target ranges per resident and quantity (a doctor's): the latest row counts; earlier rows are
-- the history. Never updated or deleted.
CREATE TABLE vital_targets (
    id          INTEGER PRIMARY KEY,
    resident_id TEXT    NOT NULL,
    quantity    TEXT    NOT NULL,
    min_value   INTEGER,
    max_value   INTEGER,
    priority    TEXT    NOT NULL,
    set_by      TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    set_at      TEXT    NOT NULL,
    cleared     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX vital_targets_resident ON vital_targets (resident_id, quantity, id);
CREATE TRIGGER vital_targets_append_only_u BEFORE UPDATE ON vital_targets
BEGIN SELECT RAISE(ABORT, 'vital_targets is append-only'); END;
CREATE TRIGGER vital_targets_append_only_d BEFORE DELETE ON vital_targets
BEGIN SELECT RAISE(ABORT, 'vital_targets is append-only'); END;
