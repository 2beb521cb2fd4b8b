// A real OAuth 2.0 authorization server for scopegate's OAuth tests:
// oidc-provider (https://github.com/panva/node-oidc-provider), configured
// like the reference API's: JWT access tokens for the API (RFC 9068, via
// resource indicators), opaque tokens with introspection (RFC 7662) and
// revocation, client credentials and the authorization code grant.
//
// Started by tests/oauth.rs: `node server.mjs`. It listens on three ephemeral
// loopback ports (the issuer; a second issuer that shares its signing keys,
// for the wrong-issuer test; and a third whose issuer has a path, for
// discovery), prints one JSON line with their URLs,
// and exits when its stdin closes (when the test process ends).
//
// Test-only admin routes on the issuer's port, outside the provider:
//   POST /admin/rotate  new signing key first in the JWKS, old one kept
//   GET  /admin/stats   {"jwks_fetches": n}
import http from 'node:http';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

const API = 'https://api.onboardinghub.test';
const API_OPAQUE = 'https://api.onboardinghub.test/opaque';
const OTHER_API = 'https://other.example';
const API_SCOPES = 'contacts:read contacts:write organisations:read organisations:write '
  + 'enrollments:read enrollments:write guides:read webhooks:manage';
// Users of the authorization code grant, and their workspaces.
const USERS = { ada: 'ws_acme', bob: 'ws_free' };

function client(id, workspace, extra = {}) {
  return {
    client_id: id,
    client_secret: `${id}-secret`,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    workspace_id: workspace,
    ...extra,
  };
}

const CLIENTS = [
  client('crm-sync', 'ws_acme', { scope: 'contacts:read guides:read' }),
  client('free-app', 'ws_free', { scope: 'contacts:read' }),
  client('short-lived', 'ws_acme', { scope: 'contacts:read' }),
  client('web-app', undefined, {
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/callback'],
  }),
  // The API's own client: authenticates its introspection calls.
  client('onboardinghub-api', undefined, { grant_types: [] }),
];

let keys = [newKey()];
let jwksFetches = 0;

function newKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), alg: 'RS256', use: 'sig' };
}

function provider(issuer) {
  const oidc = new Provider(issuer, {
    clients: CLIENTS,
    scopes: ['openid', ...API_SCOPES.split(' ')],
    jwks: { keys },
    extraClientMetadata: { properties: ['workspace_id'] },
    findAccount: (_ctx, id) => ({ accountId: id, claims: () => ({ sub: id }) }),
    features: {
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      devInteractions: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => API,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource, client) => {
          const ttl = client.clientId === 'short-lived' ? 2 : 3600;
          switch (resource) {
            case API:
              return { audience: API, scope: API_SCOPES, accessTokenTTL: ttl, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
            case API_OPAQUE:
              return { audience: API, scope: API_SCOPES, accessTokenTTL: ttl, accessTokenFormat: 'opaque' };
            case OTHER_API:
              return { audience: OTHER_API, scope: API_SCOPES, accessTokenTTL: ttl, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
            default:
              throw new Provider.errors.InvalidTarget();
          }
        },
      },
    },
    // The claim scopegate reads the account from.
    extraTokenClaims: async (ctx, token) => {
      if (token.accountId) return { workspace_id: USERS[token.accountId] };
      const c = await ctx.oidc.provider.Client.find(token.clientId);
      return c?.workspace_id ? { workspace_id: c.workspace_id } : undefined;
    },
    // Introspection: the API's own client may introspect every token.
    // Revocation: a client may revoke its own tokens.
    pkce: { required: () => true },
  });
  oidc.proxy = false;
  return oidc;
}

function listen(handler) {
  return new Promise((resolve) => {
    const server = http.createServer((req, res) => handler.current(req, res));
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${server.address().port}`));
  });
}

const main = { current: null };
const other = { current: null };
const pathed = { current: null };
const issuer = await listen(main);
const otherIssuer = await listen(other);
// A third issuer with a path, as Keycloak's realms have: the provider is
// mounted under it, the way express mounts it (originalUrl keeps the path).
const REALM = '/realms/acme';
const realmIssuer = `${await listen(pathed)}${REALM}`;

let oidc = provider(issuer).callback();
other.current = provider(otherIssuer).callback();
const realm = provider(realmIssuer).callback();
pathed.current = (req, res) => {
  if (!req.url.startsWith(`${REALM}/`)) {
    res.statusCode = 404;
    res.end();
    return;
  }
  req.originalUrl = req.url;
  req.url = req.url.slice(REALM.length);
  realm(req, res);
};

main.current = (req, res) => {
  if (req.url === '/admin/rotate' && req.method === 'POST') {
    keys = [newKey(), ...keys];
    oidc = provider(issuer).callback();
    res.end(JSON.stringify({ kid: keys[0].kid }));
    return;
  }
  if (req.url === '/admin/stats') {
    res.end(JSON.stringify({ jwks_fetches: jwksFetches }));
    return;
  }
  if (req.url === '/jwks') jwksFetches += 1;
  oidc(req, res);
};

process.stdout.write(`${JSON.stringify({ issuer, other_issuer: otherIssuer, realm_issuer: realmIssuer })}\n`);
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
