#!/bin/sh
# Initialise the cluster on first start (superuser password from POSTGRES_PASSWORD, one role and
# database per "db:user:password" word of MLOPS_DATABASES), then run postgres in the foreground.
set -eu
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA"
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb -D "$PGDATA" -U postgres --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  for spec in ${MLOPS_DATABASES:-}; do
    db=${spec%%:*}; rest=${spec#*:}; user=${rest%%:*}; password=${rest#*:}
    psql -v ON_ERROR_STOP=1 -q -U postgres -d postgres \
      -c "CREATE ROLE \"$user\" LOGIN PASSWORD '$password'" \
      -c "CREATE DATABASE \"$db\" OWNER \"$user\""
    echo "created database $db owned by $user"
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec postgres -D "$PGDATA"
