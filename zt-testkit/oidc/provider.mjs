// A real OpenID Provider for zt's tests: oidc-provider over HTTPS on 127.0.0.1.
//
// Usage: node provider.mjs CONFIG.json
//
// The configuration (written by zt-testkit's oidc module) gives the port (0 = any), the
// certificate and key files, the clients, the accounts, the claim settings and the signing
// keys. When the server listens it prints one line, `READY https://127.0.0.1:PORT`, which is
// also the issuer. It exits when its standard input closes (the test process is gone) or on
// SIGTERM. Everything is in memory: a restart forgets sessions, codes and tokens.

import { randomBytes, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import process from 'node:process';

import Provider from 'oidc-provider';

function fail(message) {
  process.stderr.write(`provider.mjs: ${message}\n`);
  process.exit(2);
}

const configPath = process.argv[2];
if (!configPath) fail('usage: node provider.mjs CONFIG.json');

let config;
try {
  config = JSON.parse(readFileSync(configPath, 'utf8'));
} catch (e) {
  fail(`cannot read the configuration ${configPath}: ${e.message}`);
}

function need(object, key, type, where) {
  const value = object?.[key];
  if (typeof value !== type) fail(`${where}.${key}: expected a ${type}, found ${JSON.stringify(value)}`);
  return value;
}

const port = need(config, 'port', 'number', 'config');
const groupsClaim = need(config, 'groups_claim', 'string', 'config');
const claimsInIdToken = need(config, 'claims_in_id_token', 'boolean', 'config');
const idTokenTtl = need(config, 'id_token_ttl', 'number', 'config');
if (!Array.isArray(config.clients) || config.clients.length === 0) fail('config.clients: expected a non-empty list');
if (!Array.isArray(config.accounts)) fail('config.accounts: expected a list');
if (!Array.isArray(config.signing_keys) || config.signing_keys.length === 0) {
  fail('config.signing_keys: expected a non-empty list');
}

// Private JWKs, from PKCS#8 DER (base64) or given as JWKs; the first one signs ID tokens.
const keys = config.signing_keys.map((k, i) => {
  const where = `config.signing_keys[${i}]`;
  const kid = need(k, 'kid', 'string', where);
  const alg = need(k, 'alg', 'string', where);
  let jwk;
  if (typeof k.pkcs8 === 'string') {
    try {
      jwk = createPrivateKey({ key: Buffer.from(k.pkcs8, 'base64'), format: 'der', type: 'pkcs8' })
        .export({ format: 'jwk' });
    } catch (e) {
      fail(`${where}.pkcs8: not a PKCS#8 private key: ${e.message}`);
    }
  } else if (k.jwk && typeof k.jwk === 'object') {
    jwk = { ...k.jwk };
  } else {
    fail(`${where}: needs pkcs8 (base64 DER) or jwk`);
  }
  return { ...jwk, kid, alg, use: 'sig' };
});
const idTokenAlg = keys[0].alg;

const clients = config.clients.map((c, i) => {
  const where = `config.clients[${i}]`;
  const clientId = need(c, 'client_id', 'string', where);
  const secret = c.client_secret ?? null;
  if (secret !== null && typeof secret !== 'string') fail(`${where}.client_secret: expected a string or null`);
  const redirectUris = c.redirect_uris ?? ['http://127.0.0.1/callback'];
  return {
    client_id: clientId,
    ...(secret === null
      ? { token_endpoint_auth_method: 'none' }
      : { client_secret: secret, token_endpoint_auth_method: 'client_secret_basic' }),
    application_type: 'native',
    redirect_uris: redirectUris,
    response_types: ['code'],
    grant_types: ['authorization_code', 'urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
    id_token_signed_response_alg: idTokenAlg,
  };
});

const accounts = new Map();
for (const [i, a] of config.accounts.entries()) {
  const where = `config.accounts[${i}]`;
  const login = need(a, 'login', 'string', where);
  accounts.set(login, a);
}

function claimsOf(account) {
  const claims = {
    sub: account.login,
    email: account.email,
    email_verified: account.email_verified,
  };
  if (typeof account.name === 'string') claims.name = account.name;
  if (Array.isArray(account.groups)) claims[groupsClaim] = account.groups;
  return claims;
}

// Listen first: with port 0 the issuer is known only once the port is.
let handler = (_req, res) => {
  res.statusCode = 503;
  res.end();
};
let server;
try {
  server = https.createServer(
    { cert: readFileSync(need(config, 'cert_file', 'string', 'config')), key: readFileSync(need(config, 'key_file', 'string', 'config')) },
    (req, res) => handler(req, res),
  );
} catch (e) {
  fail(`cannot load the certificate or key: ${e.message}`);
}
server.on('error', (e) => fail(`cannot listen on 127.0.0.1:${port}: ${e.message}`));

server.listen(port, '127.0.0.1', () => {
  const issuer = `https://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients,
    jwks: { keys },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    pkce: { required: () => true },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: [groupsClaim],
    },
    conformIdTokenClaims: !claimsInIdToken,
    ttl: { IdToken: idTokenTtl },
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
      userinfo: { enabled: true },
      revocation: { enabled: true },
    },
    async findAccount(_ctx, sub) {
      const account = accounts.get(sub);
      if (!account) {
        // oidc-provider then fails the sign-in with a bare server_error; say why here.
        process.stderr.write(`provider.mjs: no account with login ${JSON.stringify(sub)}\n`);
        return undefined;
      }
      return { accountId: sub, claims: async () => claimsOf(account) };
    },
  });
  // What went wrong inside the provider, on stderr (the test keeps it for its messages).
  for (const event of ['server_error', 'authorization.error', 'grant.error', 'userinfo.error', 'device_authorization.error']) {
    provider.on(event, (_ctx, err) => {
      process.stderr.write(`provider.mjs: ${event}: ${err?.message ?? err}${err?.error_description ? ` (${err.error_description})` : ''}\n`);
    });
  }
  handler = provider.callback();
  process.stdout.write(`READY ${issuer}\n`);
});

function stop() {
  server.close();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();
