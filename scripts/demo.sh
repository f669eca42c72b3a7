#!/usr/bin/env bash
# Runs the whole product on one machine: SERVER1 (the portal) at http://127.0.0.1:8001 and
# SERVER2 (the partner) at http://localhost:8002 — two different sites, as in a real deployment —
# and a second partner, "Partner Desk", at http://127.0.0.1:8003: SERVER2 again, checking tokens
# with a secret it shares with SERVER1 (HS256) and showing the user's name.
# First run: creates a signing key, the targets file and a demo user with a generated password,
# all under .demo/. Anyone may sign up; mail goes to files in .demo/mail/, and the link in each
# new message is printed here. Ctrl-C stops both servers.
set -euo pipefail
cd "$(dirname "$0")/.."

# DEMO_DIR: where the demo keeps its key, database and password (default .demo). DEMO_NO_BUILD=1
# skips the build (the tests run this script with binaries they built).
cargo="${CARGO:-cargo}"
[ -n "${DEMO_NO_BUILD:-}" ] || "$cargo" build --bins --locked
# The binaries are in cargo's target directory, which CARGO_TARGET_DIR or `build.target-dir` may
# have moved: ask cargo where it is (without python or jq: the path is a plain JSON string).
target_dir=$("$cargo" metadata --format-version 1 --no-deps 2>/dev/null |
  sed -n 's/.*"target_directory":"\([^"\\]*\)".*/\1/p') || target_dir=
bin="${target_dir:-${CARGO_TARGET_DIR:-target}}/debug"
data="${DEMO_DIR:-.demo}"
mkdir -p "$data"
chmod 700 "$data"
export SERVER1_DATABASE_URL="${SERVER1_DATABASE_URL:-sqlite://$data/server1.sqlite3}"
export SERVER1_KEYS_DIR="${SERVER1_KEYS_DIR:-$data/keys}"
export SERVER1_TARGETS_FILE="${SERVER1_TARGETS_FILE:-$data/targets.toml}"
# Sign-up is open in the demo (new accounts may view reports); mail is written to files.
export SERVER1_SIGNUP="${SERVER1_SIGNUP:-open}"
export SERVER1_SIGNUP_ROLES="${SERVER1_SIGNUP_ROLES:-reports}"
export SERVER1_MAIL_DIR="${SERVER1_MAIL_DIR:-$data/mail}"

# Cookies stay Secure with the __Host- prefix even over plain HTTP here: browsers treat
# http://localhost and http://127.0.0.1 as secure contexts.
export RUST_LOG="${RUST_LOG:-info,poem=warn}"

[ -f "$SERVER1_TARGETS_FILE" ] || cp server1/targets.example.toml "$SERVER1_TARGETS_FILE"
# The second partner ("desk") checks tokens with a secret it shares with SERVER1, and its back end
# calls SERVER1's partner API with a client secret: both files sit beside the targets file.
targets_dir=$(dirname "$SERVER1_TARGETS_FILE")
for secret in desk.secret desk-api.secret; do
  [ -f "$targets_dir/$secret" ] || "$bin/server1" secret new "$targets_dir/$secret"
done
export SERVER1_CLIENTS_FILE="${SERVER1_CLIENTS_FILE:-$data/clients.toml}"
[ -f "$SERVER1_CLIENTS_FILE" ] || cp server1/clients.example.toml "$SERVER1_CLIENTS_FILE"
[ -f "$SERVER1_KEYS_DIR/keys.json" ] || [ -f "$SERVER1_KEYS_DIR/signing.pk8" ] || "$bin/server1" keys generate

if [ ! -f "$data/demo-password" ]; then
  password=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
  printf '%s\n' "$password" | "$bin/server1" users add demo --password-stdin --role reports --role billing \
    --email demo@example.com --display-name "Demo User"
  (umask 077 && printf '%s\n' "$password" > "$data/demo-password")
fi
password=$(cat "$data/demo-password")

# Prints who each new message in the mail directory is for, its subject and its link: the demo's
# stand-in for a mailbox. The text part is quoted-printable, so soft line breaks are joined and
# `=3D` decoded before the link is picked out.
show_mail() {
  local dir="$1" seen
  mkdir -p "$dir"
  seen=$(ls "$dir")
  while sleep 0.5; do
    for file in "$dir"/*.eml; do
      [ -e "$file" ] || continue
      name=$(basename "$file")
      case $'\n'"$seen"$'\n' in *$'\n'"$name"$'\n'*) continue ;; esac
      seen="$seen"$'\n'"$name"
      to=$(sed -n 's/^To: //p' "$file" | head -n 1 | tr -d '\r')
      subject=$(awk '/^Subject: /{ s = substr($0, 10); getline n; while (n ~ /^[ \t]/) { s = s n; getline n } print s; exit }' "$file" | tr -d '\r')
      printf '\n  Mail to %s: %s\n' "$to" "$subject"
      awk '{ sub(/\r$/, ""); if (sub(/=$/, "")) { line = line $0 } else { print line $0; line = "" } }' "$file" |
        sed 's/=3D/=/g' | grep -o 'https\?://[^ "<>]*token=[A-Za-z0-9_-]*' | sort -u | sed 's/^/    /' || true
    done
  done
}

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

"$bin/server1" serve & pids+=($!)
"$bin/server2" & pids+=($!)
SERVER2_LISTEN=127.0.0.1:8003 SERVER2_METRICS_LISTEN=127.0.0.1:9003 \
  SERVER2_PUBLIC_URL=http://127.0.0.1:8003 SERVER2_ISSUER_TARGET_ID=desk \
  SERVER2_ISSUER_SECRET_FILE="$targets_dir/desk.secret" "$bin/server2" & pids+=($!)
if [ -z "${SERVER1_SMTP_URL:-}" ]; then
  show_mail "$SERVER1_MAIL_DIR" & pids+=($!)
fi

for _ in $(seq 1 100); do
  curl -fsS http://127.0.0.1:8002/readyz >/dev/null 2>&1 &&
    curl -fsS http://127.0.0.1:8003/readyz >/dev/null 2>&1 && break
  sleep 0.1
done

cat <<BANNER

  Handoff demo is running.

    SERVER1 (portal):   http://127.0.0.1:8001
    SERVER2 (partner):  http://localhost:8002
    Partner Desk:       http://127.0.0.1:8003   (a second SERVER2: HS256, shows your name)

    Sign in to SERVER1 as   demo
    with the password       $password

  Then click "View report 42". Or create an account ("Create an account" on the sign-in page):
  the links SERVER1 mails (verify your address, reset your password) are printed here.
  Ctrl-C stops both servers; \`make clean-demo\` starts afresh.

BANNER
wait -n "${pids[@]}"
