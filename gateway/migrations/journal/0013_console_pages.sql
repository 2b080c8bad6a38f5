-- The console's pages (issue 13): one alert's audit trail reads every event that names the alert
-- (`/console/alerts/{id}`); without this index that is a scan of the whole events table.
CREATE INDEX events_alert ON events(alert_id) WHERE alert_id IS NOT NULL;
