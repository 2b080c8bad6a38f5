-- Central store set-up, run once by a database administrator:
--   psql -v gw_password="'…'" -f deploy/postgres/central.sql
-- The gateway creates and migrates its tables itself (gateway/migrations/central_pg).
CREATE ROLE eldergate LOGIN PASSWORD :gw_password;
CREATE DATABASE eldergate OWNER eldergate;
-- Readers (reports, dashboards) get their own role.
CREATE ROLE eldergate_reader NOLOGIN;
\connect eldergate
ALTER DEFAULT PRIVILEGES FOR ROLE eldergate IN SCHEMA public GRANT SELECT ON TABLES TO eldergate_reader;
