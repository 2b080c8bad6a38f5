-- The district's central store (docs/adr/0014-district-central-store.md): events partitioned by
-- month, one role per gateway that may only INSERT and SELECT its own rows (row-level security
-- on gateway_id), a read-only dashboard role, and the district views.
--
-- Run by the migrator (`eldergate central migrate`, a role that owns the tables and may create
-- roles), never by a gateway: a gateway's role has no DDL rights and only checks that this
-- version is applied.

-- Group roles (cluster-wide; created once, kept if they already exist). Login roles join them:
-- one login role per gateway (registered in `gateways`), any number of dashboard logins.
DO $$
BEGIN
    BEGIN
        CREATE ROLE eldergate_gateway NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    BEGIN
        CREATE ROLE eldergate_dashboard NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
END
$$;

-- Which login role forwards for which gateway. A gateway's role sees and writes only rows with
-- its own gateway_id.
CREATE TABLE gateways (
    gateway_id TEXT PRIMARY KEY,
    site_id    TEXT NOT NULL,
    role_name  NAME NOT NULL UNIQUE,
    added_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The gateway id of a role (NULL for any other role); the policies pass `current_user`, which is
-- evaluated in the caller's context (inside this SECURITY DEFINER function it would be the
-- owner). SECURITY DEFINER so a gateway's role needs no grant on `gateways`.
CREATE FUNCTION eldergate_gateway_of(role NAME) RETURNS TEXT
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$ SELECT gateway_id FROM gateways WHERE role_name = role $$;
REVOKE ALL ON FUNCTION eldergate_gateway_of(NAME) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION eldergate_gateway_of(NAME) TO eldergate_gateway;

-- The district's calendar month of an instant (the views report by local month; partitions are
-- by UTC month). One place to change for a district in another time zone.
CREATE FUNCTION eldergate_local_month(ts TIMESTAMPTZ) RETURNS DATE
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT date_trunc('month', ts AT TIME ZONE 'Asia/Shanghai')::date $$;

-- Events, partitioned by UTC month of received_at. A partition's key must be in the primary key:
-- (gateway_id, epoch, seq, received_at). An event's received_at never changes (the journal row
-- is immutable and a resend carries the same one), so this keeps (gateway_id, epoch, seq) unique
-- in effect and `ON CONFLICT DO NOTHING` still ignores repeats.
ALTER TABLE events RENAME TO events_unpartitioned;
ALTER INDEX events_pkey RENAME TO events_unpartitioned_pkey;
ALTER INDEX events_device RENAME TO events_unpartitioned_device;
ALTER INDEX events_kind_time RENAME TO events_unpartitioned_kind_time;

CREATE TABLE events (
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
    epoch        TEXT        NOT NULL DEFAULT '',
    PRIMARY KEY (gateway_id, epoch, seq, received_at)
) PARTITION BY RANGE (received_at);
CREATE INDEX events_device ON events (gateway_id, device_id, device_seq);
CREATE INDEX events_kind_time ON events (kind, received_at);
CREATE INDEX events_alert ON events (gateway_id, alert_id) WHERE alert_id IS NOT NULL;
-- Whatever has no monthly partition yet (a gateway whose clock is years off, a month nobody
-- created) lands here instead of failing the gateway's insert; `eldergate_ensure_partitions`
-- moves such rows into their month when it creates it.
CREATE TABLE events_default PARTITION OF events DEFAULT;

-- Creates the monthly partitions from the month of `from_ts` to the month of `to_ts` (UTC),
-- moving any rows the default partition holds for a new month into it. Idempotent; run by the
-- migrator (`eldergate central migrate` does it for 12 months ahead; run it monthly).
CREATE FUNCTION eldergate_ensure_partitions(from_ts TIMESTAMPTZ, to_ts TIMESTAMPTZ) RETURNS INTEGER
    LANGUAGE plpgsql SET search_path = public, pg_temp
    AS $$
DECLARE
    m TIMESTAMP := date_trunc('month', from_ts AT TIME ZONE 'UTC');
    last TIMESTAMP := date_trunc('month', to_ts AT TIME ZONE 'UTC');
    lo TIMESTAMPTZ;
    hi TIMESTAMPTZ;
    name TEXT;
    created INTEGER := 0;
BEGIN
    WHILE m <= last LOOP
        lo := m AT TIME ZONE 'UTC';
        hi := (m + interval '1 month') AT TIME ZONE 'UTC';
        name := 'events_' || to_char(m, 'YYYY_MM');
        IF to_regclass(name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I (LIKE events INCLUDING DEFAULTS)', name);
            EXECUTE format(
                'WITH moved AS (DELETE FROM events_default WHERE received_at >= %L AND received_at < %L RETURNING *)
                 INSERT INTO %I SELECT * FROM moved', lo, hi, name);
            EXECUTE format('ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                name, lo, hi);
            created := created + 1;
        END IF;
        m := m + interval '1 month';
    END LOOP;
    RETURN created;
END
$$;
REVOKE ALL ON FUNCTION eldergate_ensure_partitions(TIMESTAMPTZ, TIMESTAMPTZ) FROM PUBLIC;

SELECT eldergate_ensure_partitions(
    LEAST(now() - interval '1 month', (SELECT min(received_at) FROM events_unpartitioned)),
    now() + interval '12 months');

-- Existing rows move once (a lock on the old table for the time this takes: plan it for a large
-- central store, docs/adr/0014).
INSERT INTO events (gateway_id, seq, site_id, kind, device_id, device_seq, alert_id, received_at,
                    device_time, body, stored_at, epoch)
SELECT gateway_id, seq, site_id, kind, device_id, device_seq, alert_id, received_at,
       device_time, body, stored_at, epoch
FROM events_unpartitioned;
DROP TABLE events_unpartitioned;

-- Row-level security: a gateway's role inserts and reads only its own rows; it has no UPDATE,
-- DELETE or TRUNCATE right at all, and as a non-owner it cannot ALTER or DROP. Dashboards read
-- everything. The owner (the migrator) is not subject to these policies.
REVOKE ALL ON events FROM PUBLIC;
ALTER TABLE events ENABLE ROW LEVEL SECURITY;
CREATE POLICY gateway_reads_own ON events FOR SELECT TO eldergate_gateway
    USING (gateway_id = (SELECT eldergate_gateway_of(current_user)));
CREATE POLICY gateway_inserts_own ON events FOR INSERT TO eldergate_gateway
    WITH CHECK (gateway_id = (SELECT eldergate_gateway_of(current_user)));
CREATE POLICY dashboard_reads_all ON events FOR SELECT TO eldergate_dashboard USING (true);
GRANT USAGE ON SCHEMA public TO eldergate_gateway, eldergate_dashboard;
GRANT SELECT, INSERT ON events TO eldergate_gateway;
-- A gateway checks the schema version before forwarding (it never migrates).
GRANT SELECT ON _sqlx_migrations TO eldergate_gateway, eldergate_dashboard;
GRANT SELECT ON events, gateways TO eldergate_dashboard;

-- District views. Owned by the migrator, so they read every gateway's rows: granted to the
-- dashboard role only, never to a gateway's.
--
-- Alarms (alerts of kind `sos`) per community and local month of raising: how many, how many
-- acknowledged (or closed by staff without an acknowledgement), and the time from raising to
-- that first staff action, p50 and p90, in seconds. An alert is (gateway_id, alert_id,
-- raised_at): alert ids restart with a new journal, raised_at tells them apart.
CREATE VIEW district_alarm_ack_times AS
WITH raised AS (
    SELECT gateway_id, site_id, alert_id, body->>'raised_at' AS raised_key,
           (body->>'raised_at')::timestamptz AS raised_at
    FROM events WHERE kind = 'alert_raised' AND body->>'kind' = 'sos'
), first_action AS (
    SELECT gateway_id, alert_id, body->>'raised_at' AS raised_key, min(received_at) AS at
    FROM events
    WHERE body->>'kind' = 'sos'
      AND (kind = 'alert_acknowledged'
           OR (kind = 'alert_resolved' AND body->'resolved'->>'via' IS DISTINCT FROM 'supervision'))
    GROUP BY 1, 2, 3
)
SELECT r.site_id AS community,
       eldergate_local_month(r.raised_at) AS month,
       count(*) AS alarms,
       count(a.at) AS acknowledged,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.at - r.raised_at)) AS ack_p50_s,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM a.at - r.raised_at)) AS ack_p90_s
FROM raised r LEFT JOIN first_action a USING (gateway_id, alert_id, raised_key)
GROUP BY 1, 2;

-- Alerts that were escalated to the last step of their ladder (the gateway writes the ladder's
-- length as `ladder_steps` in every alert event; events from gateways before that are not
-- counted). One row per alert, with when it got there and when (if ever) staff acted.
CREATE VIEW district_alarms_ladder_end AS
WITH ended AS (
    SELECT gateway_id, site_id, alert_id, body->>'raised_at' AS raised_key,
           min(body->>'kind') AS alert_kind, min(body->>'priority') AS priority,
           min(device_id) AS device_id, min(body->>'resident_id') AS resident_id,
           max((body->>'step')::int) AS step, min(received_at) AS reached_at
    FROM events
    WHERE kind = 'alert_escalated' AND body ? 'ladder_steps'
      AND (body->>'step')::int >= (body->>'ladder_steps')::int - 1
    GROUP BY 1, 2, 3, 4
)
SELECT e.site_id AS community,
       eldergate_local_month(e.raised_key::timestamptz) AS month,
       e.gateway_id, e.alert_id, e.alert_kind, e.priority, e.device_id, e.resident_id,
       e.raised_key::timestamptz AS raised_at, e.step, e.reached_at,
       (SELECT min(x.received_at) FROM events x
        WHERE x.gateway_id = e.gateway_id AND x.alert_id = e.alert_id
          AND x.body->>'raised_at' = e.raised_key
          AND x.kind IN ('alert_acknowledged', 'alert_resolved')) AS closed_at
FROM ended e;

-- Meals and subsidy per community and month of the meal's local date; a voided meal is not
-- counted in the sums (it is counted in voided_meals).
CREATE VIEW district_meals AS
WITH settled AS (
    SELECT gateway_id, site_id, body->>'meal_id' AS meal_id, body->>'resident_id' AS resident_id,
           received_at, (body->>'local_date')::date AS local_date,
           (body->>'price_fen')::bigint AS price_fen, (body->>'subsidy_fen')::bigint AS subsidy_fen,
           (body->>'payable_fen')::bigint AS payable_fen
    FROM events WHERE kind = 'meal_settled'
), marked AS (
    SELECT s.*, EXISTS (
        SELECT 1 FROM events v
        WHERE v.kind = 'meal_voided' AND v.gateway_id = s.gateway_id
          AND v.body->>'meal_id' = s.meal_id AND v.body->>'resident_id' = s.resident_id
          AND v.received_at >= s.received_at) AS voided
    FROM settled s
)
SELECT site_id AS community,
       date_trunc('month', local_date)::date AS month,
       count(*) FILTER (WHERE NOT voided) AS meals,
       COALESCE(sum(price_fen) FILTER (WHERE NOT voided), 0)::bigint AS price_fen,
       COALESCE(sum(subsidy_fen) FILTER (WHERE NOT voided), 0)::bigint AS subsidy_fen,
       COALESCE(sum(payable_fen) FILTER (WHERE NOT voided), 0)::bigint AS payable_fen,
       count(*) FILTER (WHERE voided) AS voided_meals
FROM marked
GROUP BY 1, 2;

-- Device availability per device and local month: the share of the month (up to now) the device
-- was not offline. Offline = from a `device_offline` alert's raising to its resolution (or now).
-- A device is listed for a month if it sent anything in it or was offline during it.
CREATE VIEW district_device_availability AS
WITH offline AS (
    SELECT r.gateway_id, r.site_id, r.device_id,
           (r.body->>'raised_at')::timestamptz AS from_ts,
           COALESCE((SELECT min(x.received_at) FROM events x
                     WHERE x.gateway_id = r.gateway_id AND x.alert_id = r.alert_id
                       AND x.body->>'raised_at' = r.body->>'raised_at'
                       AND x.kind IN ('alert_resolved', 'alert_cancelled')), now()) AS until_ts
    FROM events r
    WHERE r.kind = 'alert_raised' AND r.body->>'kind' = 'device_offline'
), months AS (
    SELECT gateway_id, site_id, device_id, eldergate_local_month(received_at) AS month
    FROM events WHERE device_id IS NOT NULL
    UNION
    SELECT o.gateway_id, o.site_id, o.device_id, m::date
    FROM offline o,
         generate_series(eldergate_local_month(o.from_ts), eldergate_local_month(o.until_ts),
                         interval '1 month') AS m
), bounds AS (
    SELECT gateway_id, site_id, device_id, month,
           month::timestamp AT TIME ZONE 'Asia/Shanghai' AS lo,
           LEAST((month + interval '1 month')::timestamp AT TIME ZONE 'Asia/Shanghai', now()) AS hi
    FROM months
)
SELECT b.site_id AS community, b.gateway_id, b.device_id, b.month,
       extract(epoch FROM b.hi - b.lo) AS period_s,
       COALESCE(sum(extract(epoch FROM LEAST(o.until_ts, b.hi) - GREATEST(o.from_ts, b.lo)))
                FILTER (WHERE o.from_ts < b.hi AND o.until_ts > b.lo), 0) AS offline_s,
       1 - COALESCE(sum(extract(epoch FROM LEAST(o.until_ts, b.hi) - GREATEST(o.from_ts, b.lo)))
                    FILTER (WHERE o.from_ts < b.hi AND o.until_ts > b.lo), 0)
           / NULLIF(extract(epoch FROM b.hi - b.lo), 0) AS availability
FROM bounds b
LEFT JOIN offline o USING (gateway_id, device_id)
GROUP BY b.site_id, b.gateway_id, b.device_id, b.month, b.lo, b.hi;

GRANT SELECT ON district_alarm_ack_times, district_alarms_ladder_end, district_meals,
    district_device_availability TO eldergate_dashboard;
