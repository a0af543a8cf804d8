#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL server (Debian's packages) and
# PALISADE_TEST_POSTGRES_URL pointing at it, so the storage tests run against
# PostgreSQL as well as SQLite. Without PostgreSQL installed the command runs
# with SQLite only, unless PALISADE_REQUIRE_POSTGRES=1.
set -euo pipefail

# shellcheck disable=SC2012 # Debian's fixed layout; sort -V puts 9 before 10
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [[ -z "$pg_bin" || ! -x "$pg_bin/initdb" ]]; then
  if [[ "${PALISADE_REQUIRE_POSTGRES:-0}" == 1 ]]; then
    echo "PostgreSQL is required (apt-get install postgresql)" >&2
    exit 1
  fi
  echo "note: PostgreSQL not installed; storage tests run on SQLite only" >&2
  exec "$@"
fi

port="${PALISADE_TEST_POSTGRES_PORT:-25432}"
dir=$(mktemp -d /tmp/palisade-pg.XXXXXX)
run_as=()
if [[ $(id -u) -eq 0 ]]; then
  # initdb refuses to run as root.
  chown postgres "$dir"
  run_as=(runuser -u postgres --)
fi
cleanup() {
  "${run_as[@]}" "$pg_bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

"${run_as[@]}" "$pg_bin/initdb" -D "$dir/data" -A trust -U palisade >/dev/null
"${run_as[@]}" "$pg_bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
export PALISADE_TEST_POSTGRES_URL="postgres://palisade@127.0.0.1:$port/postgres"
echo "PostgreSQL for tests: $PALISADE_TEST_POSTGRES_URL" >&2
"$@"
