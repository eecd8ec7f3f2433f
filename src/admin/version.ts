import { readFileSync } from 'node:fs';

/** The package version; package.json sits two levels up from both src/admin and dist/admin. */
export const GATEWAY_VERSION: string = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;
