#!/usr/bin/env bash
# PostgreSQL for tests/postgres.rs and the store benchmark: a server on 127.0.0.1:5432 that
# lets `postgres` in without a password (trust) and has a database `test`. Installs it (as
# root on Debian) if it is missing, starts the machine's cluster if it is not running, and
# waits until it takes connections. Safe to run again. .ci/run and scripts/test.sh call it.
set -euo pipefail
ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
root() { [ "$(id -u)" = 0 ]; }

if ! command -v pg_ctlcluster >/dev/null; then
  if root && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "PostgreSQL is needed on 127.0.0.1:5432 (trust auth, database test): apt-get install postgresql" >&2
    exit 2
  fi
fi
if ! ready; then
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  [ -n "$version" ] || { echo "no PostgreSQL cluster under /etc/postgresql" >&2; exit 2; }
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
fi
for _ in $(seq 60); do ready && break; sleep 0.5; done
ready || { echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 2; }

psql_postgres() { psql -X -q -w -h 127.0.0.1 -U postgres -d postgres "$@"; }
if ! psql_postgres -tAc 'SELECT 1' >/dev/null 2>&1; then
  # A cluster as Debian installs it asks for a password over TCP: the tests' connections
  # from this machine are trusted (only loopback, only here).
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  if root && [ -w "$hba" ]; then
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    sleep 1
  fi
  psql_postgres -tAc 'SELECT 1' >/dev/null || { echo "PostgreSQL on 127.0.0.1:5432 refuses user postgres without a password" >&2; exit 2; }
fi
if [ "$(psql_postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'")" != 1 ]; then
  psql_postgres -c 'CREATE DATABASE test'
fi
