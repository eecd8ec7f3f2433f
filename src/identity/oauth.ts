/** OAuth 2.0 for agents: bearer-JWT authentication and the built-in per-tenant authorization server. */
export {
  JwtAuthenticator,
  certificateThumbprint,
  type BuiltInIssuer,
  type BuiltInIssuers,
  type JwksOptions,
  type JwtAuthenticatorOptions,
} from './oauth/authenticator.js';
export { SigningKeys, type SigningKeysOptions } from './oauth/signing-keys.js';
export {
  CLIENT_SECRET_PREFIX,
  createTokenService,
  hashClientSecret,
  type AuditSink,
  type OAuthRequest,
  type OAuthResponse,
  type TokenService,
  type TokenServiceOptions,
} from './oauth/token-service.js';
