#!/usr/bin/env node
// Verify a handoff token from SERVER1, the way a partner's handoff endpoint would.
//
//   node verify_handoff.mjs --issuer URL --audience URL (--secret-file PATH | --jwks-url URL)
//                           [--operation TYPE] [--seen-file PATH] TOKEN
//
// TOKEN may be `-` to read it from standard input. Exit 0 prints the accepted handoff as JSON;
// exit 1 prints `refused: <reason>` on stderr; exit 2 is a usage or configuration error.
// The token itself is never printed. Needs Node 20+ and `jose` (npm install). See docs/partners.md.

import { readFileSync, appendFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { calculateJwkThumbprint, decodeProtectedHeader, importJWK, jwtVerify } from "jose";

const TYP = "handoff+jwt";
const MAX_TOKEN_LEN = 8192; // bytes; real tokens are a few hundred
const LEEWAY = 5; // seconds of clock difference tolerated on exp, nbf and iat
const MAX_LIFETIME = 120; // seconds: exp - iat may not be more
const REQUIRED = ["iss", "sub", "aud", "iat", "nbf", "exp", "jti", "authorization_details"];
const OPTIONAL = ["sid", "nonce", "name", "email", "email_verified", "groups"];
const PROFILE = ["name", "email", "email_verified", "groups"]; // echoed under "claims" when present

const SEGMENTS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const SUBJECT = /^[A-Za-z0-9_.:-]{1,128}$/;
const JTI = /^[A-Za-z0-9_-]{22,64}$/; // SERVER1 writes 22 (128 random bits)
const OPERATION_TYPE = /^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$/; // e.g. report.view
const ARG_NAME = /^[a-z][a-z0-9_]{0,31}$/;

class Refused extends Error {} // the message is the short reason

function usage(message) {
  process.stderr.write(
    "usage: verify_handoff.mjs --issuer URL --audience URL (--secret-file PATH | --jwks-url URL)\n" +
      "                          [--operation TYPE] [--seen-file PATH] TOKEN\n" +
      `error: ${message}\n`,
  );
  process.exit(2);
}

// The issuer's Ed25519 key with this kid. A CLI fetches once per run; a server caches the set
// (jose's createRemoteJWKSet does, refetching at most once per cooldown on an unknown kid).
async function jwksKey(jwksUrl, kid) {
  let keys;
  try {
    // redirect: "error": a JWKS comes from the configured URL only, never from where it points.
    const resp = await fetch(jwksUrl, { redirect: "error", signal: AbortSignal.timeout(5000) });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    keys = (await resp.json()).keys;
    if (!Array.isArray(keys)) throw new Error("keys is not an array");
  } catch {
    throw new Refused("keys unavailable"); // unreachable, not JSON, no "keys": nothing to check
  }
  for (const jwk of keys) {
    // Only Ed25519 signing keys whose kid really is their thumbprint; ignore everything else.
    if (jwk?.kty !== "OKP" || jwk.crv !== "Ed25519" || jwk.kid !== kid) continue;
    if ((jwk.use ?? "sig") !== "sig" || (jwk.alg ?? "EdDSA") !== "EdDSA") continue;
    try {
      if ((await calculateJwkThumbprint(jwk, "sha256")) !== kid) continue;
      return await importJWK({ kty: "OKP", crv: "Ed25519", x: jwk.x }, "EdDSA");
    } catch {
      throw new Refused("keys unavailable"); // an `x` that is not an Ed25519 public key
    }
  }
  throw new Refused("unknown kid");
}

// Cheap checks before any cryptography: size, shape, and a header we accept exactly.
function checkHeader(token, alg) {
  if (Buffer.byteLength(token) > MAX_TOKEN_LEN) throw new Refused("token too large");
  if (!SEGMENTS.test(token)) throw new Refused("malformed");
  let header;
  try {
    header = decodeProtectedHeader(token);
  } catch {
    throw new Refused("malformed");
  }
  // Never jku, x5u, jwk, crit...: no token may say where its key comes from.
  if (Object.keys(header).some((k) => !["typ", "alg", "kid"].includes(k))) {
    throw new Refused("bad header");
  }
  // Exact: jose's own `typ` option would also take "application/handoff+jwt".
  if (header.typ !== TYP) throw new Refused("wrong type");
  // Pinned by our configuration, never chosen by the token.
  if (header.alg !== alg) throw new Refused("wrong algorithm");
  if (alg === "EdDSA" && typeof header.kid !== "string") throw new Refused("missing kid");
  return header;
}

// jose checks the signature, then iss, aud and the times (nbf, exp; iat through maxTokenAge).
async function checkSignatureAndClaims(token, key, alg, opts) {
  try {
    const { payload } = await jwtVerify(token, key, {
      algorithms: [alg],
      typ: TYP,
      issuer: opts.issuer,
      audience: opts.audience,
      requiredClaims: REQUIRED,
      clockTolerance: LEEWAY,
      maxTokenAge: MAX_LIFETIME, // also refuses an iat ahead of our clock
    });
    return payload;
  } catch (err) {
    if (err.code === "ERR_JWS_SIGNATURE_VERIFICATION_FAILED") throw new Refused("bad signature");
    if (err.code === "ERR_JWT_EXPIRED") throw new Refused("expired");
    if (err.code === "ERR_JWT_CLAIM_VALIDATION_FAILED" && err.reason === "check_failed") {
      if (err.claim === "iss") throw new Refused("wrong issuer");
      if (err.claim === "aud") throw new Refused("wrong audience");
      if (err.claim === "nbf" || err.claim === "iat") throw new Refused("not yet valid");
    }
    throw new Refused("malformed claims"); // a missing claim, a wrong type, undecodable JSON
  }
}

// What jose does not know about: the handoff profile's exact shape and its one operation.
function checkProfile(claims, operation) {
  const bad = (reason = "malformed claims") => {
    throw new Refused(reason);
  };
  // The profile is closed: unknown claims are refused.
  if (Object.keys(claims).some((c) => !REQUIRED.includes(c) && !OPTIONAL.includes(c))) bad();
  if (typeof claims.aud !== "string") bad("wrong audience"); // a string, never an array
  const { iat, nbf, exp } = claims;
  if (![iat, nbf, exp].every(Number.isInteger)) bad(); // jose would take 1.5
  if (!(iat < exp && nbf <= exp)) bad();
  if (exp - iat > MAX_LIFETIME) bad("lifetime too long");
  if (typeof claims.sub !== "string" || !SUBJECT.test(claims.sub)) bad();
  if (typeof claims.jti !== "string" || !JTI.test(claims.jti)) bad();
  for (const name of ["sid", "nonce", "name", "email"]) {
    if (name in claims && typeof claims[name] !== "string") bad();
  }
  if ("email_verified" in claims && typeof claims.email_verified !== "boolean") bad();
  const groups = claims.groups ?? [];
  if (!Array.isArray(groups) || !groups.every((g) => typeof g === "string")) bad();
  // A `nonce` binds the token to one browser: a real endpoint compares it (in constant time)
  // with that browser's nonce cookie. This CLI has no browser, so it only checks the type.

  const details = claims.authorization_details;
  const op = Array.isArray(details) && details.length === 1 ? details[0] : null;
  if (op === null || typeof op !== "object" || Array.isArray(op)) bad(); // exactly one operation
  const type = op.type;
  if (typeof type !== "string" || type.length > 64 || !OPERATION_TYPE.test(type)) {
    bad("bad operation argument");
  }
  if (operation !== undefined && type !== operation) bad("wrong operation");
  const args = Object.entries(op).filter(([name]) => name !== "type");
  if (args.length > 16) bad("bad operation argument");
  for (const [name, value] of args) {
    if (!ARG_NAME.test(name) || typeof value !== "string") bad("bad operation argument");
    // eslint-disable-next-line no-control-regex
    if (Buffer.byteLength(value) > 256 || /[\x00-\x1f\x7f]/.test(value)) {
      bad("bad operation argument");
    }
  }
  // A real endpoint now checks the arguments against its catalog: for report.view, exactly
  // one `report_id` that is a canonical integer in range, and so on.
  return op;
}

// Single use. This file is a demonstration only: a real server records the jti in a store
// shared by all its replicas, atomically and with an expiry, e.g. Redis
// `SET handoff:jti:<jti> 1 NX EXAT <exp + leeway>`, and refuses when the key already exists.
// It records only after every other check has passed, so a token refused for another reason
// (say, the wrong browser) is not used up.
function recordOnce(seenFile, jti) {
  let seen = "";
  try {
    seen = readFileSync(seenFile, "utf8");
  } catch (err) {
    if (err.code !== "ENOENT") throw err;
  }
  if (seen.split("\n").includes(jti)) throw new Refused("replayed");
  appendFileSync(seenFile, `${jti}\n`);
}

async function main() {
  let values, positionals;
  try {
    ({ values, positionals } = parseArgs({
      allowPositionals: true,
      options: {
        issuer: { type: "string" },
        audience: { type: "string" },
        "secret-file": { type: "string" },
        "jwks-url": { type: "string" },
        operation: { type: "string" },
        "seen-file": { type: "string" },
      },
    }));
  } catch (err) {
    usage(err.message);
  }
  if (!values.issuer || !values.audience) usage("--issuer and --audience are required");
  if (!values["secret-file"] === !values["jwks-url"]) {
    usage("give exactly one of --secret-file and --jwks-url");
  }
  if (positionals.length !== 1) usage("give exactly one TOKEN (or - for stdin)");

  const token = positionals[0] === "-" ? readFileSync(0, "utf8").trim() : positionals[0];
  let secret;
  if (values["secret-file"]) {
    try {
      // The bytes as they are: no trimming, no hex or base64 decoding.
      secret = new Uint8Array(readFileSync(values["secret-file"]));
    } catch (err) {
      usage(`cannot read the secret file: ${err.message}`);
    }
    if (secret.length < 32) usage("the secret file must hold at least 32 bytes");
  }
  const alg = secret ? "HS256" : "EdDSA";

  try {
    const header = checkHeader(token, alg);
    const key = secret ?? (await jwksKey(values["jwks-url"], header.kid));
    const claims = await checkSignatureAndClaims(token, key, alg, values);
    const op = checkProfile(claims, values.operation);
    if (values["seen-file"]) recordOnce(values["seen-file"], claims.jti); // last of all
    const profile = Object.fromEntries(PROFILE.filter((c) => c in claims).map((c) => [c, claims[c]]));
    console.log(JSON.stringify({ sub: claims.sub, operation: op, claims: profile, jti: claims.jti }));
    return 0;
  } catch (err) {
    if (!(err instanceof Refused)) throw err;
    console.error(`refused: ${err.message}`);
    return 1;
  }
}

process.exitCode = await main();
