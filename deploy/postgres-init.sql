-- Roles and database for the containerised PostgreSQL (compose). Mirrors deploy/local/postgres.sh:
-- ledger_owner owns the database and runs the migrations; ledger_app owns nothing, gets
-- INSERT/SELECT from the migrations, and needs BYPASSRLS (superuser-only, so it is set here).
CREATE ROLE ledger_owner LOGIN PASSWORD 'ledger' CREATEDB CREATEROLE;
CREATE ROLE ledger_app LOGIN PASSWORD 'ledger' NOCREATEDB NOCREATEROLE BYPASSRLS;
GRANT ledger_app TO ledger_owner WITH ADMIN OPTION;
CREATE DATABASE ledger OWNER ledger_owner ENCODING 'UTF8' TEMPLATE template0;
