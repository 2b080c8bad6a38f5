-- The district's central store, set up once by a database administrator (docs/adr/0014):
--   psql -v mig_password="'…'" -f deploy/postgres/central.sql
-- Then, as the migrator (the URL from the environment, never on the command line):
--   export ELDERGATE_CENTRAL_MIGRATOR_URL=postgres://eldergate_migrator:…@db/eldergate
--   eldergate central migrate                      # at every upgrade, and monthly (partitions)
--   eldergate central add-gateway --gateway-id gw-sq01 --site-id sq01 \
--       --password-file /root/gw-sq01.pw           # one role per gateway; password file 0600
-- and give each gateway `central.url = "postgres://eldergate_gw_gw-sq01@db/eldergate"` with
-- `central.password_file` (or ELDERGATE__CENTRAL__PASSWORD). Gateways never run DDL.

-- Owns the schema, runs migrations, creates one login role per gateway.
CREATE ROLE eldergate_migrator LOGIN CREATEROLE PASSWORD :mig_password;
CREATE DATABASE eldergate OWNER eldergate_migrator;
-- Group roles (the migration creates them too if missing).
CREATE ROLE eldergate_gateway NOLOGIN;
CREATE ROLE eldergate_dashboard NOLOGIN;
-- A dashboard login (read-only, every community): one line per person or tool.
--   CREATE ROLE dashboard_jiedao LOGIN PASSWORD '…' IN ROLE eldergate_dashboard;
