// The straightforward Node handoff endpoint, as a Node user would write it with node:http and
// jose: the second peer `make bench` holds SERVER2 against. It verifies the EdDSA token (keys
// from a JWKS file), requires `iss`, `aud` and `exp`, keeps the seen `jti`s in a Map until they
// expire, and answers a 303 to the report. No cookies, no audit log, no browser binding.
//
// PEER_LISTEN (host:port), PEER_JWKS_FILE, PEER_ISSUER, PEER_AUDIENCE.

import http from 'node:http';
import { readFileSync } from 'node:fs';
import { createLocalJWKSet, jwtVerify } from 'jose';

const [host, port] = process.env.PEER_LISTEN.split(':');
const keys = createLocalJWKSet(JSON.parse(readFileSync(process.env.PEER_JWKS_FILE, 'utf8')));
const options = {
  issuer: process.env.PEER_ISSUER,
  audience: process.env.PEER_AUDIENCE,
  algorithms: ['EdDSA'],
  requiredClaims: ['exp', 'jti'],
};
const seen = new Map();

function answer(res, status, headers = {}) {
  res.writeHead(status, { 'content-length': '0', ...headers });
  res.end();
}

async function handoff(token, res) {
  let payload;
  try {
    ({ payload } = await jwtVerify(token ?? '', keys, options));
  } catch {
    return answer(res, 401);
  }
  const now = Math.floor(Date.now() / 1000);
  if (seen.size > 1_000_000) {
    for (const [jti, exp] of seen) if (exp + 5 <= now) seen.delete(jti);
  }
  if (seen.has(payload.jti)) return answer(res, 401);
  seen.set(payload.jti, payload.exp);
  const report = payload.authorization_details?.[0]?.report_id ?? '0';
  answer(res, 303, { location: `/reports/${encodeURIComponent(report)}` });
}

http
  .createServer((req, res) => {
    const url = new URL(req.url, 'http://peer');
    if (url.pathname !== '/handoff') return answer(res, 404);
    if (req.method === 'GET') return handoff(url.searchParams.get('token'), res);
    if (req.method !== 'POST') return answer(res, 405);
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > 16 * 1024) req.destroy();
      else chunks.push(chunk);
    });
    req.on('end', () => {
      const form = new URLSearchParams(Buffer.concat(chunks).toString('latin1'));
      handoff(form.get('token'), res);
    });
  })
  .listen(Number(port), host);
