#!/usr/bin/env bash
# Self-test of the partner examples (Python and Node), without SERVER1.
#
#   bash examples/selftest.sh
#
# Makes an Ed25519 issuer key and a 32-byte shared secret, mints handoff tokens with PyJWT
# (good ones and one of each kind of bad), serves the JWKS and a stand-in for SERVER1's partner
# API on 127.0.0.1 (free ports), and checks that both languages' CLIs accept and refuse alike.
# Needs python3 with examples/python/requirements.txt installed, and Node 20+ (runs `npm ci`
# in examples/node when node_modules is missing). Stops its own servers and removes its files.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="$here/python"
nd="$here/node"
python3 -c 'import jwt, cryptography' 2>/dev/null || {
  echo "selftest: install the Python requirements first: pip install -r $py/requirements.txt" >&2
  exit 2
}
[ -d "$nd/node_modules/jose" ] || (cd "$nd" && npm ci --no-audit --no-fund >/dev/null)

tmp="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "selftest: nothing listens on 127.0.0.1:$1" >&2
  exit 1
}

issuer_port="$(free_port)"
api_port="$(free_port)"
export ISSUER="http://127.0.0.1:$issuer_port" AUDIENCE="http://localhost:8002" WORK="$tmp"
export SERVER1="http://127.0.0.1:$api_port" CLIENT_ID="partner"

# ---------------------------------------------------------------------------------------------
# Keys and tokens. Each token goes to $tmp/tok/<name>; the JWKS to the issuer's well-known path.
cat >"$tmp/mint.py" <<'EOF'
import base64, hashlib, json, os, secrets, time
import jwt
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

work, iss, aud = os.environ["WORK"], os.environ["ISSUER"], os.environ["AUDIENCE"]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()

def ed25519(name):
    key = Ed25519PrivateKey.generate()
    x = b64(key.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw))
    kid = b64(hashlib.sha256(json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x},
                                        separators=(",", ":")).encode()).digest())
    pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    write(f"{name}.pem", pem)
    write(f"{name}.kid", kid.encode())
    return key, {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}

def write(name, data):
    fd = os.open(os.path.join(work, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)

issuer_key, issuer_jwk = ed25519("issuer")
other_key, _ = ed25519("other")      # a key the JWKS does not publish
ed25519("partner")                    # the partner's own key for the API (call_api)
secret = secrets.token_bytes(32)
write("secret", secret)
write("wrong-secret", secrets.token_bytes(32))
os.makedirs(f"{work}/www/.well-known")
with open(f"{work}/www/.well-known/jwks.json", "w") as f:
    json.dump({"keys": [issuer_jwk]}, f)
public_raw = base64.urlsafe_b64decode(issuer_jwk["x"] + "=")

now = int(time.time())
def claims(**changes):
    c = {"iss": iss, "sub": "u_8Eap1pJNrQsrksk4fxUUxQ", "aud": aud, "iat": now, "nbf": now,
         "exp": now + 60, "jti": b64(secrets.token_bytes(16)),
         "authorization_details": [{"type": "report.view", "report_id": "42"}],
         "sid": "3q2-7wAAAAA"}
    c.update(changes)
    return {k: v for k, v in c.items() if v is not None}

def ed(c, key=issuer_key, **header):
    h = {"typ": "handoff+jwt", "kid": issuer_jwk["kid"], **header}
    return jwt.encode(c, key, algorithm="EdDSA", headers=h)

def hs(c, key=secret, **header):
    return jwt.encode(c, key, algorithm="HS256", headers={"typ": "handoff+jwt", **header})

def unsigned(c, sig=""):
    h = {"typ": "handoff+jwt", "alg": "none"}
    part = lambda o: b64(json.dumps(o, separators=(",", ":")).encode())
    return f"{part(h)}.{part(c)}.{sig}"

profile = dict(name="Alice Example", email="alice@example.com", email_verified=True,
               groups=["reports", "billing"])
good = ed(claims())
tokens = {
    "ed-good": good,
    "ed-good-again": ed(claims()),
    "ed-profile": ed(claims(**profile)),
    "ed-invoice": ed(claims(authorization_details=[{"type": "invoice.approve",
                                                    "invoice_id": "INV-2026-0042"}])),
    "ed-expired": ed(claims(iat=now - 300, nbf=now - 300, exp=now - 240)),
    "ed-not-yet": ed(claims(iat=now + 120, nbf=now + 120, exp=now + 180)),
    "ed-wrong-aud": ed(claims(aud="http://localhost:9999")),
    "ed-aud-array": ed(claims(aud=[aud])),
    "ed-wrong-iss": ed(claims(iss=iss + "/")),
    "ed-wrong-typ": ed(claims(), typ="JWT"),
    "ed-typ-media": ed(claims(), typ="application/handoff+jwt"),
    "ed-jku": ed(claims(), jku="http://127.0.0.1:1/keys"),
    "ed-no-kid": jwt.encode(claims(), issuer_key, algorithm="EdDSA", headers={"typ": "handoff+jwt"}),
    "ed-unknown-kid": ed(claims(), key=other_key, kid="A" * 43),
    "ed-other-key": ed(claims(), key=other_key),
    "ed-tampered": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
    "ed-too-long": ed(claims(exp=now + 600)),
    "ed-two-ops": ed(claims(authorization_details=[{"type": "report.view", "report_id": "42"},
                                                   {"type": "report.view", "report_id": "43"}])),
    "ed-no-ops": ed(claims(authorization_details=[])),
    "ed-bad-arg": ed(claims(authorization_details=[{"type": "report.view", "report_id": 42}])),
    "ed-unknown-claim": ed(claims(admin=True)),
    "ed-float-exp": ed(claims(exp=now + 60.5)),
    "ed-no-jti": ed(claims(jti=None)),
    "ed-bad-sub": ed(claims(sub="alice@example.com")),
    "hs-good": hs(claims()),
    "hs-good-profile": hs(claims(**profile)),
    "hs-with-kid": hs(claims(), kid="shared-secret"),
    "hs-expired": hs(claims(iat=now - 300, nbf=now - 300, exp=now - 240)),
    "hs-wrong-aud": hs(claims(aud="http://localhost:9999")),
    "hs-wrong-typ": hs(claims(), typ="JWT"),
    "hs-wrong-secret": hs(claims(), key=open(f"{work}/wrong-secret", "rb").read()),
    "hs-public-key": hs(claims(), key=public_raw, kid=issuer_jwk["kid"]),  # the classic alg swap
    "hs-two-ops": hs(claims(authorization_details=[{"type": "report.view", "report_id": "1"},
                                                   {"type": "report.view", "report_id": "2"}])),
    "none-empty": unsigned(claims()),
    "none-sig": unsigned(claims(), sig="c2ln"),
    "garbage": "not-a-token",
    "huge": "a" * 9000 + ".b.c",
}
os.makedirs(f"{work}/tok")
for name, token in tokens.items():
    with open(f"{work}/tok/{name}", "w") as f:
        f.write(token)
EOF
python3 "$tmp/mint.py"

# ---------------------------------------------------------------------------------------------
# A stand-in for SERVER1's partner API: GET /api/v1/users/{sub}, checked the way the spec says.
cat >"$tmp/fake_server1.py" <<'EOF'
import json, os, sys, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key

work, base, client_id = os.environ["WORK"], os.environ["SERVER1"], os.environ["CLIENT_ID"]
secret = open(f"{work}/secret", "rb").read()
partner_public = load_pem_private_key(open(f"{work}/partner.pem", "rb").read(), None).public_key()
partner_kid = open(f"{work}/partner.kid").read()
users = {"u_8Eap1pJNrQsrksk4fxUUxQ": {"sub": "u_8Eap1pJNrQsrksk4fxUUxQ", "name": "Alice Example"}}
seen = set()

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body, challenge=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if challenge:
            self.send_header("WWW-Authenticate", challenge)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def refuse(self, why):
        self.answer(401, {"error": "invalid_token"},
                    f'Bearer error="invalid_token", error_description="{why}"')

    def do_GET(self):
        prefix = "/api/v1/users/"
        if not self.path.startswith(prefix) or "/" in self.path[len(prefix):]:
            return self.answer(404, {"error": "not_found"})
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return self.answer(401, {"error": "invalid_request"}, "Bearer")
        token = auth[len("Bearer "):]
        try:
            header = jwt.get_unverified_header(token)
            if header.get("typ") != "partner-api+jwt":
                return self.refuse("wrong typ")
            if header.get("alg") == "HS256" and set(header) == {"alg", "typ"}:
                key = secret
            elif header.get("alg") == "EdDSA" and header.get("kid") == partner_kid:
                key = partner_public
            else:
                return self.refuse("wrong alg or kid")
            c = jwt.decode(token, key, algorithms=[header["alg"]], audience=base, issuer=client_id,
                           options={"require": ["iss", "sub", "aud", "iat", "exp", "jti", "htm", "htu"],
                                    "strict_aud": True})
        except jwt.PyJWTError as e:
            return self.refuse(type(e).__name__)
        if c["sub"] != client_id or c["exp"] - c["iat"] > 60 or len(c["jti"]) < 22:
            return self.refuse("bad claims")
        if c["htm"] != "GET" or c["htu"] != base + self.path:
            return self.refuse("htm/htu do not match the request")
        if c["jti"] in seen:
            return self.refuse("replayed")
        seen.add(c["jti"])
        user = users.get(urllib.parse.unquote(self.path[len(prefix):]))
        if user is None:
            return self.answer(404, {"error": "not_found"})
        self.answer(200, user)

ThreadingHTTPServer(("127.0.0.1", int(base.rsplit(":", 1)[1])), Handler).serve_forever()
EOF

python3 -m http.server --bind 127.0.0.1 --directory "$tmp/www" "$issuer_port" >/dev/null 2>&1 &
pids+=($!)
python3 "$tmp/fake_server1.py" >"$tmp/fake_server1.log" 2>&1 &
pids+=($!)
wait_port "$issuer_port"
wait_port "$api_port"

# ---------------------------------------------------------------------------------------------
passed=0
failed=0
# check NAME RC TEXT CMD...: CMD exits with RC and TEXT appears in its stdout (RC 0, with
# nothing on stderr) or its stderr. No output may contain the token ($token, when set).
check() {
  local name="$1" want_rc="$2" want_text="$3" rc=0
  shift 3
  "$@" >"$tmp/out" 2>"$tmp/err" </dev/null || rc=$?
  local where="$tmp/err"
  [ "$want_rc" = 0 ] && where="$tmp/out"
  local why=""
  [ "$rc" = "$want_rc" ] || why="exit $rc, wanted $want_rc"
  [ -n "$why" ] || grep -qF -- "$want_text" "$where" || why="no '$want_text' in output"
  if [ -z "$why" ] && [ "$want_rc" = 0 ] && [ -s "$tmp/err" ]; then why="stderr on success"; fi
  if [ -n "${token:-}" ] && [ ${#token} -gt 20 ] && grep -qF -- "$token" "$tmp/out" "$tmp/err"; then
    why="the token was printed"
  fi
  if [ -z "$why" ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAIL $name: $why"
    sed 's/^/     out: /' "$tmp/out" | head -5
    sed 's/^/     err: /' "$tmp/err" | head -5
  fi
}

jwks="$ISSUER/.well-known/jwks.json"
printf 'only-16-bytes!!!' >"$tmp/short-secret"
sub=u_8Eap1pJNrQsrksk4fxUUxQ
profile='"claims":{"name":"Alice Example","email":"alice@example.com","email_verified":true,'
profile+='"groups":["reports","billing"]}'

for lang in python node; do
  if [ "$lang" = python ]; then
    verify=(python3 "$py/verify_handoff.py") call=(python3 "$py/call_api.py")
  else
    verify=(node "$nd/verify_handoff.mjs") call=(node "$nd/call_api.mjs")
  fi
  base=("${verify[@]}" --issuer "$ISSUER" --audience "$AUDIENCE")
  ed=("${base[@]}" --jwks-url "$jwks")                 # EdDSA, keys from the issuer's JWKS
  hs=("${base[@]}" --secret-file "$tmp/secret")        # HS256, the shared secret
  seen="$tmp/seen-$lang"

  # v ed|hs TOKEN_NAME RC TEXT [OPTION...]: verify a minted token with that configuration.
  v() {
    local -n config="$1"
    local label="$lang $1 $2${5:+ $5}" name="$2" rc="$3" text="$4"
    shift 4
    token="$(cat "$tmp/tok/$name")"
    check "$label" "$rc" "$text" "${config[@]}" "$@" "$token"
  }
  v ed ed-good          0 '"operation":{"type":"report.view","report_id":"42"}'
  v ed ed-good          0 "\"sub\":\"$sub\""
  v ed ed-good          0 '"claims":{}'
  v ed ed-profile       0 "$profile"
  v ed ed-invoice       0 '"invoice_id":"INV-2026-0042"' --operation invoice.approve
  v ed ed-good          1 'refused: wrong operation' --operation invoice.approve
  v ed ed-expired       1 'refused: expired'
  v ed ed-not-yet       1 'refused: not yet valid'
  v ed ed-wrong-aud     1 'refused: wrong audience'
  v ed ed-aud-array     1 'refused: wrong audience'
  v ed ed-wrong-iss     1 'refused: wrong issuer'
  v ed ed-wrong-typ     1 'refused: wrong type'
  v ed ed-typ-media     1 'refused: wrong type'
  v ed ed-jku           1 'refused: bad header'
  v ed ed-no-kid        1 'refused: missing kid'
  v ed ed-unknown-kid   1 'refused: unknown kid'
  v ed ed-other-key     1 'refused: bad signature'
  v ed ed-tampered      1 'refused: bad signature'
  v ed ed-too-long      1 'refused: lifetime too long'
  v ed ed-two-ops       1 'refused: malformed claims'
  v ed ed-no-ops        1 'refused: malformed claims'
  v ed ed-bad-arg       1 'refused: bad operation argument'
  v ed ed-unknown-claim 1 'refused: malformed claims'
  v ed ed-float-exp     1 'refused: malformed claims'
  v ed ed-no-jti        1 'refused: malformed claims'
  v ed ed-bad-sub       1 'refused: malformed claims'
  v ed hs-good          1 'refused: wrong algorithm'    # alg swap: HS256 to the JWKS verifier
  v ed hs-public-key    1 'refused: wrong algorithm'    # ... even keyed with the public key
  v ed none-sig         1 'refused: wrong algorithm'
  v ed none-empty       1 'refused: malformed'
  v ed garbage          1 'refused: malformed'
  v ed huge             1 'refused: token too large'

  # Single use: the second presentation of a jti is refused; a refused token is not recorded.
  v ed ed-good          0 '"jti"' --seen-file "$seen"
  v ed ed-good          1 'refused: replayed' --seen-file "$seen"
  v ed ed-good-again    0 '"jti"' --seen-file "$seen"
  v ed ed-expired       1 'refused: expired' --seen-file "$seen"
  token=""
  check "$lang seen file holds 2 jtis" 0 '2' bash -c 'wc -l <"$1"' _ "$seen"

  v hs hs-good          0 '"operation":{"type":"report.view","report_id":"42"}'
  v hs hs-good-profile  0 "$profile"
  v hs hs-with-kid      0 '"report_id":"42"'            # a kid in an HS256 header is not used
  v hs hs-expired       1 'refused: expired'
  v hs hs-wrong-aud     1 'refused: wrong audience'
  v hs hs-wrong-typ     1 'refused: wrong type'
  v hs hs-wrong-secret  1 'refused: bad signature'
  v hs hs-two-ops       1 'refused: malformed claims'
  v hs ed-good          1 'refused: wrong algorithm'    # alg swap: EdDSA to the secret verifier
  v hs none-sig         1 'refused: wrong algorithm'

  token="$(cat "$tmp/tok/ed-good")"
  check "$lang token on stdin" 0 "\"sub\":\"$sub\"" \
    bash -c 'printf "  %s\n" "$0" | "$@"' "$token" "${ed[@]}" -
  check "$lang keys unavailable" 1 'refused: keys unavailable' \
    "${base[@]}" --jwks-url "$SERVER1/.well-known/jwks.json" "$token"
  token=""
  check "$lang usage: no key" 2 '' "${base[@]}" x.y.z
  check "$lang usage: two keys" 2 '' "${hs[@]}" --jwks-url "$jwks" x.y.z
  check "$lang usage: short secret" 2 '32 bytes' "${base[@]}" --secret-file "$tmp/short-secret" x.y.z

  # call_api against the stand-in SERVER1.
  api=("${call[@]}" --server1 "$SERVER1" --client-id "$CLIENT_ID")
  secret=(--secret-file "$tmp/secret")
  ed_key=(--private-key-file "$tmp/partner.pem" --kid "$(cat "$tmp/partner.kid")")
  refused='HTTP 401: Bearer error="invalid_token"'
  check "$lang api HS256" 0 '"name":"Alice Example"' "${api[@]}" "${secret[@]}" --sub "$sub"
  check "$lang api EdDSA" 0 '"name":"Alice Example"' "${api[@]}" "${ed_key[@]}" --sub "$sub"
  check "$lang api wrong secret" 1 "$refused" \
    "${api[@]}" --secret-file "$tmp/wrong-secret" --sub "$sub"
  check "$lang api wrong kid" 1 "$refused" \
    "${api[@]}" --private-key-file "$tmp/partner.pem" --kid "$(cat "$tmp/issuer.kid")" --sub "$sub"
  check "$lang api unknown user" 1 'HTTP 404: {"error": "not_found"}' \
    "${api[@]}" "${secret[@]}" --sub u_nobody
  # htu must match the percent-encoded path byte for byte, or the stand-in answers 401.
  check "$lang api encoded sub" 1 'HTTP 404' "${api[@]}" "${secret[@]}" --sub 'a/b c:d?e#f'
  check "$lang api trailing slash" 2 'slash' \
    "${call[@]}" --server1 "$SERVER1/" --client-id "$CLIENT_ID" "${secret[@]}" --sub u_x
  check "$lang api not http" 2 'http' \
    "${call[@]}" --server1 "ftp://127.0.0.1:$api_port" --client-id "$CLIENT_ID" "${secret[@]}" \
    --sub u_x
  check "$lang api key without kid" 2 '' \
    "${api[@]}" --private-key-file "$tmp/partner.pem" --sub u_x
  check "$lang api no server" 1 'request failed' \
    "${call[@]}" --server1 "http://127.0.0.1:1" --client-id "$CLIENT_ID" "${secret[@]}" --sub u_x
done

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
