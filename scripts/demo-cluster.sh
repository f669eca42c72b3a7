#!/usr/bin/env bash
# Runs the product as a real deployment would, on one machine: Redis (SERVER2's shared replay
# store), PostgreSQL (SERVER1's database), two SERVER1 and two SERVER2 replicas, and HAProxy in
# front of each pair — at the same two URLs as `make demo` (http://127.0.0.1:8001 and
# http://localhost:8002), so the README's walkthrough is the same. Installs what is missing with
# apt. PostgreSQL runs as the unprivileged `postgres` user (when this runs as root) from a data
# directory under .demo/. Ctrl-C stops every process it started.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
missing=()
need redis-server || missing+=(redis-server)
need haproxy || missing+=(haproxy)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
need curl || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} with apt" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q && apt-get install -y -q "${missing[@]}"
fi
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

# DEMO_NO_BUILD=1 skips the build (the tests run this script with binaries they built).
[ -n "${DEMO_NO_BUILD:-}" ] || cargo build --bins --locked
bin=$(cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="${bin:-${CARGO_TARGET_DIR:-target}}/debug"

data="$(realpath -m "${DEMO_DIR:-.demo}")/cluster"
mkdir -p "$data"
chmod 755 "$data"

# Ports: the two public ones of `make demo`, the rest behind HAProxy.
export PORTAL_PORT=8001 PARTNER_PORT=8002
export SERVER1A_PORT=8011 SERVER1B_PORT=8012 SERVER2A_PORT=8021 SERVER2B_PORT=8022
redis_port=8031 pg_port=8032

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -z "${pg_started:-}" ] || as_postgres "$pg_bin/pg_ctl" -D "$data/pg" stop -m fast >/dev/null 2>&1 || true
}
trap stop INT TERM EXIT

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# PostgreSQL: a cluster of its own under .demo/, trusting local connections only.
if [ ! -f "$data/pg/PG_VERSION" ]; then
  mkdir -p "$data/pg"
  [ "$(id -u)" != 0 ] || chown postgres:postgres "$data/pg"
  chmod 700 "$data/pg"
  as_postgres "$pg_bin/initdb" -D "$data/pg" -U postgres --auth=trust >"$data/initdb.log" 2>&1
fi
as_postgres "$pg_bin/pg_ctl" -D "$data/pg" -l "$data/pg/server.log" -w \
  -o "-p $pg_port -k $data/pg -c listen_addresses=127.0.0.1" start >/dev/null
pg_started=1

redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$data" --save 60 1 --appendonly yes \
  >"$data/redis.log" 2>&1 & pids+=($!)

export SERVER1_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
export SERVER1_KEYS_DIR="$data/keys"
export SERVER1_TARGETS_FILE="$data/targets.toml"
export SERVER1_PUBLIC_URL="http://127.0.0.1:$PORTAL_PORT"
export SERVER1_TRUSTED_PROXIES=127.0.0.1
export SERVER2_PUBLIC_URL="http://localhost:$PARTNER_PORT"
export SERVER2_ISSUER="$SERVER1_PUBLIC_URL"
export SERVER2_JWKS_URL="http://127.0.0.1:$PORTAL_PORT/.well-known/jwks.json"
export SERVER2_REPLAY_STORE="redis://127.0.0.1:$redis_port/0"
export SERVER2_COOKIE_KEY_FILE="$data/cookie.key"
export SERVER2_TRUSTED_PROXIES=127.0.0.1
export RUST_LOG="${RUST_LOG:-info,poem=warn}"

[ -f "$SERVER1_TARGETS_FILE" ] || cp server1/targets.example.toml "$SERVER1_TARGETS_FILE"
# The example's second partner ("desk", HS256) names secret files beside the targets file; the
# cluster demo does not run that partner, but SERVER1 reads its secrets.
for secret in desk.secret desk-api.secret; do
  [ -f "$data/$secret" ] || "$bin/server1" secret new "$data/$secret"
done
export SERVER1_CLIENTS_FILE="$data/clients.toml"
[ -f "$SERVER1_CLIENTS_FILE" ] || cp server1/clients.example.toml "$SERVER1_CLIENTS_FILE"
[ -f "$SERVER1_KEYS_DIR/keys.json" ] || "$bin/server1" keys generate
[ -f "$SERVER2_COOKIE_KEY_FILE" ] || (umask 077 && head -c 32 /dev/urandom >"$SERVER2_COOKIE_KEY_FILE")
if [ ! -f "$data/demo-password" ]; then
  password=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
  printf '%s\n' "$password" | "$bin/server1" users add demo --password-stdin --role reports --role billing
  (umask 077 && printf '%s\n' "$password" >"$data/demo-password")
fi
password=$(cat "$data/demo-password")

# SERVER1 and HAProxy first: SERVER2 fetches the issuer's keys through the portal's URL.
SERVER1_LISTEN="127.0.0.1:$SERVER1A_PORT" SERVER1_METRICS_LISTEN=127.0.0.1:0 "$bin/server1" serve & pids+=($!)
SERVER1_LISTEN="127.0.0.1:$SERVER1B_PORT" SERVER1_METRICS_LISTEN=127.0.0.1:0 "$bin/server1" serve & pids+=($!)
haproxy -db -f deploy/haproxy.cfg & pids+=($!)
SERVER2_LISTEN="127.0.0.1:$SERVER2A_PORT" SERVER2_METRICS_LISTEN=127.0.0.1:0 "$bin/server2" & pids+=($!)
SERVER2_LISTEN="127.0.0.1:$SERVER2B_PORT" SERVER2_METRICS_LISTEN=127.0.0.1:0 "$bin/server2" & pids+=($!)

# Ready when every replica says so and HAProxy passes both URLs through (it checks each
# replica's /readyz every second and sends requests only to those that answer).
ready() {
  for port in "$SERVER1A_PORT" "$SERVER1B_PORT" "$SERVER2A_PORT" "$SERVER2B_PORT" \
    "$PORTAL_PORT" "$PARTNER_PORT"; do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 || return 1
  done
}
for _ in $(seq 1 150); do
  ready && break
  sleep 0.2
done
ready || { echo "the cluster did not become ready; see the logs above" >&2; exit 1; }

cat <<BANNER

  Handoff demo cluster is running: HAProxy in front of two replicas of each server,
  PostgreSQL (SERVER1's database) and Redis (SERVER2's replay store).

    SERVER1 (portal):   http://127.0.0.1:$PORTAL_PORT     (replicas on :$SERVER1A_PORT and :$SERVER1B_PORT)
    SERVER2 (partner):  http://localhost:$PARTNER_PORT    (replicas on :$SERVER2A_PORT and :$SERVER2B_PORT)

    Sign in to SERVER1 as   demo
    with the password       $password

  Then click "View report 42". Ctrl-C stops everything; \`make clean-demo\` starts afresh.

BANNER
wait -n "${pids[@]}"
