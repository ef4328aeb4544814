// A real, third-party OpenID Provider (node oidc-provider) for tokenkeeper's interop tests.
//
// Settings come from the environment so each test starts the provider it needs:
//   PORT                   port on 127.0.0.1 (0 or unset: the kernel picks one; the READY line
//                          names it)
//   TOKEN_TTL              access-token lifetime in seconds (default 300)
//   ROTATE_REFRESH_TOKENS  "1" to rotate refresh tokens on every use (default off)
//   DPOP_REQUIRE_NONCE     "1" to require DPoP nonces (default off)
//   DEBUG_EVENTS           "1" to print the provider's error events (the real failure reasons)
//   CLIENT_JWKS            a JWKS (JSON): registers client `cc-pkjwt` (private_key_jwt) with it
//   BFF_ORIGIN             a BFF's origin: registers client `bff` (secret `bff-secret`) with
//                          {origin}/bff/callback and the post-logout redirect {origin}/
//   BFF_ORIGINS            several BFF origins, comma-separated: client `bff` gets a callback
//                          and a post-logout redirect for each (a fleet on several hosts)
//   BACKCHANNEL            "1" to enable back-channel logout (ID tokens then carry `sid`)
//   BFF2_ORIGIN            a second BFF frontend's origin: registers client `bff2` (secret
//                          `bff2-secret`) with {origin}/bff/callback and {origin}/ (BF-17)
//
// Token exchange (RFC 8693) is added through the provider's extension point
// (`registerGrantType`): client `exchanger` (secret `exchanger-secret`) exchanges an access
// token this provider issued (a JWT for the resource) for one for the same resource, with the
// subject's `sub`, `act` for an actor token, and an expiry never past the subject's. GET
// /test/exchanges answers how many exchanges were made.
// Login profiles (PR-01..PR-07): with LOGIN_JWKS (a JWKS, JSON) the provider registers, for the
// redirect URIs in LOGIN_REDIRECTS (comma-separated; default http://127.0.0.1:1/callback):
//   `par-web`     (secret `par-web-secret`)  must push its authorization requests (RFC 9126)
//   `jar-web`     (private_key_jwt)          must sign its request objects (RFC 9101)
//   `fapi-dpop`   (private_key_jwt)          the FAPI 2.0 profile: PAR, DPoP-bound tokens
// and, with MTLS=1 (the provider then serves https with the test CA's localhost certificate
// from TLS_CERT/TLS_KEY and asks for client certificates, trusting TLS_CA):
//   `fapi-mtls`   (tls_client_auth, DNS `worker.clients.test`)  FAPI 2.0 with mTLS
// A login's `acr` is `urn:pwd`, or `urn:mfa` when the request's acr_values asks for it (a
// login prompt is forced when the session's acr is not among the acr_values: a step-up).
// DEVICE=1 registers `cli`, a public client of the device flow (RFC 8628).
// When ready it prints one line: READY <issuer>
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import Provider, { errors, interactionPolicy } from 'oidc-provider';
import * as jose from 'jose';

// Listen first (on the port asked for, or one the kernel picks), then build the provider for
// the issuer that names the port: no port is chosen ahead and lost to another process.
const mtls = process.env.MTLS === '1';
const server = mtls
  ? https.createServer({
    cert: fs.readFileSync(process.env.TLS_CERT),
    key: fs.readFileSync(process.env.TLS_KEY),
    ca: fs.readFileSync(process.env.TLS_CA),
    requestCert: true,
    rejectUnauthorized: false,
  })
  : http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(process.env.PORT || 0), '127.0.0.1', resolve);
});
const port = server.address().port;
const issuer = mtls ? `https://localhost:${port}` : `http://127.0.0.1:${port}`;
const tokenTtl = Number(process.env.TOKEN_TTL || 300);
const rotate = process.env.ROTATE_REFRESH_TOKENS === '1';
const requireNonce = process.env.DPOP_REQUIRE_NONCE === '1';

// The private key comes out of the key generation already as a JWK. Exporting the generated
// KeyObject afterwards (`privateKey.export({ format: 'jwk' })`) deadlocks now and then on
// Node 20: a garbage collection during the export destroys the finished key-generation job,
// whose destructor waits for the key's mutex that the export holds (seen as a provider that
// never prints READY, about 1 start in 25 with 4 at once).
function jwk(type, options, alg, kid) {
  const { privateKey } = crypto.generateKeyPairSync(type, {
    ...options,
    publicKeyEncoding: { type: 'spki', format: 'jwk' },
    privateKeyEncoding: { type: 'pkcs8', format: 'jwk' },
  });
  return { ...privateKey, alg, kid, use: 'sig' };
}

const signingKeys = [
  jwk('rsa', { modulusLength: 2048 }, 'RS256', 'rs-1'),
  jwk('ec', { namedCurve: 'P-256' }, 'ES256', 'es-1'),
];

export const RESOURCE = 'urn:tokenkeeper:api';
export const RESOURCE_SCOPES = 'api:read api:write';

const extraClients = [];
if (process.env.CLIENT_JWKS) {
  extraClients.push({
    client_id: 'cc-pkjwt',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'private_key_jwt',
    jwks: JSON.parse(process.env.CLIENT_JWKS),
    scope: RESOURCE_SCOPES,
  });
}

const bffOrigins = (process.env.BFF_ORIGINS || process.env.BFF_ORIGIN || '')
  .split(',')
  .filter(Boolean);
const backchannel = process.env.BACKCHANNEL === '1';
if (bffOrigins.length > 0) {
  extraClients.push({
    client_id: 'bff',
    client_secret: 'bff-secret',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: bffOrigins.map((origin) => `${origin}/bff/callback`),
    post_logout_redirect_uris: bffOrigins.map((origin) => `${origin}/`),
    token_endpoint_auth_method: 'client_secret_basic',
    scope: `openid offline_access ${RESOURCE_SCOPES}`,
    ...(backchannel
      ? {
          backchannel_logout_uri: `${bffOrigins[0]}/bff/backchannel`,
          backchannel_logout_session_required: true,
        }
      : {}),
  });
}

if (process.env.BFF2_ORIGIN) {
  const origin = process.env.BFF2_ORIGIN;
  extraClients.push({
    client_id: 'bff2',
    client_secret: 'bff2-secret',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: [`${origin}/bff/callback`],
    post_logout_redirect_uris: [`${origin}/`],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: `openid offline_access ${RESOURCE_SCOPES}`,
  });
}

if (process.env.LOGIN_JWKS) {
  const jwks = JSON.parse(process.env.LOGIN_JWKS);
  const redirectUris = (process.env.LOGIN_REDIRECTS || 'http://127.0.0.1:1/callback').split(',');
  const web = {
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: redirectUris,
    post_logout_redirect_uris: redirectUris.map((u) => new URL(u).origin + '/'),
    scope: `openid offline_access ${RESOURCE_SCOPES}`,
  };
  extraClients.push(
    {
      ...web,
      client_id: 'par-web',
      client_secret: 'par-web-secret',
      token_endpoint_auth_method: 'client_secret_basic',
      require_pushed_authorization_requests: true,
    },
    {
      ...web,
      client_id: 'jar-web',
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      jwks,
      require_signed_request_object: true,
      request_object_signing_alg: 'ES256',
    },
    {
      ...web,
      client_id: 'fapi-dpop',
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      jwks,
      require_pushed_authorization_requests: true,
      dpop_bound_access_tokens: true,
      id_token_signed_response_alg: 'ES256',
    },
  );
  if (mtls) {
    extraClients.push({
      ...web,
      client_id: 'fapi-mtls',
      token_endpoint_auth_method: 'tls_client_auth',
      tls_client_auth_san_dns: 'worker.clients.test',
      tls_client_certificate_bound_access_tokens: true,
      require_pushed_authorization_requests: true,
      id_token_signed_response_alg: 'ES256',
    });
  }
}
const device = process.env.DEVICE === '1';
if (device) {
  extraClients.push({
    client_id: 'cli',
    grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'none',
    scope: `openid offline_access ${RESOURCE_SCOPES}`,
  });
}

// A step-up: a login whose acr_values the session's acr is not among prompts for a login.
const policy = interactionPolicy.base();
policy.get('login').checks.add(new interactionPolicy.Check(
  'acr_step_up',
  'a stronger authentication is requested',
  'login_required',
  (ctx) => {
    const wanted = String(ctx.oidc.params.acr_values || '').split(' ').filter(Boolean);
    if (wanted.length && !ctx.oidc.result?.login && !wanted.includes(ctx.oidc.session.acr)) {
      return interactionPolicy.Check.REQUEST_PROMPT;
    }
    return interactionPolicy.Check.NO_NEED_TO_PROMPT;
  },
));

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
extraClients.push({
  client_id: 'exchanger',
  client_secret: 'exchanger-secret',
  grant_types: [TOKEN_EXCHANGE, 'client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_basic',
  scope: RESOURCE_SCOPES,
});

const configuration = {
  clients: [
    ...extraClients,
    {
      client_id: 'cc-basic',
      client_secret: 'cc-basic-secret',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: RESOURCE_SCOPES,
    },
    {
      client_id: 'cc-post',
      client_secret: 'cc-post-secret',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_post',
      scope: RESOURCE_SCOPES,
    },
    {
      // A client whose access tokens must be DPoP-bound (RFC 9449 §5.2).
      client_id: 'cc-dpop',
      client_secret: 'cc-dpop-secret',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      dpop_bound_access_tokens: true,
      scope: RESOURCE_SCOPES,
    },
    {
      client_id: 'web-dpop',
      client_secret: 'web-dpop-secret',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1:1/callback'],
      token_endpoint_auth_method: 'client_secret_basic',
      dpop_bound_access_tokens: true,
      scope: `openid offline_access ${RESOURCE_SCOPES}`,
    },
    {
      client_id: 'web',
      client_secret: 'web-secret',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1:1/callback'],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: `openid offline_access ${RESOURCE_SCOPES}`,
    },
  ],
  jwks: { keys: signingKeys },
  scopes: ['openid', 'offline_access', 'api:read', 'api:write'],
  acrValues: ['urn:pwd', 'urn:mfa'],
  clientAuthMethods: [
    'client_secret_basic',
    'client_secret_jwt',
    'client_secret_post',
    'private_key_jwt',
    'none',
    ...(mtls ? ['tls_client_auth'] : []),
  ],
  interactions: { policy },
  enabledJWA: {
    dPoPSigningAlgValues: ['ES256', 'ES384', 'Ed25519', 'EdDSA', 'PS256', 'RS256'],
    requestObjectSigningAlgValues: ['ES256', 'PS256', 'EdDSA', 'Ed25519', 'RS256'],
    clientAuthSigningAlgValues: ['ES256', 'PS256', 'EdDSA', 'Ed25519', 'RS256', 'HS256'],
  },
  features: {
    clientCredentials: { enabled: true },
    // The FAPI 2.0 profile for the `fapi-*` clients.
    fapi: {
      enabled: true,
      profile: (ctx, client) => (client && client.clientId.startsWith('fapi-') ? '2.0' : undefined),
    },
    pushedAuthorizationRequests: { enabled: true },
    requestObjects: { enabled: true },
    deviceFlow: { enabled: device },
    mTLS: mtls
      ? {
        enabled: true,
        certificateBoundAccessTokens: true,
        tlsClientAuth: true,
        getCertificate(ctx) {
          const peer = ctx.socket.getPeerCertificate && ctx.socket.getPeerCertificate();
          if (!peer || !peer.raw) return undefined;
          return new crypto.X509Certificate(peer.raw).toString();
        },
        certificateAuthorized(ctx) {
          return ctx.socket.authorized === true;
        },
        certificateSubjectMatches(ctx, property, expected) {
          if (property !== 'tls_client_auth_san_dns') return false;
          const peer = ctx.socket.getPeerCertificate();
          return String(peer.subjectaltname || '').split(', ').includes(`DNS:${expected}`);
        },
      }
      : { enabled: false },
    introspection: { enabled: true },
    revocation: { enabled: true },
    devInteractions: { enabled: true },
    dPoP: {
      enabled: true,
      nonceSecret: crypto.randomBytes(32),
      requireNonce: () => requireNonce,
    },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: backchannel },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator) => {
        if (resourceIndicator !== RESOURCE) {
          throw new errors.InvalidTarget();
        }
        return {
          scope: RESOURCE_SCOPES,
          audience: RESOURCE,
          accessTokenTTL: tokenTtl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
  ttl: {
    AccessToken: tokenTtl,
    ClientCredentials: tokenTtl,
  },
  rotateRefreshToken: rotate,
  // A JWT access token carries the acr of the login it comes from (an API's step-up check).
  extraTokenClaims: async (ctx) => {
    const source = ctx.oidc.entities.AuthorizationCode || ctx.oidc.entities.RefreshToken;
    return source && source.acr ? { acr: source.acr } : undefined;
  },
  // Refresh tokens for our test client whenever offline_access was granted.
  issueRefreshToken: async (ctx, client, code) => client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
  pkce: { required: () => true },
  // Outgoing requests (back-channel logout) go to the BFFs under test on loopback, which the
  // provider's SSRF protection refuses by default: this test provider allows them.
  fetch: (url, options) => {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
};

const provider = new Provider(issuer, configuration);

// The dev interactions log users in without an `acr`: a login gets `urn:mfa` when its
// request asks for it, `urn:pwd` otherwise. GET /test/login-age?seconds=N dates the next
// logins N seconds back (a provider that ignores max_age, for the clients' auth_time check).
let loginAge = 0;
const interactionFinished = provider.interactionFinished.bind(provider);
provider.interactionFinished = async (req, res, result, options) => {
  if (result && result.login) {
    const details = await provider.interactionDetails(req, res);
    const wanted = String(details.params.acr_values || '').split(' ');
    result.login.acr = wanted.includes('urn:mfa') ? 'urn:mfa' : 'urn:pwd';
    if (loginAge > 0) {
      result.login.ts = Math.floor(Date.now() / 1000) - loginAge;
    }
  }
  return interactionFinished(req, res, result, options);
};

// RFC 8693 through the extension point. Client authentication has been done by the token
// endpoint already; this checks the grant's own parameters and the subject (and actor) token.
let exchanges = 0;
const es256 = signingKeys.find((k) => k.kid === 'es-1');
const publicKeys = jose.createLocalJWKSet({
  keys: signingKeys.map(({ d, p, q, dp, dq, qi, ...pub }) => pub),
});
async function verifyIssued(token, name) {
  try {
    const { payload } = await jose.jwtVerify(token, publicKeys, { issuer, audience: RESOURCE });
    return payload;
  } catch (err) {
    throw new errors.InvalidGrant(`${name} is not a valid access token of this provider`);
  }
}
provider.registerGrantType(
  TOKEN_EXCHANGE,
  async (ctx) => {
    exchanges += 1;
    const { params, client } = ctx.oidc;
    if (!client.grantTypeAllowed(TOKEN_EXCHANGE)) {
      throw new errors.UnauthorizedClient();
    }
    if (!params.subject_token || params.subject_token_type !== ACCESS_TOKEN_TYPE) {
      throw new errors.InvalidRequest('subject_token of type access_token required');
    }
    if (params.requested_token_type && params.requested_token_type !== ACCESS_TOKEN_TYPE) {
      throw new errors.InvalidRequest('only access tokens are issued');
    }
    if (params.resource && params.resource !== RESOURCE) {
      throw new errors.InvalidTarget();
    }
    const subject = await verifyIssued(params.subject_token, 'subject_token');
    let act;
    if (params.actor_token) {
      if (params.actor_token_type !== ACCESS_TOKEN_TYPE) {
        throw new errors.InvalidRequest('actor_token_type must be access_token');
      }
      const actor = await verifyIssued(params.actor_token, 'actor_token');
      act = { sub: actor.sub };
    }
    const granted = new Set(RESOURCE_SCOPES.split(' '));
    const scope = (params.scope || subject.scope || '')
      .split(' ')
      .filter((s) => granted.has(s))
      .join(' ');
    const now = Math.floor(Date.now() / 1000);
    const exp = Math.min(now + tokenTtl, subject.exp);
    const key = await jose.importJWK(es256, 'ES256');
    const accessToken = await new jose.SignJWT({
      sub: subject.sub,
      client_id: client.clientId,
      scope: scope || undefined,
      ...(act ? { act } : {}),
    })
      .setProtectedHeader({ alg: 'ES256', kid: 'es-1', typ: 'at+jwt' })
      .setIssuer(issuer)
      .setAudience(RESOURCE)
      .setIssuedAt(now)
      .setExpirationTime(exp)
      .setJti(crypto.randomUUID())
      .sign(key);
    ctx.body = {
      access_token: accessToken,
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: 'Bearer',
      expires_in: exp - now,
      ...(scope ? { scope } : {}),
    };
  },
  ['subject_token', 'subject_token_type', 'actor_token', 'actor_token_type', 'requested_token_type', 'audience', 'resource', 'scope'],
  ['audience', 'resource'],
);
provider.use(async (ctx, next) => {
  if (ctx.path === '/test/exchanges') {
    ctx.body = { exchanges };
    return;
  }
  if (ctx.path === '/test/login-age') {
    loginAge = Number(ctx.query.seconds || 0);
    ctx.body = { loginAge };
    return;
  }
  await next();
});
if (process.env.DEBUG_EVENTS === '1') {
  for (const event of ['grant.error', 'server_error', 'introspection.error', 'revocation.error', 'backchannel.error', 'end_session.error']) {
    provider.on(event, (...args) => { const err = args.find((a) => a instanceof Error); console.error(event, err && (err.error_detail || err.message), err && err.cause && (err.cause.code || err.cause.message)); });
  }
}
server.on('request', provider.callback());
console.log(`READY ${issuer}`);
