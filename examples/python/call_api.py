#!/usr/bin/env python3
"""Call SERVER1's partner API: look up a user this partner was handed.

    call_api.py --server1 URL --client-id ID
                (--secret-file PATH | --private-key-file PKCS8_PEM --kid KID) --sub SUB

Each request carries a fresh, short-lived JWT signed by the partner (a "client-secret JWT"):
HS256 with the shared secret, or EdDSA with the partner's Ed25519 private key. Exit 0 prints
the user as JSON; exit 1 prints `HTTP <status>: ...` on stderr; exit 2 is a usage error.

Needs PyJWT and cryptography (requirements.txt). See docs/partners.md.
"""

import argparse
import base64
import json
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

TYP = "partner-api+jwt"
LIFETIME = 60  # seconds; a token is minted per request, so it never needs to live long


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # never carry the Authorization header to wherever a redirect points


NO_REDIRECTS = urllib.request.build_opener(_NoRedirect)


def mint(args, method: str, url: str) -> str:
    """A JWT for one request: who we are (iss = sub = client id), to whom (aud = SERVER1's URL
    exactly as configured), and for which request (htm, htu as in RFC 9449)."""
    now = int(time.time())
    claims = {
        "iss": args.client_id,
        "sub": args.client_id,
        "aud": args.server1,
        "iat": now,
        "exp": now + LIFETIME,
        "jti": base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode(),
        "htm": method,
        "htu": url,  # the request URL without query or fragment
    }
    if args.secret_file:
        return jwt.encode(claims, args.key, algorithm="HS256", headers={"typ": TYP})
    return jwt.encode(claims, args.key, algorithm="EdDSA", headers={"typ": TYP, "kid": args.kid})


def load_key(parser, args):
    """The signing key: the secret file's raw bytes, or an Ed25519 private key (PKCS#8 PEM)."""
    path = args.secret_file or args.private_key_file
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        parser.error(f"cannot read {path}: {e.strerror}")
    if args.secret_file:
        if len(data) < 32:
            parser.error("the secret file must hold at least 32 bytes")
        return data  # used as it is: no strip, no decoding
    try:
        key = load_pem_private_key(data, password=None)
    except ValueError:
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        parser.error("--private-key-file must be an unencrypted Ed25519 key in PKCS#8 PEM")
    return key


def main() -> int:
    parser = argparse.ArgumentParser(description="GET /api/v1/users/{sub} on SERVER1.")
    parser.add_argument("--server1", required=True, help="SERVER1's URL, no trailing slash")
    parser.add_argument("--client-id", required=True, help="this partner's id at SERVER1")
    keys = parser.add_mutually_exclusive_group(required=True)
    keys.add_argument("--secret-file", help="shared HMAC secret (raw bytes): HS256")
    keys.add_argument("--private-key-file", help="Ed25519 private key, PKCS#8 PEM: EdDSA")
    parser.add_argument("--kid", help="the key id SERVER1 knows the private key's public half by")
    parser.add_argument("--sub", required=True, help="the user, as `sub` in a handoff token")
    args = parser.parse_args()

    server1 = urllib.parse.urlsplit(args.server1)
    if server1.scheme not in ("http", "https") or not server1.netloc:
        parser.error("--server1 must be an http(s) URL")
    if server1.query or server1.fragment or "?" in args.server1 or "#" in args.server1:
        parser.error("--server1 must have no query or fragment")
    if args.server1.endswith("/"):
        parser.error("--server1 must not end with a slash (it is compared exactly, as `aud`)")
    if bool(args.private_key_file) != bool(args.kid):
        parser.error("--kid goes with --private-key-file (and only with it)")
    args.key = load_key(parser, args)

    # The user id is one path segment: encode everything that is not unreserved (a `/` or `?`
    # in it must not change the path). htu is this same URL, byte for byte.
    url = f"{args.server1}/api/v1/users/{urllib.parse.quote(args.sub, safe='')}"
    request = urllib.request.Request(url, method="GET")
    request.add_header("Authorization", f"Bearer {mint(args, 'GET', url)}")
    request.add_header("Accept", "application/json")
    try:
        with NO_REDIRECTS.open(request, timeout=10) as resp:
            status, headers, raw = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:  # 3xx (not followed), 4xx, 5xx
        status, headers, raw = e.code, e.headers, e.read()
    except OSError as e:  # refused connection, DNS, timeout, TLS
        print(f"request failed: {getattr(e, 'reason', e)}", file=sys.stderr)
        return 1
    text = raw.decode("utf-8", "replace").strip()
    if status != 200:
        # RFC 6750: a refused token comes with `WWW-Authenticate: Bearer error="invalid_token"`.
        challenge = headers.get("WWW-Authenticate", "")
        detail = " ".join(part for part in (challenge, text) if part)
        print(f"HTTP {status}: {detail}".replace("\n", " "), file=sys.stderr)
        return 1
    try:
        body = json.loads(text)
    except ValueError:
        print("HTTP 200: the body is not JSON", file=sys.stderr)
        return 1
    print(json.dumps(body, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
