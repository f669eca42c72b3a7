#!/usr/bin/env python3
"""Verify a handoff token from SERVER1, the way a partner's handoff endpoint would.

    verify_handoff.py --issuer URL --audience URL (--secret-file PATH | --jwks-url URL)
                      [--operation TYPE] [--seen-file PATH] TOKEN

TOKEN may be `-` to read it from standard input. Exit 0 prints the accepted handoff as JSON;
exit 1 prints `refused: <reason>` on stderr; exit 2 is a usage or configuration error.
The token itself is never printed.

Needs PyJWT and cryptography (requirements.txt). See docs/partners.md.
"""

import argparse
import base64
import hashlib
import json
import re
import sys
import urllib.request

import jwt

TYP = "handoff+jwt"
MAX_TOKEN_LEN = 8192  # bytes; real tokens are a few hundred
LEEWAY = 5  # seconds of clock difference tolerated on exp, nbf and iat
MAX_LIFETIME = 120  # seconds: exp - iat may not be more
REQUIRED = ["iss", "sub", "aud", "iat", "nbf", "exp", "jti", "authorization_details"]
OPTIONAL = ["sid", "nonce", "name", "email", "email_verified", "groups"]
PROFILE = ["name", "email", "email_verified", "groups"]  # echoed under "claims" when present

SEGMENTS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
SUBJECT = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
JTI = re.compile(r"[A-Za-z0-9_-]{22,64}")  # SERVER1 writes 22 (128 random bits)
OPERATION_TYPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")  # e.g. report.view
ARG_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


class Refused(Exception):
    """The token is not accepted; the message is the short reason."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(jwk: dict) -> str:
    """RFC 7638 thumbprint of an Ed25519 JWK: SHA-256 of its required members, sorted, compact."""
    members = {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk.get("x")}
    return b64url(hashlib.sha256(json.dumps(members, separators=(",", ":")).encode()).digest())


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a JWKS is fetched from the configured URL only, never from where it points


NO_REDIRECTS = urllib.request.build_opener(_NoRedirect)


def jwks_key(jwks_url: str, kid: str):
    """The issuer's Ed25519 key with this kid. A CLI fetches once per run; a server caches the
    set and fetches again (rate-limited) only when it meets an unknown kid."""
    try:
        with NO_REDIRECTS.open(jwks_url, timeout=5) as resp:
            keys = json.loads(resp.read(64 * 1024))["keys"]
        if not isinstance(keys, list):
            raise ValueError("keys is not a list")
    except Exception:  # unreachable, a redirect, not JSON, no "keys": nothing can be checked
        raise Refused("keys unavailable") from None
    for jwk in keys:
        # Only Ed25519 signing keys whose kid really is their thumbprint; ignore everything else.
        if not isinstance(jwk, dict) or (jwk.get("kty"), jwk.get("crv")) != ("OKP", "Ed25519"):
            continue
        if jwk.get("kid") != kid or jwk.get("use", "sig") != "sig":
            continue
        if jwk.get("alg", "EdDSA") != "EdDSA":
            continue
        if thumbprint(jwk) == kid:
            try:
                return jwt.PyJWK(jwk, algorithm="EdDSA").key
            except jwt.PyJWTError:  # an `x` that is not an Ed25519 public key
                raise Refused("keys unavailable") from None
    raise Refused("unknown kid")


def check_header(token: str, alg: str) -> dict:
    """Cheap checks before any cryptography: size, shape, and a header we accept exactly."""
    if len(token) > MAX_TOKEN_LEN:
        raise Refused("token too large")
    if not SEGMENTS.fullmatch(token):
        raise Refused("malformed")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise Refused("malformed") from None
    if not set(header) <= {"typ", "alg", "kid"}:  # never jku, x5u, jwk, crit...
        raise Refused("bad header")
    if header.get("typ") != TYP:  # exact: not "JWT", not "application/handoff+jwt"
        raise Refused("wrong type")
    if header.get("alg") != alg:  # pinned by our configuration, never chosen by the token
        raise Refused("wrong algorithm")
    if alg == "EdDSA" and not isinstance(header.get("kid"), str):
        raise Refused("missing kid")
    return header


def check_signature_and_claims(token: str, key, alg: str, args) -> dict:
    """PyJWT checks the signature, then iss, aud (a single string: strict_aud) and the times."""
    try:
        return jwt.decode(
            token,
            key,
            algorithms=[alg],
            issuer=args.issuer,
            audience=args.audience,
            leeway=LEEWAY,
            options={"require": REQUIRED, "strict_aud": True},
        )
    except jwt.InvalidSignatureError:
        raise Refused("bad signature") from None
    except jwt.ExpiredSignatureError:
        raise Refused("expired") from None
    except jwt.ImmatureSignatureError:  # nbf or iat ahead of our clock
        raise Refused("not yet valid") from None
    except jwt.InvalidIssuerError:
        raise Refused("wrong issuer") from None
    except jwt.InvalidAudienceError:
        raise Refused("wrong audience") from None
    except jwt.PyJWTError:  # a missing claim, a claim of the wrong type, undecodable JSON
        raise Refused("malformed claims") from None


def check_profile(claims: dict, operation: str | None) -> dict:
    """What PyJWT does not know about: the handoff profile's exact shape and its one operation."""
    if not set(claims) <= set(REQUIRED + OPTIONAL):
        raise Refused("malformed claims")  # the profile is closed: unknown claims are refused
    if not isinstance(claims["aud"], str):  # strict_aud says so too (PyJWT 2.9+)
        raise Refused("wrong audience")
    times = [claims[c] for c in ("iat", "nbf", "exp")]
    if any(type(t) is not int for t in times):  # PyJWT would take 1.5 or "17"; we do not
        raise Refused("malformed claims")
    iat, nbf, exp = times
    if not (iat < exp and nbf <= exp):
        raise Refused("malformed claims")
    if exp - iat > MAX_LIFETIME:
        raise Refused("lifetime too long")
    if not isinstance(claims["sub"], str) or not SUBJECT.fullmatch(claims["sub"]):
        raise Refused("malformed claims")
    if not isinstance(claims["jti"], str) or not JTI.fullmatch(claims["jti"]):
        raise Refused("malformed claims")
    for name in ("sid", "nonce", "name", "email"):
        if name in claims and not isinstance(claims[name], str):
            raise Refused("malformed claims")
    if "email_verified" in claims and not isinstance(claims["email_verified"], bool):
        raise Refused("malformed claims")
    groups = claims.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise Refused("malformed claims")
    # A `nonce` binds the token to one browser: a real endpoint compares it (in constant time)
    # with that browser's nonce cookie. This CLI has no browser, so it only checks the type.

    details = claims["authorization_details"]
    if not isinstance(details, list) or len(details) != 1 or not isinstance(details[0], dict):
        raise Refused("malformed claims")  # exactly one operation, never a list of several
    op = details[0]
    kind = op.get("type")
    if not isinstance(kind, str) or len(kind) > 64 or not OPERATION_TYPE.fullmatch(kind):
        raise Refused("bad operation argument")
    if operation is not None and kind != operation:
        raise Refused("wrong operation")
    arguments = {k: v for k, v in op.items() if k != "type"}
    if len(arguments) > 16:
        raise Refused("bad operation argument")
    for name, value in arguments.items():
        if not ARG_NAME.fullmatch(name) or not isinstance(value, str):
            raise Refused("bad operation argument")
        if len(value.encode()) > 256 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise Refused("bad operation argument")
    # A real endpoint now checks the arguments against its catalog: for report.view, exactly
    # one `report_id` that is a canonical integer in range, and so on.
    return op


def record_once(seen_file: str, jti: str) -> None:
    """Single use. This file is a demonstration only: a real server records the jti in a store
    shared by all its replicas, atomically and with an expiry, e.g. Redis
    `SET handoff:jti:<jti> 1 NX EXAT <exp + leeway>`, and refuses when the key already exists.
    It records only after every other check has passed, so a token refused for another reason
    (say, the wrong browser) is not used up."""
    with open(seen_file, "a+", encoding="utf-8") as f:
        f.seek(0)
        if jti in f.read().splitlines():
            raise Refused("replayed")
        f.write(jti + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description="Verify a SERVER1 handoff token.")
    parser.add_argument("--issuer", required=True, help="SERVER1's URL, exactly as in `iss`")
    parser.add_argument("--audience", required=True, help="our own URL, exactly as in `aud`")
    keys = parser.add_mutually_exclusive_group(required=True)
    keys.add_argument("--secret-file", help="shared HMAC secret (raw bytes): HS256 only")
    keys.add_argument("--jwks-url", help="the issuer's JWKS: EdDSA only")
    parser.add_argument("--operation", help="refuse any operation type but this one")
    parser.add_argument("--seen-file", help="file of used jtis, one per line (demo replay store)")
    parser.add_argument("token", metavar="TOKEN", help="the token, or - to read it from stdin")
    args = parser.parse_args()

    token = sys.stdin.read().strip() if args.token == "-" else args.token
    secret = None
    if args.secret_file:
        try:
            with open(args.secret_file, "rb") as f:
                secret = f.read()  # the bytes as they are: no strip, no hex or base64 decoding
        except OSError as e:
            parser.error(f"cannot read the secret file: {e.strerror}")
        if len(secret) < 32:
            parser.error("the secret file must hold at least 32 bytes")
    alg = "HS256" if secret is not None else "EdDSA"

    try:
        header = check_header(token, alg)
        key = secret if secret is not None else jwks_key(args.jwks_url, header["kid"])
        claims = check_signature_and_claims(token, key, alg, args)
        op = check_profile(claims, args.operation)
        if args.seen_file:
            record_once(args.seen_file, claims["jti"])  # last, after everything else passed
    except Refused as refusal:
        print(f"refused: {refusal}", file=sys.stderr)
        return 1

    result = {
        "sub": claims["sub"],
        "operation": op,
        "claims": {name: claims[name] for name in PROFILE if name in claims},
        "jti": claims["jti"],
    }
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
