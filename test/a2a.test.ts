import assert from 'node:assert/strict';
import dns from 'node:dns';
import type { LookupFunction } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { Agent, buildConnector, fetch as undiciFetch } from 'undici';
import { TaskState, type AgentCard, type Message, type StreamResponse } from '@a2a-js/sdk';
import {
  ClientFactory,
  ClientFactoryOptions,
  DefaultAgentCardResolver,
  JsonRpcTransportFactory,
  RestTransportFactory,
  type Client,
} from '@a2a-js/sdk/client';
import { LegacyJsonRpcTransport } from '@a2a-js/sdk/compat/v0_3/client';
import { startTestGateway, type TestGateway } from './support/gateway.js';
import { JSONRPC_PATH, REST_PATH, startA2aAgent, textOf, userMessage, type A2aAgent, type SeenRequest } from './support/a2a-agent.js';

/*
 * "Done means" of the A2A work: an unmodified A2A agent built with the official @a2a-js/sdk server
 * and an unmodified client of the same SDK exchange SendMessage and a streaming
 * SendStreamingMessage (A2A v1.0 JSON-RPC, SSE) through the gateway, after discovering the agent's
 * card through the gateway; v0.3 peers (message/send, message/stream, /.well-known/agent.json)
 * pass through too. The SDK is only configured through its public options (a fetch
 * implementation where the transport needs one: TLS trust, or name resolution of *.localhost).
 */

type FetchLike = typeof fetch;

const EVENT_DEADLINE_MS = 5000;



/** The next stream event, or a clear failure if it does not arrive in time (the agent is holding the one after it). */
async function nextEvent<T>(iterator: AsyncIterator<T>, what: string): Promise<IteratorResult<T>> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what} did not reach the client within ${EVENT_DEADLINE_MS} ms although the agent sent it (buffered?)`)),
      EVENT_DEADLINE_MS,
    );
  });
  try {
    return await Promise.race([iterator.next(), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Runs the agent's gated `steps` task over `sendMessageStream`: the agent publishes each event only
 * after the client has received the previous one, so this passes only if every SSE event crosses
 * the gateway on its own.
 */
async function runGatedStream(client: Client, agent: A2aAgent, text: string): Promise<string[]> {
  const summary: string[] = [];
  const iterator = client.sendMessageStream(userMessage(text))[Symbol.asyncIterator]();
  try {
    for (let index = 0; ; index++) {
      const result = await nextEvent(iterator, `stream event #${index + 1}`);
      if (result.done) break;
      summary.push(describeEvent(result.value));
      agent.release();
    }
  } finally {
    await iterator.return?.(undefined);
  }
  return summary;
}

function describeEvent(event: StreamResponse): string {
  const payload = event.payload;
  switch (payload?.$case) {
    case 'task':
      return `task:${TaskState[payload.value.status?.state ?? TaskState.TASK_STATE_UNSPECIFIED]}`;
    case 'statusUpdate': {
      const state = TaskState[payload.value.status?.state ?? TaskState.TASK_STATE_UNSPECIFIED];
      const text = textOf(payload.value.status?.message);
      return text ? `status:${state}:${text}` : `status:${state}`;
    }
    case 'artifactUpdate':
      return `artifact:${textOf({ parts: payload.value.artifact?.parts ?? [] } as unknown as Message)}`;
    case 'message':
      return `message:${textOf(payload.value)}`;
    default:
      return 'empty';
  }
}

const EXPECTED_STREAM = (text: string) => [
  'task:TASK_STATE_SUBMITTED',
  'status:TASK_STATE_WORKING:step 1',
  'status:TASK_STATE_WORKING:step 2',
  'status:TASK_STATE_WORKING:step 3',
  `artifact:result: ${text}`,
  'status:TASK_STATE_COMPLETED',
];

function interfaceUrls(card: AgentCard | Record<string, unknown>): string[] {
  const raw = card as Record<string, unknown>;
  const urls: string[] = [];
  for (const entry of (raw.supportedInterfaces as Array<{ url: string }> | undefined) ?? []) urls.push(entry.url);
  if (typeof raw.url === 'string') urls.push(raw.url);
  for (const entry of (raw.additionalInterfaces as Array<{ url: string }> | undefined) ?? []) urls.push(entry.url);
  return urls;
}

/** The last request the agent saw on its JSON-RPC path with this JSON-RPC method. */
function lastRpc(agent: A2aAgent, rpcMethod: string): SeenRequest {
  const seen = agent.seen.filter((s) => s.path === JSONRPC_PATH && s.rpcMethod === rpcMethod).at(-1);
  assert.ok(seen, `the agent saw no ${rpcMethod} call (saw ${agent.seen.map((s) => `${s.method} ${s.path} ${s.rpcMethod ?? ''}`).join(', ')})`);
  return seen;
}

function assertGatewayHeaders(seen: SeenRequest, proto = 'http'): void {
  assert.match(String(seen.headers.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/, 'traceparent reached the agent');
  assert.match(String(seen.headers['x-dmsc-request-id']), /^\S+$/, 'x-dmsc-request-id reached the agent');
  assert.equal(seen.headers['x-forwarded-proto'], proto);
}

function factoryWith(fetchImpl?: FetchLike, extra: Partial<ClientFactoryOptions> = {}): ClientFactory {
  return new ClientFactory(
    ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
      ...(fetchImpl
        ? {
            cardResolver: new DefaultAgentCardResolver({ fetchImpl }),
            transports: [new JsonRpcTransportFactory({ fetchImpl }), new RestTransportFactory({ fetchImpl })],
          }
        : {}),
      ...extra,
    }),
  );
}

/** A v1.0 client with the SDK's v0.3 compatibility switched on (what a v0.3-capable SDK client is). */
function compatFactory(): ClientFactory {
  return new ClientFactory(
    ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
      cardResolver: new DefaultAgentCardResolver({ legacyCompat: { enabled: true } }),
      transports: [new JsonRpcTransportFactory({ legacyCompat: { enabled: true } })],
    }),
  );
}

describe('A2A through the gateway with the official @a2a-js/sdk', () => {
  let gw: TestGateway;
  let helper: A2aAgent; // v1.0 only
  let hybrid: A2aAgent; // v1.0 with the SDK's v0.3 compatibility on
  let legacy: A2aAgent; // v0.3 only, card at /.well-known/agent.json
  let doomed: A2aAgent; // goes down mid-test
  let dying: A2aAgent; // drops its connections in the middle of a stream
  let strict: A2aAgent; // v1.0 with compat on but no v0.3 interface: answers 400 to a card GET without A2A-Version

  before(async () => {
    [helper, hybrid, legacy, doomed, dying, strict] = await Promise.all([
      startA2aAgent('helper', 'v1'),
      startA2aAgent('hybrid', 'v1+compat'),
      startA2aAgent('legacy', 'v0.3'),
      startA2aAgent('doomed', 'v1'),
      startA2aAgent('dying', 'v1'),
      startA2aAgent('strict', 'v1+compat', { declareV03Interface: false }),
    ]);
    gw = await startTestGateway({
      // No active health checks: the down agent's card stays known and nothing polls the agents.
      healthCheck: { enabled: false },
      tenants: [
        {
          name: 'acme',
          agents: [
            { name: 'helper', endpoints: [helper.url] },
            { name: 'hybrid', endpoints: [hybrid.url] },
            { name: 'legacy', endpoints: [legacy.url] },
            { name: 'doomed', endpoints: [doomed.url] },
            { name: 'dying', endpoints: [dying.url] },
            { name: 'strict', endpoints: [strict.url] },
          ],
        },
      ],
    }, { devClientMayCall: true });
  });
  after(async () => {
    await gw?.close();
    await Promise.all([helper, hybrid, legacy, doomed, dying, strict].map((agent) => agent?.close()));
  });

  describe('v1.0 over the plaintext listener, path form', () => {
    const base = () => `${gw.plainUrl}/agents/acme/helper`;
    let card: AgentCard;
    let client: Client;

    it('discovers the Agent Card through the gateway, every interface URL pointing at the gateway', async () => {
      card = await new DefaultAgentCardResolver().resolve(`${base()}/.well-known/agent-card.json`, '');
      assert.equal(card.name, 'helper');
      assert.deepEqual(
        card.supportedInterfaces.map((i) => [i.protocolBinding, i.url]),
        [
          ['JSONRPC', `${base()}${JSONRPC_PATH}`],
          ['HTTP+JSON', `${base()}${REST_PATH}`],
        ],
      );
      for (const url of interfaceUrls(card)) assert.ok(!url.includes(`:${helper.port}`), `${url} must not point at the agent`);
      assert.deepEqual(
        card.skills.map((s) => s.id),
        ['echo'],
      );
      client = await factoryWith().createFromAgentCard(card);
      assert.equal(client.protocolVersion, '1.0');
    });

    it('SendMessage: the agent answers through the gateway and sees trace context and a request id', async () => {
      const before = helper.seen.length;
      const answer = await client.sendMessage(userMessage('hello through the gateway'));
      assert.ok('messageId' in answer, 'a Message answer');
      assert.equal(textOf(answer as Message), 'echo: hello through the gateway');
      const seen = lastRpc(helper, 'SendMessage');
      assert.ok(helper.seen.indexOf(seen) >= before);
      assertGatewayHeaders(seen);
      assert.equal(seen.headers['a2a-version'], '1.0', 'the client\'s A2A-Version header passes through');
    });

    it('SendStreamingMessage: every SSE event reaches the client before the agent sends the next', async () => {
      assert.deepEqual(await runGatedStream(client, helper, 'steps plain'), EXPECTED_STREAM('steps plain'));
      const seen = lastRpc(helper, 'SendStreamingMessage');
      assertGatewayHeaders(seen);
      assert.match(String(seen.headers.accept), /text\/event-stream/);
    });

    it('createFromUrl with the gateway card URL works the same, and so does the HTTP+JSON (REST) binding', async () => {
      const viaUrl = await factoryWith().createFromUrl(`${base()}/.well-known/agent-card.json`, '');
      assert.equal(textOf((await viaUrl.sendMessage(userMessage('again'))) as Message), 'echo: again');

      const rest = await factoryWith(undefined, { preferredTransports: ['HTTP+JSON'] }).createFromAgentCard(card);
      assert.equal(rest.transport.protocolName, 'HTTP+JSON');
      assert.equal(textOf((await rest.sendMessage(userMessage('over rest'))) as Message), 'echo: over rest');
      assert.deepEqual(await runGatedStream(rest, helper, 'steps rest'), EXPECTED_STREAM('steps rest'));
      const restCalls = helper.seen.filter((s) => s.path.startsWith(`${REST_PATH}/`));
      assert.ok(restCalls.length >= 2, 'the REST calls reached the agent under its REST path');
      for (const seen of restCalls) assertGatewayHeaders(seen);
    });
  });

  describe('v1.0 over the plaintext listener, host form <agent>.<tenant>.dmsc.localhost', () => {
    // *.localhost is loopback (RFC 6761): curl and browsers know it, but getaddrinfo here does not,
    // so the client's fetch gets a resolver that does what curl does. Nothing else is changed.
    const loopbackLookup: LookupFunction = (hostname, options, callback) => {
      if (hostname === 'localhost' || hostname.endsWith('.localhost')) {
        if ((options as dns.LookupOptions).all) (callback as any)(null, [{ address: '127.0.0.1', family: 4 }]);
        else callback(null, '127.0.0.1', 4);
        return;
      }
      dns.lookup(hostname, options, callback);
    };
    let dispatcher: Agent;
    let fetchImpl: FetchLike;
    before(() => {
      dispatcher = new Agent({ connect: { lookup: loopbackLookup } });
      fetchImpl = ((input: any, init?: any) => undiciFetch(input, { ...init, dispatcher })) as unknown as FetchLike;
    });
    after(async () => {
      await dispatcher?.close();
    });

    it('discovers the card at the well-known path of the agent host and talks through it', async () => {
      const origin = `http://helper.acme.dmsc.localhost:${new URL(gw.plainUrl).port}`;
      const card = await new DefaultAgentCardResolver({ fetchImpl }).resolve(origin);
      assert.deepEqual(
        interfaceUrls(card),
        [`${origin}${JSONRPC_PATH}`, `${origin}${REST_PATH}`],
        'interface URLs keep the host form',
      );
      const client = await factoryWith(fetchImpl).createFromUrl(origin);
      assert.equal(textOf((await client.sendMessage(userMessage('by host'))) as Message), 'echo: by host');
      assertGatewayHeaders(lastRpc(helper, 'SendMessage'));
      assert.deepEqual(await runGatedStream(client, helper, 'steps host'), EXPECTED_STREAM('steps host'));
      assert.equal(lastRpc(helper, 'SendStreamingMessage').headers['x-forwarded-host'], `helper.acme.dmsc.localhost:${new URL(gw.plainUrl).port}`);
    });
  });

  describe('v1.0 over the TLS listener (TLS 1.3, HTTP/2 via ALPN)', () => {
    const alpn: string[] = [];
    let dispatcher: Agent;
    let fetchImpl: FetchLike;
    before(() => {
      // Trust the gateway's development CA and offer h2; record what ALPN settled on.
      const connector = buildConnector({ ca: gw.caCert, cert: gw.clientCert, key: gw.clientKey, allowH2: true });
      dispatcher = new Agent({
        allowH2: true,
        connect: (options, callback) =>
          connector(options, (err, socket) => {
            if (socket) alpn.push(String((socket as TLSSocket).alpnProtocol));
            (callback as (e: Error | null, s: typeof socket | null) => void)(err, socket);
          }),
      });
      fetchImpl = ((input: any, init?: any) => undiciFetch(input, { ...init, dispatcher })) as unknown as FetchLike;
    });
    after(async () => {
      await dispatcher?.close();
    });

    it('discovers the card, sends and streams over HTTP/2 through the gateway', async () => {
      const base = `${gw.tlsUrl}/agents/acme/helper`;
      const card = await new DefaultAgentCardResolver({ fetchImpl }).resolve(`${base}/.well-known/agent-card.json`, '');
      assert.deepEqual(interfaceUrls(card), [`${base}${JSONRPC_PATH}`, `${base}${REST_PATH}`]);
      const client = await factoryWith(fetchImpl).createFromAgentCard(card);
      assert.equal(textOf((await client.sendMessage(userMessage('over h2'))) as Message), 'echo: over h2');
      assertGatewayHeaders(lastRpc(helper, 'SendMessage'), 'https');
      assert.deepEqual(await runGatedStream(client, helper, 'steps h2'), EXPECTED_STREAM('steps h2'));
      assertGatewayHeaders(lastRpc(helper, 'SendStreamingMessage'), 'https');
      assert.ok(alpn.length > 0 && alpn.every((p) => p === 'h2'), `HTTP/2 was negotiated (ALPN: ${alpn.join(',')})`);
    });
  });

  describe('A2A v0.3 peers', () => {
    it('a v0.3 agent (card only at /.well-known/agent.json) is discovered at both well-known paths, URLs rewritten', async () => {
      const base = `${gw.plainUrl}/agents/acme/legacy`;
      for (const path of ['/.well-known/agent.json', '/.well-known/agent-card.json']) {
        const res = await fetch(base + path);
        assert.equal(res.status, 200, path);
        const card = (await res.json()) as Record<string, unknown>;
        assert.equal(card.protocolVersion, '0.3');
        assert.equal(card.url, `${base}${JSONRPC_PATH}`);
        assert.equal(card.preferredTransport, 'JSONRPC');
        for (const url of interfaceUrls(card)) assert.ok(url.startsWith(`${base}/`), `${url} points at the gateway`);
      }
      assert.ok(
        legacy.seen.some((s) => s.method === 'GET' && s.path === '/.well-known/agent.json'),
        'the gateway fell back to /.well-known/agent.json',
      );
    });

    it('a v0.3 client exchanges message/send and message/stream with the v0.3 agent', async () => {
      const base = `${gw.plainUrl}/agents/acme/legacy`;
      const client = await compatFactory().createFromUrl(`${base}/.well-known/agent.json`, '');
      assert.equal(client.protocolVersion, '0.3', 'the client speaks v0.3');
      assert.equal(textOf((await client.sendMessage(userMessage('old hello'))) as Message), 'echo: old hello');
      assertGatewayHeaders(lastRpc(legacy, 'message/send'));
      assert.deepEqual(await runGatedStream(client, legacy, 'steps old'), EXPECTED_STREAM('steps old'));
      assertGatewayHeaders(lastRpc(legacy, 'message/stream'));
    });

    it('an agent serving v1.0 and v0.3 on the same URLs answers both kinds of client through the gateway', async () => {
      const base = `${gw.plainUrl}/agents/acme/hybrid`;
      const cardUrl = `${base}/.well-known/agent-card.json`;

      // The gateway asked the agent for its card without A2A-Version (= 0.3 by §3.6.2), so it holds
      // the SDK's hybrid card: v0.3 top-level `url` plus the v1.0 `supportedInterfaces`. Both views
      // must point at the gateway.
      const card = await new DefaultAgentCardResolver().resolve(cardUrl, '');
      for (const url of interfaceUrls(card)) assert.ok(url.startsWith(`${base}/`), `${url} points at the gateway`);
      const modern = await factoryWith().createFromAgentCard(card);
      assert.equal(modern.protocolVersion, '1.0');
      assert.equal(textOf((await modern.sendMessage(userMessage('new'))) as Message), 'echo: new');
      assert.deepEqual(await runGatedStream(modern, hybrid, 'steps new'), EXPECTED_STREAM('steps new'));

      // A v0.3 client reads the card's top-level `url` and speaks v0.3 there.
      const raw = (await (await fetch(cardUrl, { headers: { 'a2a-version': '0.3' } })).json()) as { url: string };
      assert.equal(raw.url, `${base}${JSONRPC_PATH}`);
      const old = new LegacyJsonRpcTransport({ endpoint: raw.url });
      const answer = await old.sendMessage(userMessage('old'));
      assert.equal(textOf(answer as Message), 'echo: old');
      assertGatewayHeaders(lastRpc(hybrid, 'message/send'));
      assertGatewayHeaders(lastRpc(hybrid, 'SendMessage'));
      assertGatewayHeaders(lastRpc(hybrid, 'SendStreamingMessage'));
    });
  });

  describe('errors', () => {
    it('when the agent is down, JSON-RPC calls get a JSON-RPC error object the SDK client surfaces', async () => {
      const base = `${gw.plainUrl}/agents/acme/doomed`;
      const client = await factoryWith().createFromUrl(`${base}/.well-known/agent-card.json`, '');
      assert.equal(textOf((await client.sendMessage(userMessage('still up'))) as Message), 'echo: still up');
      await doomed.close();

      // The wire shape.
      const res = await fetch(`${base}${JSONRPC_PATH}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'a2a-version': '1.0' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'SendMessage', params: {} }),
      });
      assert.ok(res.status === 502 || res.status === 503, `status ${res.status}`);
      assert.match(String(res.headers.get('content-type')), /application\/json/);
      const body = (await res.json()) as { jsonrpc: string; error: { code: number; message: string; data: { code: string } } };
      assert.equal(body.jsonrpc, '2.0');
      assert.equal(typeof body.error.code, 'number');
      assert.match(body.error.data.code, /^(upstream_unavailable|no_healthy_endpoint)$/);

      // What the SDK client makes of it: a JSON-RPC error, not an HTTP/JSON mismatch.
      const isJsonRpcError = (err: unknown) => {
        const e = err as { name?: string; envelopeCode?: number; data?: { code?: string }; message?: string };
        assert.equal(e.name, 'JsonRpcTransportError', `got ${e.name}: ${e.message}`);
        assert.equal(typeof e.envelopeCode, 'number');
        assert.match(String(e.data?.code), /^(upstream_unavailable|no_healthy_endpoint)$/);
        return true;
      };
      await assert.rejects(client.sendMessage(userMessage('anyone?')), isJsonRpcError);
      await assert.rejects(async () => {
        for await (const _ of client.sendMessageStream(userMessage('steps anyone?'))) {
          assert.fail('no event expected');
        }
      }, isJsonRpcError);
    });

    it('when the agent drops a stream midway, the SDK client sees an error, not a complete-looking stream', async () => {
      const client = await factoryWith().createFromUrl(`${gw.plainUrl}/agents/acme/dying/.well-known/agent-card.json`, '');
      const iterator = client.sendMessageStream(userMessage('steps then die'))[Symbol.asyncIterator]();
      const first = await nextEvent(iterator, 'the task event');
      assert.equal(describeEvent(first.value as StreamResponse), 'task:TASK_STATE_SUBMITTED');
      dying.release();
      const second = await nextEvent(iterator, 'the first status update');
      assert.equal(describeEvent(second.value as StreamResponse), 'status:TASK_STATE_WORKING:step 1');
      dying.server.closeAllConnections(); // the agent's side of the stream is gone mid-answer
      await assert.rejects(async () => {
        for (;;) {
          const next = await nextEvent(iterator, 'the end of the broken stream');
          if (next.done) assert.fail('the stream ended as if complete although the agent dropped it');
        }
      }, (err: Error) => !/ended as if complete|did not reach the client/.test(err.message));
    });

    it('never hands a client an Agent Card whose URLs point past the gateway', async () => {
        const base = `${gw.plainUrl}/agents/acme/strict`;
        const res = await fetch(`${base}/.well-known/agent-card.json`, { headers: { 'a2a-version': '1.0' } });
        const text = await res.text();
        if (res.status !== 200) return; // refusing is acceptable; leaking the agent's own URLs is not
        for (const url of interfaceUrls(JSON.parse(text) as Record<string, unknown>)) {
          assert.ok(url.startsWith(`${base}/`), `${url} must point at the gateway, not at the agent`);
        }
    });
  });
});
