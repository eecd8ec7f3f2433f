import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TaskState, type Message, type StreamResponse, type Task } from '@a2a-js/sdk';
import { ClientFactory, ClientFactoryOptions, DefaultAgentCardResolver, JsonRpcTransportFactory, type Client } from '@a2a-js/sdk/client';
import { startTestGateway, waitForSkills, type TestGateway } from './support/gateway.js';
import { JSONRPC_PATH, startA2aAgent, textOf, userMessage, type A2aAgent } from './support/a2a-agent.js';
import { startUpstream, type Upstream } from './support/upstream.js';

/*
 * The A2A version bridge: unmodified @a2a-js/sdk clients of one version reach, through the tenant's
 * card, unmodified @a2a-js/sdk agents that speak only the other version. privacy speaks only v1.0;
 * billing speaks only v0.3.
 */
describe('A2A v0.3 and v1.0 bridged between callers and agents', () => {
  let gw: TestGateway;
  let privacy: A2aAgent;
  let billing: A2aAgent;
  /** A second v1.0-only agent with privacy's skill, killed by the last test. */
  let privacy2: A2aAgent;
  let v1Client: Client;
  let v03Client: Client;
  let tenantBase: string;

  /** The JSON-RPC methods an agent received since `from`. */
  const methodsSeen = (agent: A2aAgent, from: number) => agent.seen.slice(from).filter((seen) => seen.path === JSONRPC_PATH).map((seen) => seen.rpcMethod);

  before(async () => {
    privacy = await startA2aAgent('privacy', 'v1', {
      skills: [{ id: 'erasure', name: 'GDPR erasure requests', description: 'Erase or export the personal data held about a person under GDPR', tags: ['privacy'] }],
    });
    privacy2 = await startA2aAgent('privacy-2', 'v1', {
      skills: [{ id: 'erasure', name: 'GDPR erasure requests', description: 'Erase or export the personal data held about a person under GDPR', tags: ['privacy'] }],
    });
    billing = await startA2aAgent('billing', 'v0.3', {
      skills: [{ id: 'invoices', name: 'Invoices and refunds', description: 'Explains invoices, double charges and refunds', tags: ['billing'] }],
    });
    gw = await startTestGateway({
      healthCheck: { enabled: false },
      tenants: [
        {
          name: 'acme',
          agents: [
            { name: 'privacy', endpoints: [privacy.url] },
            { name: 'privacy-2', endpoints: [privacy2.url] },
            { name: 'billing', endpoints: [billing.url] },
          ],
        },
      ],
    });
    tenantBase = `${gw.plainUrl}/tenants/acme`;
    await waitForSkills(gw, 'acme', 3);
    v1Client = await new ClientFactory(ClientFactoryOptions.default).createFromUrl(`${tenantBase}/.well-known/agent-card.json`, '');
    v03Client = await new ClientFactory(
      ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
        cardResolver: new DefaultAgentCardResolver({ legacyCompat: { enabled: true } }),
        transports: [new JsonRpcTransportFactory({ legacyCompat: { enabled: true } })],
        preferredTransports: ['JSONRPC'],
      }),
    ).createFromUrl(`${tenantBase}/.well-known/agent.json`, '');
  });
  after(async () => {
    await gw?.close();
    await privacy?.close();
    await privacy2?.close();
    await billing?.close();
  });

  it('the agents speak one version each (the cards the registry read)', async () => {
    const cardOf = async (name: string) => {
      const view = await gw.admin('GET', `/admin/v1/tenants/acme/agents/${name}`);
      assert.equal(view.status, 200);
      const res = await fetch(view.body.card.sourceUrl as string);
      return (await res.json()) as { protocolVersion?: string; supportedInterfaces?: Array<{ protocolVersion: string }> };
    };
    const versions = (card: { protocolVersion?: string; supportedInterfaces?: Array<{ protocolVersion: string }> }) =>
      [...new Set(card.supportedInterfaces?.map((i) => i.protocolVersion) ?? [card.protocolVersion])];
    assert.deepEqual(versions(await cardOf('privacy')), ['1.0']);
    assert.deepEqual(versions(await cardOf('billing')), ['0.3']);
  });

  it('a v0.3 client (message/send) reaches a v1.0-only agent, which gets SendMessage', async () => {
    const from = [privacy.seen.length, privacy2.seen.length];
    const answer = await v03Client.sendMessage(userMessage('Please erase my personal data under GDPR'));
    assert.equal(textOf(answer as Message), 'echo: Please erase my personal data under GDPR');
    assert.deepEqual([...methodsSeen(privacy, from[0]!), ...methodsSeen(privacy2, from[1]!)], ['SendMessage']);
  });

  it('a v1.0 client (SendMessage) reaches the v0.3-only agent, which gets message/send', async () => {
    const from = billing.seen.length;
    const answer = await v1Client.sendMessage(userMessage('I was charged twice on my invoice, I want a refund'));
    assert.equal(textOf(answer as Message), 'echo: I was charged twice on my invoice, I want a refund');
    assert.deepEqual(methodsSeen(billing, from), ['message/send']);
  });

  for (const [label, client, candidates, streamMethod, getMethod] of [
    ['v0.3 client, v1.0 agent', () => v03Client, () => [privacy, privacy2], 'SendStreamingMessage', 'GetTask'],
    ['v1.0 client, v0.3 agent', () => v1Client, () => [billing], 'message/stream', 'tasks/get'],
  ] as const) {
    it(`streams every event one by one across versions, and a follow-up reaches the task's owner (${label})`, async () => {
      const agents = candidates();
      const from = agents.map((agent) => agent.seen.length);
      const question = agents[0] === billing ? 'steps: refund the double charge on my invoice' : 'steps: erase my personal data under GDPR';
      /** The agent that took the stream (the privacy agents tie), known once it has answered. */
      let target: A2aAgent | undefined;
      const events: StreamResponse[] = [];
      // The agent publishes its next event only when released: each event must reach the client on its own.
      for await (const event of client().sendMessageStream(userMessage(question))) {
        events.push(event);
        target ??= agents.find((agent, i) => methodsSeen(agent, from[i]!).length > 0);
        target!.release();
      }
      const first = events[0]!.payload;
      assert.equal(first?.$case, 'task');
      const last = events.at(-1)!.payload;
      assert.equal(last?.$case === 'statusUpdate' ? last.value.status?.state : undefined, TaskState.TASK_STATE_COMPLETED);
      assert.ok(events.some((event) => event.payload?.$case === 'artifactUpdate'), 'the artifact came through');
      assert.equal(events.length, 6, 'task, three working updates, the artifact, completed');

      const task = (first as { $case: 'task'; value: Task }).value;
      const fetched = await client().getTask({ tenant: '', id: task.id, historyLength: undefined });
      assert.equal(fetched.id, task.id);
      assert.equal(fetched.status?.state, TaskState.TASK_STATE_COMPLETED);
      assert.deepEqual(methodsSeen(target!, from[agents.indexOf(target!)]!), [streamMethod, getMethod]);
      for (const other of agents) if (other !== target) assert.deepEqual(methodsSeen(other, from[agents.indexOf(other)]!), []);
    });
  }

  it("the agent's errors come back as errors of the caller's version", async () => {
    const res = await fetch(`${tenantBase}/a2a`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 'x', method: 'tasks/get', params: { id: 'no-such-task' } }),
    });
    const body = (await res.json()) as { id: string; error?: { code: number } };
    assert.equal(body.id, 'x');
    assert.equal(body.error?.code, -32001, 'TaskNotFound');
  });

  it('a bridged call fails over when the chosen agent is gone; the caller sees no failure', async () => {
    const question = 'Please delete all my personal data under GDPR';
    const probe = [privacy.seen.length, privacy2.seen.length];
    await v03Client.sendMessage(userMessage(question));
    const chosen = methodsSeen(privacy, probe[0]!).length > 0 ? privacy : privacy2;
    const survivor = chosen === privacy ? privacy2 : privacy;
    await chosen.close();
    const from = survivor.seen.length;
    for (let i = 0; i < 6; i++) {
      const answer = await v03Client.sendMessage(userMessage(`${question} (${i})`));
      assert.equal(textOf(answer as Message), `echo: ${question} (${i})`);
    }
    assert.deepEqual(methodsSeen(survivor, from), Array(6).fill('SendMessage'));
  });
});

describe('the A2A version bridge keeps its limits', () => {
  let gw: TestGateway;
  let agent: Upstream;

  before(async () => {
    // A v1.0-only agent: 'big' gets an answer larger than the gateway's limit, 'hang' no answer at all.
    let url = '';
    agent = await startUpstream('limits', (req, res) => {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
      req.on('end', () => {
        if (req.url === '/.well-known/agent-card.json') {
          res.writeHead(200, { 'content-type': 'application/json' }).end(
            JSON.stringify({
              name: 'limits',
              description: 'an agent at the limits',
              version: '1.0.0',
              supportedInterfaces: [{ url: `${url}/a2a`, protocolBinding: 'JSONRPC', protocolVersion: '1.0' }],
              capabilities: { streaming: true },
              defaultInputModes: ['text/plain'],
              defaultOutputModes: ['text/plain'],
              skills: [{ id: 'limits', name: 'Limits', description: 'answers big questions and hangs on others', tags: [] }],
            }),
          );
          return;
        }
        const call = JSON.parse(body) as { id: number; params: { message: { parts: Array<{ text?: string }> } } };
        const text = call.params.message.parts[0]?.text ?? '';
        if (text.includes('hang')) return;
        const answer = text.includes('big') ? 'x'.repeat(64 * 1024) : 'small';
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ jsonrpc: '2.0', id: call.id, result: { message: { messageId: 'r', role: 'ROLE_AGENT', parts: [{ text: answer }] } } }));
      });
    });
    url = agent.url;
    gw = await startTestGateway({
      healthCheck: { enabled: false },
      limits: { maxBodyBytes: 16 * 1024 },
      timeouts: { firstByteMs: 300 },
      tenants: [{ name: 'acme', agents: [{ name: 'limits', endpoints: [agent.url] }] }],
    });
    await waitForSkills(gw, 'acme', 1);
  });
  after(async () => {
    await gw?.close();
    await agent?.close();
  });

  const send = async (text: string) => {
    const res = await fetch(`${gw.plainUrl}/tenants/acme/a2a`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 5, method: 'message/send', params: { message: { kind: 'message', messageId: 'm', role: 'user', parts: [{ kind: 'text', text }] } } }),
    });
    return { status: res.status, body: (await res.json()) as { id: number; result?: { parts: Array<{ text: string }> }; error?: { code: number; message: string } } };
  };

  it('answers within the limit as usual', async () => {
    const { body } = await send('a small limits question');
    assert.equal(body.result?.parts[0]?.text, 'small');
  });

  it('an answer larger than limits.maxBodyBytes is an error, not buffered', async () => {
    const { body } = await send('a big limits question');
    assert.equal(body.id, 5);
    assert.equal(body.result, undefined);
    assert.match(body.error?.message ?? '', /exceeds 16384 bytes/, JSON.stringify(body).slice(0, 200));
  });

  it('an agent that does not answer within timeouts.firstByteMs gets a 504 JSON-RPC error', async () => {
    const started = performance.now();
    const { status, body } = await send('a limits question that will hang');
    assert.ok(performance.now() - started < 5_000);
    assert.equal(status, 504);
    assert.equal(body.id, 5);
    assert.match(body.error?.message ?? '', /first byte|timed out|timeout/i);
  });
});
