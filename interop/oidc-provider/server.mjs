// A real, third-party OpenID Provider (node oidc-provider) for tokenkeeper's interop tests.
//
// Settings come from the environment so each test starts the provider it needs:
//   PORT                   port on 127.0.0.1 (required)
//   TOKEN_TTL              access-token lifetime in seconds (default 300)
//   ROTATE_REFRESH_TOKENS  "1" to rotate refresh tokens on every use (default off)
//   DPOP_REQUIRE_NONCE     "1" to require DPoP nonces (default off)
//   DEBUG_EVENTS           "1" to print the provider's error events (the real failure reasons)
//   CLIENT_JWKS            a JWKS (JSON): registers client `cc-pkjwt` (private_key_jwt) with it
//   BFF_ORIGIN             a BFF's origin: registers client `bff` (secret `bff-secret`) with
//                          {origin}/bff/callback and the post-logout redirect {origin}/
// When ready it prints one line: READY <issuer>
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
if (!Number.isInteger(port) || port <= 0) {
  console.error('PORT must be set');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const tokenTtl = Number(process.env.TOKEN_TTL || 300);
const rotate = process.env.ROTATE_REFRESH_TOKENS === '1';
const requireNonce = process.env.DPOP_REQUIRE_NONCE === '1';

function jwk(type, options, alg, kid) {
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), alg, kid, use: 'sig' };
}

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

if (process.env.BFF_ORIGIN) {
  extraClients.push({
    client_id: 'bff',
    client_secret: 'bff-secret',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: [`${process.env.BFF_ORIGIN}/bff/callback`],
    post_logout_redirect_uris: [`${process.env.BFF_ORIGIN}/`],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: `openid offline_access ${RESOURCE_SCOPES}`,
  });
}

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
  jwks: {
    keys: [
      jwk('rsa', { modulusLength: 2048 }, 'RS256', 'rs-1'),
      jwk('ec', { namedCurve: 'P-256' }, 'ES256', 'es-1'),
    ],
  },
  scopes: ['openid', 'offline_access', 'api:read', 'api:write'],
  enabledJWA: {
    dPoPSigningAlgValues: ['ES256', 'ES384', 'Ed25519', 'EdDSA', 'PS256', 'RS256'],
  },
  features: {
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    devInteractions: { enabled: true },
    dPoP: {
      enabled: true,
      nonceSecret: crypto.randomBytes(32),
      requireNonce: () => requireNonce,
    },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator) => {
        if (resourceIndicator !== RESOURCE) {
          throw new Provider.errors.InvalidTarget();
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
  // Refresh tokens for our test client whenever offline_access was granted.
  issueRefreshToken: async (ctx, client, code) => client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
  pkce: { required: () => true },
};

const provider = new Provider(issuer, configuration);
if (process.env.DEBUG_EVENTS === '1') {
  for (const event of ['grant.error', 'server_error', 'introspection.error', 'revocation.error']) {
    provider.on(event, (ctx, err) => console.error(event, err && (err.error_detail || err.message)));
  }
}
provider.listen(port, '127.0.0.1', () => {
  console.log(`READY ${issuer}`);
});
