import http from 'node:http';
import http2 from 'node:http2';
import type { Socket } from 'node:net';
import tls, { type SecureContext, type TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { DataplaneTelemetry } from '../admin/telemetry.js';
import type { DownstreamRequest, DownstreamResponse, ListenerInfo } from './context.js';

export type RequestHandler = (req: DownstreamRequest, res: DownstreamResponse, listener: ListenerInfo) => void;

export interface ListenerHandle {
  readonly info: ListenerInfo;
  /** e.g. https://127.0.0.1:8443 (the bound port, also when 0 was asked for). */
  readonly url: string;
  readonly port: number;
  /** Stops accepting, asks open connections to finish (GOAWAY / Connection: close), keeps them open. */
  stopAccepting(): void;
  /** Destroys every connection still open. */
  destroyAll(): void;
  /** Swaps the serving certificate for new handshakes. */
  setSecureContext?(options: { cert: string; key: string; ca?: string }): void;
}

export interface CommonListenerOptions {
  name: string;
  host: string;
  port: number;
  maxHeaderBytes: number;
  handle: RequestHandler;
  telemetry: DataplaneTelemetry;
  logger: Logger;
}

export interface TlsListenerOptions extends CommonListenerOptions {
  cert: string;
  key: string;
  /** CAs that client certificates may chain to (asked for on every handshake when set). */
  clientCa?: string;
  /** Called after each handshake (client certificate authentication); false closes the connection. */
  onSecureConnection?: (socket: TLSSocket) => boolean;
  /** Certificate for a server name the default certificate does not cover (the dev PKI issues them). */
  certificateFor?: (serverName: string) => Promise<{ cert: string; key: string } | undefined>;
}

const HEADERS_TIMEOUT_MS = 30_000; // slow-loris guard: time allowed to send the request head
const KEEP_ALIVE_TIMEOUT_MS = 65_000;

function rawJsonResponse(status: number, reason: string, code: string, message: string): string {
  const body = JSON.stringify({ error: { code, message } });
  return (
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
    `Connection: close\r\n\r\n${body}`
  );
}

/** Malformed HTTP/1.1 from a client: answer in JSON like every other refusal, then close. */
function onClientError(maxHeaderBytes: number, logger: Logger) {
  return (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    if (err.code === 'HPE_HEADER_OVERFLOW') {
      socket.end(
        rawJsonResponse(431, 'Request Header Fields Too Large', 'headers_too_large', `request headers exceed the limit of ${maxHeaderBytes} bytes`),
      );
      return;
    }
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'ERR_HTTP_HEADERS_TIMEOUT') {
      socket.end(rawJsonResponse(408, 'Request Timeout', 'request_timeout', 'the request head was not received in time'));
      return;
    }
    logger.debug({ err: err.message, code: err.code }, 'malformed request');
    socket.end(rawJsonResponse(400, 'Bad Request', 'bad_request', 'malformed HTTP request'));
  };
}

function listen(server: http.Server | http2.Http2SecureServer, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      const address = server.address();
      resolve(typeof address === 'object' && address ? address.port : port);
    });
  });
}

export function formatUrl(scheme: string, host: string, port: number): string {
  const shown = host.includes(':') ? `[${host}]` : host;
  return `${scheme}://${shown}:${port}`;
}

/** HTTPS ingress: TLS 1.3 only, HTTP/2 and HTTP/1.1 on one port via ALPN, optional mutual TLS. */
export async function startTlsListener(options: TlsListenerOptions): Promise<ListenerHandle> {
  const info: ListenerInfo = { name: options.name, scheme: 'https' };
  const contexts = new Map<string, Promise<SecureContext | undefined>>();
  let clientCa = options.clientCa;
  const MAX_CONTEXTS = 1000;
  const certificateFor = options.certificateFor;
  const SNICallback = certificateFor
    ? (serverName: string, callback: (err: Error | null, context?: SecureContext) => void) => {
        let context = contexts.get(serverName);
        if (!context) {
          if (contexts.size >= MAX_CONTEXTS) contexts.delete(contexts.keys().next().value!);
          context = certificateFor(serverName).then((pair) =>
            pair
              ? tls.createSecureContext({ cert: pair.cert, key: pair.key, ca: clientCa, minVersion: 'TLSv1.3' })
              : undefined,
          );
          contexts.set(serverName, context);
        }
        context.then(
          (value) => callback(null, value),
          (err: Error) => callback(err),
        );
      }
    : undefined;
  const server = http2.createSecureServer({
    SNICallback,
    cert: options.cert,
    key: options.key,
    ca: clientCa,
    // Certificates are asked for and verified on every handshake but judged per request (the
    // authenticate stage): a refusal is then a 401 that says why and is audited, and /enroll stays
    // reachable for agents that have no certificate yet.
    requestCert: Boolean(clientCa),
    rejectUnauthorized: false,
    minVersion: 'TLSv1.3',
    allowHTTP1: true,
    settings: { maxHeaderListSize: Math.max(options.maxHeaderBytes * 2, 65536) },
    maxSessionMemory: 64,
  });
  // The HTTP/1.1 side of an allowHTTP1 server reads its parser limit from the server object.
  (server as unknown as { maxHeaderSize: number }).maxHeaderSize = options.maxHeaderBytes;
  (server as unknown as { headersTimeout: number }).headersTimeout = HEADERS_TIMEOUT_MS;
  (server as unknown as { requestTimeout: number }).requestTimeout = 0;
  (server as unknown as { keepAliveTimeout: number }).keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;

  const sockets = new Set<TLSSocket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('secureConnection', (socket: TLSSocket) => {
    if (options.onSecureConnection && !options.onSecureConnection(socket)) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    sockets.add(socket);
    options.telemetry.connectionOpened(info.name);
    socket.once('close', () => {
      sockets.delete(socket);
      options.telemetry.connectionClosed(info.name);
    });
  });
  server.on('session', (session: http2.ServerHttp2Session) => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
    session.on('error', (err) => options.logger.debug({ err: err.message }, 'HTTP/2 session error'));
  });
  server.on('tlsClientError', (err: Error) => options.logger.debug({ err: err.message }, 'TLS handshake refused'));
  server.on('clientError' as 'session', onClientError(options.maxHeaderBytes, options.logger) as never);
  server.on('request', (req, res) => options.handle(req, res, info));

  const port = await listen(server, options.host, options.port);
  let closing = false;
  return {
    info,
    port,
    url: formatUrl('https', options.host, port),
    stopAccepting() {
      if (closing) return;
      closing = true;
      server.close();
      for (const session of sessions) session.close();
      (server as unknown as { closeIdleConnections?: () => void }).closeIdleConnections?.();
    },
    destroyAll() {
      for (const session of sessions) session.destroy();
      for (const socket of sockets) socket.destroy();
    },
    setSecureContext(context) {
      if (context.ca !== undefined) clientCa = context.ca;
      server.setSecureContext({ cert: context.cert, key: context.key, ca: clientCa, minVersion: 'TLSv1.3' });
      contexts.clear(); // per-name certificates are re-issued with the new trust on next use
    },
  };
}

/** Plaintext HTTP/1.1 for local traffic (127.0.0.1 by default). */
export async function startPlainListener(options: CommonListenerOptions): Promise<ListenerHandle> {
  const info: ListenerInfo = { name: options.name, scheme: 'http' };
  const server = http.createServer({
    maxHeaderSize: options.maxHeaderBytes,
    headersTimeout: HEADERS_TIMEOUT_MS,
    requestTimeout: 0,
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    noDelay: true,
  });
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    options.telemetry.connectionOpened(info.name);
    socket.once('close', () => {
      sockets.delete(socket);
      options.telemetry.connectionClosed(info.name);
    });
  });
  server.on('clientError', onClientError(options.maxHeaderBytes, options.logger));
  server.on('request', (req, res) => options.handle(req, res, info));
  const port = await listen(server, options.host, options.port);
  let closing = false;
  return {
    info,
    port,
    url: formatUrl('http', options.host, port),
    stopAccepting() {
      if (closing) return;
      closing = true;
      server.close();
      server.closeIdleConnections();
    },
    destroyAll() {
      for (const socket of sockets) socket.destroy();
    },
  };
}
