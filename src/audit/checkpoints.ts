import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import type { AuditCheckpointRecord, AuditKeyRecord, AuditStore } from '../store/types.js';
import { canonicalJson } from './record.js';

/** The Keyring purpose the checkpoint signing key is sealed under (context: the key id). */
export const CHECKPOINT_KEY_PURPOSE = 'audit-checkpoint-key';

/** What checkpoints need of the gateway's Keyring (src/identity/keyring.ts). */
export interface CheckpointKeyring {
  seal(purpose: string, context: string, plaintext: Buffer | string): string;
  open(purpose: string, context: string, sealed: string): Buffer;
}

export interface CheckpointSigner {
  keyId: string;
  privateKey: KeyObject;
}

/** The signed bytes: the RFC 8785 canonical JSON of {"hash","seq","time"}. */
export function checkpointPayload(checkpoint: { seq: number; hash: string; time: string }): Buffer {
  return Buffer.from(canonicalJson({ hash: checkpoint.hash, seq: checkpoint.seq, time: checkpoint.time }), 'utf8');
}

export function signCheckpoint(signer: CheckpointSigner, at: { seq: number; hash: string; time: string }): AuditCheckpointRecord {
  const signature = sign(null, checkpointPayload(at), signer.privateKey).toString('base64');
  return { seq: at.seq, hash: at.hash, time: at.time, keyId: signer.keyId, signature };
}

export function checkpointSignatureValid(publicKey: KeyObject, checkpoint: AuditCheckpointRecord): boolean {
  try {
    return verify(null, checkpointPayload(checkpoint), publicKey, Buffer.from(checkpoint.signature, 'base64'));
  } catch {
    return false;
  }
}

/** `ak-` and the first 16 hex digits of the SHA-256 of the public key (SPKI DER). */
function keyIdOf(publicKey: KeyObject): string {
  return 'ak-' + createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16);
}

/**
 * The newest checkpoint key this keyring can open; a new Ed25519 key (stored sealed) when there is
 * none, or when the master key changed without re-wrapping (older public keys still verify older
 * checkpoints). `onNewKey` tells why a key was made.
 */
export async function loadCheckpointSigner(
  store: Pick<AuditStore, 'listAuditKeys' | 'putAuditKey'>,
  keyring: CheckpointKeyring,
  onNewKey: (why: string) => void,
): Promise<CheckpointSigner> {
  const keys = await store.listAuditKeys();
  const newest = keys.at(-1);
  if (newest) {
    try {
      const pem = keyring.open(CHECKPOINT_KEY_PURPOSE, newest.keyId, newest.sealedPrivateKey);
      return { keyId: newest.keyId, privateKey: createPrivateKey(pem) };
    } catch (err) {
      onNewKey(`the newest checkpoint key ${newest.keyId} cannot be opened (${(err as Error).message})`);
    }
  }
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const keyId = keyIdOf(publicKey);
  const record: AuditKeyRecord = {
    keyId,
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    sealedPrivateKey: keyring.seal(CHECKPOINT_KEY_PURPOSE, keyId, privateKey.export({ type: 'pkcs8', format: 'pem' })),
    createdAt: new Date().toISOString(),
  };
  await store.putAuditKey(record);
  if (!newest) onNewKey('first checkpoint key');
  return { keyId, privateKey };
}

/** Public keys by key id, for verification (needs no master key). */
export async function checkpointPublicKeys(store: Pick<AuditStore, 'listAuditKeys'>): Promise<Map<string, KeyObject>> {
  const keys = new Map<string, KeyObject>();
  for (const key of await store.listAuditKeys()) {
    try {
      keys.set(key.keyId, createPublicKey(key.publicKeyPem));
    } catch {
      // an unreadable public key verifies nothing: its checkpoints are reported as bad
    }
  }
  return keys;
}
