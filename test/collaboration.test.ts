import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import path from 'node:path';
import { TaskState, type Message, type StreamResponse, type Task } from '@a2a-js/sdk';
import { ClientFactory, ClientFactoryOptions, DefaultAgentCardResolver, JsonRpcTransportFactory, type Client } from '@a2a-js/sdk/client';
import { startTestGateway, TEST_ADMIN_TOKEN, waitForSkills, type TestGateway } from './support/gateway.js';
import { JSONRPC_PATH, startA2aAgent, textOf, userMessage, type A2aAgent, type SkillInput } from './support/a2a-agent.js';
import { dmsc } from './support/cli.js';

/*
 * "Done means" of the collaboration work: a tenant of unmodified @a2a-js/sdk agents with different
 * specialities, reached by an unmodified @a2a-js/sdk client through the tenant's own Agent Card;
 * each natural-language question lands on the right specialist (SendMessage and
 * SendStreamingMessage), follow-ups on a task reach the agent that owns it, the choice is explained
 * and audited, and killing the chosen specialist fails over to another agent with the same skill
 * without the caller seeing a failure.
 */

const SPECIALISTS: Record<string, { description: string; skills: SkillInput[] }> = {
  privacy: {
    description: 'Data protection officer assistant',
    skills: [
      {
        id: 'data-subject-requests',
        name: 'GDPR data subject requests',
        description: 'Erase, delete or export the personal data held about a person; right to be forgotten, access requests and consent withdrawal under GDPR.',
        tags: ['privacy', 'gdpr', 'compliance'],
        examples: ['Delete all the personal data you hold about me', 'I want a copy of my data under GDPR'],
      },
    ],
  },
  billing: {
    description: 'Accounts receivable assistant',
    skills: [
      {
        id: 'invoices',
        name: 'Invoices and payments',
        description: 'Explains invoices, double charges, failed payments and refunds; sends copies of past invoices.',
        tags: ['finance', 'billing'],
        examples: ['Why was my card charged twice?', 'Send me last month’s invoice'],
      },
    ],
  },
  travel: {
    description: 'Corporate travel desk',
    skills: [
      {
        id: 'bookings',
        name: 'Flight and hotel booking',
        description: 'Books flights, trains and hotel rooms, and changes or cancels trips.',
        tags: ['travel'],
        examples: ['Book a flight to Berlin next Monday', 'Find me a hotel near the office'],
      },
    ],
  },
  weather: {
    description: 'Weather service',
    skills: [
      {
        id: 'forecast',
        name: 'Weather forecast',
        description: 'Forecasts rain, temperature, wind and storms for a city and day.',
        tags: ['weather', 'low-latency'],
        examples: ['Will it rain tomorrow in Lyon?', 'How cold will it be this weekend?'],
      },
    ],
  },
  translation: {
    description: 'Translation service',
    skills: [
      {
        id: 'translate',
        name: 'Translation',
        description: 'Translates text and documents between English, Spanish, French and German.',
        tags: ['language'],
        examples: ['Translate this paragraph into German'],
      },
    ],
  },
  legal: {
    description: 'Legal counsel assistant',
    skills: [
      {
        id: 'contracts',
        name: 'Contract review',
        description: 'Reviews contracts and their clauses: termination, liability, NDAs and supplier agreements.',
        tags: ['legal'],
        examples: ['Check the liability clause of this NDA'],
      },
    ],
  },
  hr: {
    description: 'People team assistant',
    skills: [
      {
        id: 'leave',
        name: 'Leave and payroll',
        description: 'Answers questions on vacation days, sick leave, payroll and benefits.',
        tags: ['hr'],
        examples: ['How many holidays do I have left?'],
      },
    ],
  },
};

const QUESTIONS: Array<[string, string[]]> = [
  ['How do I get my personal data erased under GDPR?', ['privacy', 'privacy-2']],
  ['I was charged twice on my last invoice, can I get a refund?', ['billing']],
  ['Book me a flight to Madrid on Friday', ['travel']],
  ['Is it going to rain in Paris tomorrow?', ['weather']],
  ['Could you translate this email into Spanish?', ['translation']],
  ['Please review the termination clause in this supplier contract', ['legal']],
  ['How many vacation days do I have left this year?', ['hr']],
];



/** Which specialists received a JSON-RPC call with this method since `marks` (seen counts per agent). */
function receivers(agents: Map<string, A2aAgent>, marks: Map<string, number>, rpcMethod: string): string[] {
  const names: string[] = [];
  for (const [name, agent] of agents) {
    if (agent.seen.slice(marks.get(name) ?? 0).some((seen) => seen.path === JSONRPC_PATH && seen.rpcMethod === rpcMethod)) names.push(name);
  }
  return names;
}

const markAll = (agents: Map<string, A2aAgent>) => new Map([...agents].map(([name, agent]) => [name, agent.seen.length]));

describe('the tenant as one A2A agent: intent routing to specialists', () => {
  let gw: TestGateway;
  const agents = new Map<string, A2aAgent>();
  let client: Client;
  let tenantBase: string;

  before(async () => {
    const entries = [...Object.entries(SPECIALISTS), ['privacy-2', SPECIALISTS.privacy!] as const];
    for (const [name, spec] of entries) {
      agents.set(name, await startA2aAgent(name, 'v1+compat', { skills: spec.skills, description: spec.description }));
    }
    gw = await startTestGateway({
      // No active health checks: the gateway learns that an agent died from the failed delegation itself.
      healthCheck: { enabled: false },
      routing: { intent: { jsonField: '/input/question' } },
      tenants: [
        {
          name: 'acme',
          agents: [...agents].map(([name, agent]) => ({ name, endpoints: [agent.url] })),
          // acme's agents may call out to globex and initech; only globex lets them in.
          policy: { rules: [{ name: 'out', to: { tenant: 'globex' } }, { name: 'out-2', to: { tenant: 'initech' } }] },
        },
        {
          name: 'globex',
          policy: { rules: [{ name: 'acme-in', from: { tenant: 'acme' } }] },
          agents: [{ name: 'auditor', endpoints: ['http://127.0.0.1:9'], skills: [{ id: 'sox-audit', name: 'SOX audit', description: 'Audits financial controls for SOX compliance', tags: ['finance'] }] }],
        },
        {
          name: 'initech',
          agents: [{ name: 'controller', endpoints: ['http://127.0.0.1:9'], skills: [{ id: 'sox-review', name: 'SOX review', description: 'Reviews financial controls for SOX compliance', tags: ['finance'] }] }],
        },
      ],
    });
    tenantBase = `${gw.plainUrl}/tenants/acme`;
    await waitForSkills(gw, 'acme', agents.size);
  });
  after(async () => {
    await gw?.close();
    await Promise.all([...agents.values()].map((agent) => agent.close()));
  });

  it("serves the tenant's Agent Card: one JSON-RPC interface on the gateway, every specialist's skills", async () => {
    const card = await new DefaultAgentCardResolver().resolve(`${tenantBase}/.well-known/agent-card.json`, '');
    assert.equal(card.name, 'acme');
    assert.deepEqual(
      card.supportedInterfaces.map((i) => [i.protocolBinding, i.url, i.protocolVersion]),
      [
        ['JSONRPC', `${tenantBase}/a2a`, '1.0'],
        ['JSONRPC', `${tenantBase}/a2a`, '0.3'],
      ],
    );
    const ids = card.skills.map((skill) => skill.id).sort();
    assert.ok(ids.includes('privacy.data-subject-requests') && ids.includes('billing.invoices') && ids.includes('hr.leave'), ids.join(', '));
    client = await new ClientFactory(ClientFactoryOptions.default).createFromAgentCard(card);

    // Each specialist's card is kept with a digest (for gateway-to-gateway sync) and its skills.
    const weather = await gw.admin('GET', '/admin/v1/tenants/acme/agents/weather');
    assert.match(weather.body.card.digest, /^[0-9a-f]{64}$/);
    assert.deepEqual(weather.body.skills.map((skill: { id: string }) => skill.id), ['forecast']);
  });

  for (const [question, expected] of QUESTIONS) {
    it(`SendMessage "${question}" -> ${expected.join(' or ')}`, async () => {
      const marks = markAll(agents);
      const answer = await client.sendMessage(userMessage(question));
      assert.ok('messageId' in answer, 'the specialist answered with a message');
      assert.equal(textOf(answer as Message), `echo: ${question}`);
      const got = receivers(agents, marks, 'SendMessage');
      assert.equal(got.length, 1, `exactly one specialist got it (got ${got.join(', ')})`);
      assert.ok(expected.includes(got[0]!), `"${question}" went to ${got[0]}, expected ${expected.join(' or ')}`);
    });
  }

  it('answers x-dmsc-routed-to and audits the choice with its reasons', async () => {
    const res = await fetch(`${tenantBase}/a2a`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'a2a-version': '1.0' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'SendMessage', params: { message: { messageId: 'm1', role: 'ROLE_USER', parts: [{ text: 'What is the weather forecast for Oslo on Sunday?' }] } } }),
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-dmsc-routed-to'), 'acme/weather');
    const body = (await res.json()) as { id: number; result: { message: unknown } };
    assert.equal(body.id, 7);
    const requestId = res.headers.get('x-dmsc-request-id')!;
    const records = (await gw.admin('GET', '/admin/v1/audit?tenant=acme&limit=1000')).body.records as Array<{ requestId?: string; detail?: { route?: { to: string; via: string; skill: string } } }>;
    const record = records.find((r) => r.requestId === requestId);
    assert.equal(record?.detail?.route?.to, 'acme/weather');
    assert.equal(record?.detail?.route?.via, 'intent');
    assert.equal(record?.detail?.route?.skill, 'forecast');
  });

  it('explains a decision: Admin API and `dmsc route explain`', async () => {
    const res = await gw.admin('GET', `/admin/v1/route/explain?tenant=acme&q=${encodeURIComponent('refund for a double charge on my invoice')}`);
    assert.equal(res.status, 200);
    assert.equal(res.body.decision.agent, 'acme/billing');
    assert.equal(res.body.candidates[0].agent, 'acme/billing');
    assert.ok(res.body.candidates[0].matched.fields, 'the matched words are named');
    assert.equal(typeof res.body.candidates[0].load, 'number');

    const cli = await dmsc(['route', 'explain', '--tenant', 'acme', 'is a storm coming to Geneva this week', '--admin-url', gw.adminUrl, '--token', TEST_ADMIN_TOKEN]);
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, /acme\/weather/);
  });

  it('a question no skill matches gets a JSON-RPC error naming the closest skills', async () => {
    const res = await fetch(`${tenantBase}/a2a`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 'q', method: 'SendMessage', params: { message: { messageId: 'm2', role: 'ROLE_USER', parts: [{ text: 'zxqv plorb fnord' }] } } }),
    });
    const body = (await res.json()) as { id: string; error: { code: number; message: string; data: { code: string } } };
    assert.equal(body.id, 'q');
    assert.equal(body.error.data.code, 'no_capable_agent');
    assert.match(body.error.message, /no agent of tenant "acme" matches/);
  });

  it('SendStreamingMessage lands on the specialist, streams every event, and GetTask reaches the same agent', async () => {
    const weather = agents.get('weather')!;
    const marks = markAll(agents);
    const events: StreamResponse[] = [];
    for await (const event of client.sendMessageStream(userMessage('steps: will it rain in Paris tomorrow?'))) {
      events.push(event);
      weather.release();
    }
    assert.deepEqual(receivers(agents, marks, 'SendStreamingMessage'), ['weather']);
    const first = events[0]!.payload;
    assert.equal(first?.$case, 'task');
    const task = (first as { $case: 'task'; value: Task }).value;
    const last = events.at(-1)!.payload;
    assert.equal(last?.$case === 'statusUpdate' ? last.value.status?.state : undefined, TaskState.TASK_STATE_COMPLETED);

    const followUp = markAll(agents);
    const fetched = await client.getTask({ tenant: '', id: task.id, historyLength: undefined });
    assert.equal(fetched.id, task.id);
    assert.deepEqual(receivers(agents, followUp, 'GetTask'), ['weather'], 'the follow-up went to the task owner');

    // The owner is remembered durably (a restart keeps routing follow-ups).
    const db = new Database(path.join(gw.stateDir, 'dmsc.db'), { readonly: true });
    try {
      const row = db.prepare("SELECT agent FROM task_routes WHERE tenant = 'acme' AND kind = 'task' AND id = ?").get(task.id) as { agent: string } | undefined;
      assert.equal(row?.agent, 'weather');
    } finally {
      db.close();
    }
  });

  it("lists the skills a tenant may reach: its own and other tenants' only where both policies consent", async () => {
    const reachable = await gw.admin('GET', `/admin/v1/tenants/acme/capabilities?q=${encodeURIComponent('SOX financial controls audit')}`);
    assert.equal(reachable.status, 200);
    const agentsSeen = new Set(reachable.body.skills.map((s: { tenant: string; agent: string }) => `${s.tenant}/${s.agent}`));
    assert.ok(agentsSeen.has('globex/auditor'), JSON.stringify([...agentsSeen]));
    assert.ok(!agentsSeen.has('initech/controller'), 'initech does not let acme in');
    // The operator's search sees every tenant.
    const all = await gw.admin('GET', `/admin/v1/capabilities?q=${encodeURIComponent('SOX financial controls audit')}`);
    assert.ok(all.body.skills.some((s: { tenant: string }) => s.tenant === 'initech'));
  });

  it('a plain JSON request is routed by the configured field of its body, forwarded as is', async () => {
    const marks = markAll(agents);
    const res = await fetch(`${tenantBase}/ask?lang=en`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ input: { question: 'Please review the liability clause of our NDA' } }),
    });
    assert.equal(res.headers.get('x-dmsc-routed-to'), 'acme/legal');
    await res.arrayBuffer();
    const seen = agents.get('legal')!.seen.slice(marks.get('legal'));
    assert.deepEqual(seen.map((s) => `${s.method} ${s.path}`), ['POST /ask?lang=en']);

    const missing = await fetch(`${tenantBase}/ask`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"input":{}}' });
    assert.equal(missing.status, 400);
    assert.match(((await missing.json()) as { error: { message: string } }).error.message, /\/input\/question/);
  });

  it('GetTask on a task the gateway never routed is a TaskNotFound error', async () => {
    const res = await fetch(`${tenantBase}/a2a`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'GetTask', params: { id: 'no-such-task' } }),
    });
    const body = (await res.json()) as { error: { code: number } };
    assert.equal(body.error.code, -32001);
  });

  it('a v0.3 client (message/send) is served through the same card', async () => {
    const legacy = await new ClientFactory(
      ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
        cardResolver: new DefaultAgentCardResolver({ legacyCompat: { enabled: true } }),
        transports: [new JsonRpcTransportFactory({ legacyCompat: { enabled: true } })],
        preferredTransports: ['JSONRPC'],
      }),
    ).createFromUrl(`${tenantBase}/.well-known/agent.json`, '');
    const marks = markAll(agents);
    const answer = await legacy.sendMessage(userMessage('Translate my CV into French'));
    assert.equal(textOf(answer as Message), 'echo: Translate my CV into French');
    assert.deepEqual(receivers(agents, marks, 'message/send'), ['translation']);
  });

  it('killing the chosen specialist fails over to the other agent with the same skill; the caller sees no failure', async () => {
    const question = 'Please delete all my personal data under GDPR';
    // Whichever privacy agent the router prefers now, stop it: the next calls must all succeed.
    const probe = markAll(agents);
    await client.sendMessage(userMessage(question));
    const [chosen] = receivers(agents, probe, 'SendMessage');
    assert.ok(chosen === 'privacy' || chosen === 'privacy-2');
    const survivor = chosen === 'privacy' ? 'privacy-2' : 'privacy';
    await agents.get(chosen!)!.close();
    const marks = markAll(agents);
    for (let i = 0; i < 6; i++) {
      const answer = await client.sendMessage(userMessage(`${question} (${i})`));
      assert.equal(textOf(answer as Message), `echo: ${question} (${i})`);
    }
    assert.deepEqual(receivers(agents, marks, 'SendMessage'), [survivor]);
  });
});
