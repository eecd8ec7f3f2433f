// Entry of a signing worker (see signer-pool.ts): the per-certificate CPU work of the built-in CA.
import { webcrypto } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import { AsnConvert } from '@peculiar/asn1-schema';
import * as asn1X509 from '@peculiar/asn1-x509';
import { issueAgentLeaf, type LeafSigner } from './leaf.js';
import { PkiError } from './types.js';
import type { WorkerReply, WorkerRequest } from './signer-pool.js';

const port = parentPort;
if (!port) throw new Error('signer-worker.ts must run in a worker thread');

/** CA keys imported once per CA (non-extractable), by CA id. */
const signers = new Map<string, Promise<LeafSigner>>();

port.on('message', (message: WorkerRequest) => {
  if (message.t === 'ca') {
    const promise = (async (): Promise<LeafSigner> => {
      let signingKey: webcrypto.CryptoKey;
      try {
        signingKey = await webcrypto.subtle.importKey('pkcs8', message.pkcs8, message.importAlgorithm as never, false, ['sign']);
      } finally {
        message.pkcs8.fill(0);
      }
      return {
        signingKey,
        signingAlgorithm: message.signingAlgorithm,
        asnSubject: AsnConvert.parse(message.subjectDer, asn1X509.Name),
        asnSignatureAlgorithm: AsnConvert.parse(message.signatureAlgorithmDer, asn1X509.AlgorithmIdentifier),
        asnAki: AsnConvert.parse(message.akiDer, asn1X509.Extension),
        notAfterMs: message.notAfterMs,
      };
    })();
    promise.catch(() => undefined);
    signers.set(message.caId, promise);
    return;
  }
  if (message.t === 'drop') {
    signers.delete(message.caId);
    return;
  }
  const { id } = message;
  void (async () => {
    let reply: WorkerReply;
    try {
      const signer = signers.get(message.caId);
      if (!signer) throw new Error(`CA ${message.caId} is not loaded in this signing worker`);
      const leaf = await issueAgentLeaf(await signer, message, true);
      reply = { id, ok: true, ...leaf };
    } catch (error) {
      reply = { id, ok: false, ...(error instanceof PkiError ? { code: error.code } : {}), message: (error as Error).message ?? String(error) };
    }
    port.postMessage(reply);
  })();
});

port.postMessage({ t: 'ready' });
