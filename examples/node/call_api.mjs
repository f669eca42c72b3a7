#!/usr/bin/env node
// Call SERVER1's partner API: look up a user this partner was handed.
//
//   node call_api.mjs --server1 URL --client-id ID
//                     (--secret-file PATH | --private-key-file PKCS8_PEM --kid KID) --sub SUB
//
// Each request carries a fresh, short-lived JWT signed by the partner (a "client-secret JWT"):
// HS256 with the shared secret, or EdDSA with the partner's Ed25519 private key. Exit 0 prints
// the user as JSON; exit 1 prints `HTTP <status>: ...` on stderr; exit 2 is a usage error.
// Needs Node 20+ (global fetch) and `jose` (npm install). See docs/partners.md.

import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { SignJWT, importPKCS8 } from "jose";

const TYP = "partner-api+jwt";
const LIFETIME = 60; // seconds; a token is minted per request, so it never needs to live long

function usage(message) {
  process.stderr.write(
    "usage: call_api.mjs --server1 URL --client-id ID\n" +
      "                    (--secret-file PATH | --private-key-file PKCS8_PEM --kid KID) --sub SUB\n" +
      `error: ${message}\n`,
  );
  process.exit(2);
}

// One path segment: encode everything but RFC 3986's unreserved characters (as Python's
// urllib.parse.quote(s, safe="") does), so a `/` or `?` in the id cannot change the path.
function pathSegment(value) {
  return encodeURIComponent(value).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

// A JWT for one request: who we are (iss = sub = client id), to whom (aud = SERVER1's URL
// exactly as configured), and for which request (htm, htu as in RFC 9449).
async function mint(opts, key, method, url) {
  const now = Math.floor(Date.now() / 1000);
  const header = opts.secret
    ? { alg: "HS256", typ: TYP }
    : { alg: "EdDSA", typ: TYP, kid: opts.kid };
  return new SignJWT({ htm: method, htu: url }) // htu: the request URL without query or fragment
    .setProtectedHeader(header)
    .setIssuer(opts.clientId)
    .setSubject(opts.clientId)
    .setAudience(opts.server1)
    .setIssuedAt(now)
    .setExpirationTime(now + LIFETIME)
    .setJti(randomBytes(16).toString("base64url")) // 128 random bits, 22 characters
    .sign(key);
}

// The signing key: the secret file's raw bytes, or an Ed25519 private key (PKCS#8 PEM).
async function loadKey(values) {
  const path = values["secret-file"] ?? values["private-key-file"];
  let data;
  try {
    data = readFileSync(path);
  } catch (err) {
    usage(`cannot read ${path}: ${err.message}`);
  }
  if (values["secret-file"]) {
    if (data.length < 32) usage("the secret file must hold at least 32 bytes");
    return new Uint8Array(data); // used as it is: no trimming, no decoding
  }
  try {
    return await importPKCS8(data.toString("utf8"), "EdDSA");
  } catch {
    usage("--private-key-file must be an unencrypted Ed25519 key in PKCS#8 PEM");
  }
}

async function main() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        server1: { type: "string" },
        "client-id": { type: "string" },
        "secret-file": { type: "string" },
        "private-key-file": { type: "string" },
        kid: { type: "string" },
        sub: { type: "string" },
      },
    }));
  } catch (err) {
    usage(err.message);
  }
  const server1 = values.server1;
  if (!server1 || !values["client-id"] || values.sub === undefined) {
    usage("--server1, --client-id and --sub are required");
  }
  if (!values["secret-file"] === !values["private-key-file"]) {
    usage("give exactly one of --secret-file and --private-key-file");
  }
  if (!values["private-key-file"] !== !values.kid) {
    usage("--kid goes with --private-key-file (and only with it)");
  }
  let parsed;
  try {
    parsed = new URL(server1);
  } catch {
    usage("--server1 must be an http(s) URL");
  }
  if (!["http:", "https:"].includes(parsed.protocol)) usage("--server1 must be an http(s) URL");
  if (/[?#]/.test(server1)) usage("--server1 must have no query or fragment");
  if (server1.endsWith("/")) {
    usage("--server1 must not end with a slash (it is compared exactly, as `aud`)");
  }

  const key = await loadKey(values);
  const opts = { server1, clientId: values["client-id"], secret: !!values["secret-file"], kid: values.kid };
  // htu is this same URL, byte for byte.
  const url = `${server1}/api/v1/users/${pathSegment(values.sub)}`;
  let resp;
  try {
    resp = await fetch(url, {
      headers: { Authorization: `Bearer ${await mint(opts, key, "GET", url)}`, Accept: "application/json" },
      redirect: "manual", // never carry the Authorization header to wherever a redirect points
      signal: AbortSignal.timeout(10_000),
    });
  } catch (err) {
    console.error(`request failed: ${err.cause?.message ?? err.message}`);
    return 1;
  }
  const text = (await resp.text()).trim();
  if (resp.status !== 200) {
    // RFC 6750: a refused token comes with `WWW-Authenticate: Bearer error="invalid_token"`.
    const detail = [resp.headers.get("www-authenticate") ?? "", text].filter(Boolean).join(" ");
    console.error(`HTTP ${resp.status}: ${detail}`.replaceAll("\n", " "));
    return 1;
  }
  try {
    console.log(JSON.stringify(JSON.parse(text)));
  } catch {
    console.error("HTTP 200: the body is not JSON");
    return 1;
  }
  return 0;
}

process.exitCode = await main();
