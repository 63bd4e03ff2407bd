#!/bin/sh
# A throw-away PostgreSQL cluster for the specs (tests/support/pg.lua).
#
#   pg_server.sh start [OWNER_PID]   prints the directory of a new running
#                                    cluster; its socket is in that directory
#   pg_server.sh stop DIR            stops it and removes DIR
#
# The cluster listens on a Unix socket only (no TCP port to collide on),
# trusts its superuser `postgres` on that socket and asks the role
# `luagent_pw` (password `right`) for a password, so a spec can log in
# with wrong credentials. Run as root, the server runs as the unprivileged
# `postgres` system user (PostgreSQL refuses to run as root). With
# OWNER_PID, a watcher stops the cluster when that process is gone, so a
# run that dies early leaves no server behind. When no PostgreSQL is
# installed and we are root on Debian, it is installed first. The specs'
# cluster skips fsync (it is thrown away); LUAGENT_PG_DURABLE=1 keeps the
# server's durable defaults (make bench measures those).
set -eu
# a sanitizer run preloads its runtime into every process: not the server's
unset LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS TSAN_OPTIONS

pg_bin() {
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  done
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
    return 0
  fi
  return 1
}

as_server() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  owner=${1:-}
  if ! bin=$(pg_bin); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "installing postgresql" >&2
      apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >/dev/null
      bin=$(pg_bin)
    else
      echo "no PostgreSQL found: run sudo apt-get install -y postgresql" >&2
      exit 1
    fi
  fi
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin postgres
  fi
  dir=$(mktemp -d /tmp/luagent-pg.XXXXXX)
  if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
  as_server "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; rm -rf "$dir"; exit 1; }
  # the password role first: pg_hba.conf is read top down
  as_server sh -c "printf 'local all luagent_pw scram-sha-256\nlocal all all trust\n' >'$dir/data/pg_hba.conf'"
  fast="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  if [ "${LUAGENT_PG_DURABLE:-}" = 1 ]; then fast=""; fi
  as_server "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -s \
    -o "-k $dir -c listen_addresses= -c max_connections=200 $fast" \
    start >/dev/null ||
    { cat "$dir/server.log" >&2; rm -rf "$dir"; exit 1; }
  psql -q -X -h "$dir" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -c "CREATE ROLE luagent_pw LOGIN PASSWORD 'right' CREATEDB" >/dev/null
  if [ -n "$owner" ]; then
    # stop the cluster once its owner is gone (1 s polls; not a spec's wait)
    (
      trap '' HUP INT
      while kill -0 "$owner" 2>/dev/null && [ -d "$dir/data" ]; do sleep 1; done
      "$0" stop "$dir" >/dev/null 2>&1 || true
    ) </dev/null >/dev/null 2>&1 &
  fi
  echo "$dir"
}

stop() {
  dir=$1
  case "$dir" in /tmp/luagent-pg.*) ;; *) echo "not a cluster of ours: $dir" >&2; exit 1 ;; esac
  if [ -d "$dir/data" ]; then
    bin=$(pg_bin) || true
    as_server "$bin/pg_ctl" -D "$dir/data" -m immediate -w -s stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop "$2" ;;
  *) echo "usage: $0 start [OWNER_PID] | stop DIR" >&2; exit 2 ;;
esac
