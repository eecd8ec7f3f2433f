import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { routingSchema, type RoutingConfig } from '../src/routing/config.js';
import { CapabilityRouter, scorerCounters, type NoRoute, type RouteChoice } from '../src/routing/router.js';
import type { SkillSummary } from '../src/registry/types.js';
import { endpoint, MemoryRegistry } from './support/memory-registry.js';
import { eventually, startTestGateway, waitForSkills, type TestGateway } from './support/gateway.js';
import { JSONRPC_PATH, startA2aAgent, type A2aAgent } from './support/a2a-agent.js';

/*
 * Semantic scorers (embeddings, an LLM classifier) blended with the lexical ranking, against a
 * real local HTTP server that speaks the OpenAI-compatible API: /v1/embeddings answers vectors of
 * a bag of "concepts" (a small table maps related words to one concept, so that "earnings slip"
 * and "remuneration statement" are close while sharing no word), /v1/chat/completions answers
 * the scores a test sets.
 */

// ---- the fake OpenAI-compatible API -----------------------------------------------------------

const CONCEPTS: Record<string, string> = {
  earnings: 'pay', salary: 'pay', remuneration: 'pay', wage: 'pay', wages: 'pay', compensation: 'pay', payslip: 'pay',
  slip: 'document', statement: 'document', statements: 'document', stub: 'document',
  incorrect: 'error', wrong: 'error', mistake: 'error',
  weather: 'weather', forecast: 'weather', forecasts: 'weather', rain: 'weather', temperature: 'weather', wind: 'weather',
  invoice: 'money', invoices: 'money', refund: 'money', refunds: 'money', charge: 'money', charges: 'money', charged: 'money',
};
const IGNORED = new Set(['my', 'is', 'the', 'a', 'an', 'and', 'of', 'for', 'to', 'on', 'why', 'what', 'looks', 'about', 'tags', 'i', 'me', 'was', 'explain']);
const DIMENSIONS = 256;

function embed(text: string): number[] {
  const vector = new Array<number>(DIMENSIONS).fill(0);
  for (const word of text.toLowerCase().split(/[^a-z]+/)) {
    if (!word || IGNORED.has(word)) continue;
    const concept = CONCEPTS[word] ?? word;
    let hash = 2166136261;
    for (let i = 0; i < concept.length; i++) hash = Math.imul(hash ^ concept.charCodeAt(i), 16777619) >>> 0;
    vector[hash % DIMENSIONS]! += 1;
  }
  return vector;
}

type Mode = 'ok' | 'hang' | 'status-500' | 'not-json' | 'wrong-shape' | 'model-not-json' | 'model-wrong-shape';

interface FakeOpenAi {
  /** Base URL, http://127.0.0.1:<port>/v1 */
  url: string;
  mode: Mode;
  /** The inputs of every embeddings call, in order. */
  embeddingCalls: string[][];
  chatBodies: any[];
  authorizations: (string | undefined)[];
  /** What the classifier answers: scores by agent key (it is told the candidates and the text). */
  classify: (candidates: string[], text: string) => unknown;
  close(): Promise<void>;
}

async function startFakeOpenAi(): Promise<FakeOpenAi> {
  const fake: Omit<FakeOpenAi, 'url' | 'close'> = {
    mode: 'ok',
    embeddingCalls: [],
    chatBodies: [],
    authorizations: [],
    classify: () => ({ scores: {} }),
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      fake.authorizations.push(req.headers.authorization);
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      const json = (status: number, value: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(value));
      };
      if (req.url === '/v1/embeddings') fake.embeddingCalls.push(body.input);
      else if (req.url === '/v1/chat/completions') fake.chatBodies.push(body);
      else return json(404, { error: { message: 'not found' } });
      switch (fake.mode) {
        case 'hang':
          return; // answered never: the server's close() ends it
        case 'status-500':
          return json(500, { error: { message: 'model crashed' } });
        case 'not-json':
          res.writeHead(200, { 'content-type': 'application/json' });
          return res.end('<html>oops</html>');
        case 'wrong-shape':
          return json(200, { data: 'nope', choices: 'nope' });
        default:
      }
      if (req.url === '/v1/embeddings') {
        const input: string[] = body.input;
        return json(200, { object: 'list', model: body.model, data: input.map((text, index) => ({ object: 'embedding', index, embedding: embed(text) })) });
      }
      const system: string = body.messages[0].content;
      const candidates = [...system.matchAll(/"agent":"([^"]+)"/g)].map((match) => match[1]!);
      const content =
        fake.mode === 'model-not-json'
          ? 'Sure! billing looks best.'
          : JSON.stringify(fake.mode === 'model-wrong-shape' ? { scores: { [candidates[0]!]: 'high' } } : fake.classify(candidates, body.messages[1].content));
      return json(200, { id: 'c1', object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }] });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(fake, {
    url: `http://127.0.0.1:${port}/v1`,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  });
}

const PAYROLL: SkillSummary = {
  id: 'statements',
  name: 'Remuneration',
  description: 'Remuneration statements, deductions and tax withholding',
  tags: [],
  examples: ['Explain the deductions on my remuneration statement'],
};
const BILLING: SkillSummary = { id: 'invoices', name: 'Invoices', description: 'Invoices, double charges and refunds', tags: [] };
const WEATHER: SkillSummary = { id: 'forecast', name: 'Weather forecast', description: 'Rain, wind and temperature forecasts', tags: [] };
/** Shares no word (nor synonym) with any skill above; means what PAYROLL does. */
const PAYSLIP_QUESTION = 'my earnings slip looks incorrect';

function specialists(): MemoryRegistry {
  const registry = new MemoryRegistry();
  registry.add('t', 'payroll', [PAYROLL]);
  registry.add('t', 'billing', [BILLING]);
  registry.add('t', 'weather', [WEATHER]);
  return registry;
}

function routerWith(registry: MemoryRegistry, scorers: unknown[], env: Record<string, string> = {}, warnings: object[] = []): CapabilityRouter {
  const config: RoutingConfig = routingSchema.parse({ scorers });
  const router = new CapabilityRouter({ registry, config: () => config, env, logger: { warn: (fields) => warnings.push(fields) } });
  router.syncAll();
  return router;
}

async function decide(router: CapabilityRouter, text: string): Promise<RouteChoice | NoRoute> {
  return router.routeScored('t', { text }, () => undefined);
}

const everyone = () => undefined;

describe('semantic scorers blended with the lexical ranking', () => {
  let fake: FakeOpenAi;
  const embeddings = (extra: Record<string, unknown> = {}) => ({ kind: 'openai-embeddings', url: fake.url, model: 'fake-embed', ...extra });
  const classifier = (extra: Record<string, unknown> = {}) => ({ kind: 'openai-classifier', url: fake.url, model: 'fake-chat', ...extra });

  before(async () => {
    fake = await startFakeOpenAi();
  });
  after(() => fake.close());

  it('an embeddings scorer routes a question that shares no word with the right skill; lexical alone cannot', async () => {
    const lexical = routerWith(specialists(), []);
    const alone = lexical.routeScored('t', { text: PAYSLIP_QUESTION }, everyone);
    assert.ok(!(alone instanceof Promise), 'without scorers the decision stays synchronous');
    assert.equal(alone.agent, undefined);
    assert.equal(alone.agent === undefined && alone.reason, 'no_match');

    const semantic = routerWith(specialists(), [embeddings()]);
    const pending = semantic.routeScored('t', { text: PAYSLIP_QUESTION }, everyone);
    assert.ok(pending instanceof Promise);
    const choice = await pending;
    assert.equal(choice.agent?.key, 't/payroll');
    assert.equal(choice.agent && choice.via, 'intent');
    assert.ok(choice.agent && choice.confidence >= 0.2, `blended confidence ${choice.agent && choice.confidence}`);
    assert.deepEqual(choice.scorers?.map((scorer) => [scorer.name, scorer.ok]), [['embeddings', true]]);

    const { decision, considered } = await semantic.explainScored('t', { text: PAYSLIP_QUESTION }, everyone);
    assert.equal(decision.agent?.key, 't/payroll');
    const payroll = considered.find((candidate) => candidate.agent === 't/payroll')!;
    assert.equal(payroll.scores?.lexical, 0);
    assert.ok(payroll.scores!.embeddings! > 0.5, JSON.stringify(payroll.scores));
    assert.ok(Math.abs(payroll.confidence - 0.5 * payroll.scores!.embeddings!) <= 0.001, 'weight 0.5: half lexical (0), half embeddings');
    const weather = considered.find((candidate) => candidate.agent === 't/weather')!;
    assert.ok(weather.scores!.embeddings! < 0.2, 'an unrelated skill is far');
  });

  it('a classifier overrides a lexical tie that load would decide; its answer is clamped and unknown agents ignored', async () => {
    const registry = new MemoryRegistry();
    const refund = { id: 'refunds', name: 'Refunds', description: 'Refunds for double charges on invoices', tags: [] };
    registry.add('t', 'refunds-a', [refund], [endpoint(true, 10)]);
    registry.add('t', 'refunds-b', [refund], [endpoint(true, 0)]);
    const question = 'refund of a double charge';

    const lexical = routerWith(registry, []);
    for (let i = 0; i < 20; i++) assert.equal(lexical.route('t', { text: question }, everyone).agent?.name, 'refunds-b', 'a tie: the idle one');

    const asked: string[][] = [];
    fake.classify = (candidates) => {
      asked.push(candidates);
      return { scores: { 't/refunds-a': 1.7, 't/refunds-b': -0.3, 't/elsewhere': 1 }, reasoning: 'a is the refunds desk' };
    };
    const semantic = routerWith(registry, [classifier()]);
    for (let i = 0; i < 20; i++) {
      const choice = await decide(semantic, question);
      assert.equal(choice.agent?.name, 'refunds-a');
      assert.deepEqual(choice.agent && choice.alternatives.map((agent) => agent.name), ['refunds-b']);
    }
    assert.deepEqual(asked.at(-1)!.sort(), ['t/refunds-a', 't/refunds-b'], 'the candidates are listed');
    const request = fake.chatBodies.at(-1);
    assert.equal(request.model, 'fake-chat');
    assert.deepEqual(request.response_format, { type: 'json_object' });
    assert.equal(request.messages[0].role, 'system');
    assert.match(request.messages[0].content, /"agent":"t\/refunds-a","skills":\[\{"id":"refunds","name":"Refunds","description":"Refunds for double charges on invoices"\}\]/);
    assert.deepEqual(request.messages[1], { role: 'user', content: question });
    const { considered } = await semantic.explainScored('t', { text: question }, everyone);
    assert.deepEqual(
      considered.map((candidate) => [candidate.agent, candidate.scores?.classifier]),
      [
        ['t/refunds-a', 1],
        ['t/refunds-b', 0],
      ],
    );
  });

  it('a scorer that times out, fails or answers garbage leaves the decision lexical; the request succeeds and is counted', async () => {
    const registry = specialists();
    const question = 'a refund for a double charge on my invoice';
    const expected = routerWith(registry, []).route('t', { text: question }, everyone);
    assert.equal(expected.agent?.key, 't/billing');
    const cases: Array<[Mode, 'embeddings' | 'classifier', string]> = [
      ['hang', 'embeddings', 'timeout'],
      ['hang', 'classifier', 'timeout'],
      ['status-500', 'embeddings', 'http'],
      ['status-500', 'classifier', 'http'],
      ['not-json', 'embeddings', 'invalid'],
      ['wrong-shape', 'embeddings', 'invalid'],
      ['wrong-shape', 'classifier', 'invalid'],
      ['model-not-json', 'classifier', 'invalid'],
      ['model-wrong-shape', 'classifier', 'invalid'],
    ];
    try {
      for (const [mode, kind, reason] of cases) {
        fake.mode = mode;
        const scorer = kind === 'embeddings' ? embeddings({ timeoutMs: 100 }) : classifier({ timeoutMs: 100 });
        const router = routerWith(registry, [scorer]);
        const before = scorerCounters();
        const choice = await decide(router, question);
        const after = scorerCounters();
        assert.equal(choice.agent?.key, 't/billing', `${mode} ${kind}: the lexical choice`);
        assert.equal(choice.agent && choice.via, 'intent');
        assert.equal(choice.agent && choice.confidence, expected.agent && expected.confidence, `${mode} ${kind}: the lexical confidence`);
        assert.equal(choice.scorers?.[0]?.ok, false);
        assert.match(choice.scorers![0]!.error!, new RegExp(`^${reason}: `));
        assert.equal(after.fallbacks, before.fallbacks + 1, `${mode} ${kind}: one fallback`);
        assert.equal(after.scorers[kind]!.failures[reason as 'timeout'], (before.scorers[kind]?.failures[reason as 'timeout'] ?? 0) + 1, `${mode} ${kind}: counted as ${reason}`);
        assert.ok(choice.scorers![0]!.ms < 5_000);
      }

      // Logged at warn, once per scorer within 10 s however often it fails.
      fake.mode = 'status-500';
      const warnings: object[] = [];
      const router = routerWith(registry, [classifier()], {}, warnings);
      for (let i = 0; i < 3; i++) assert.equal((await decide(router, question)).agent?.key, 't/billing');
      assert.equal(warnings.length, 1);
      assert.deepEqual(warnings[0], { scorer: 'classifier', tenant: 't', reason: 'http', error: `${fake.url}/chat/completions answered 500`, notLoggedSince: 0 });
    } finally {
      fake.mode = 'ok';
    }
  });

  it('sends the API key from the named environment variable as a bearer token, and none without one', async () => {
    const marks = fake.authorizations.length;
    fake.classify = (candidates) => ({ scores: Object.fromEntries(candidates.map((agent) => [agent, agent === 't/billing' ? 1 : 0])) });
    const keyed = routerWith(specialists(), [embeddings({ apiKeyEnv: 'DMSC_TEST_SCORER_KEY', weight: 0.4 }), classifier({ apiKeyEnv: 'DMSC_TEST_SCORER_KEY', weight: 0.4 })], {
      DMSC_TEST_SCORER_KEY: 'sk-test-123',
    });
    const choice = await decide(keyed, 'I was charged twice, refund please');
    assert.equal(choice.agent?.key, 't/billing');
    assert.deepEqual(choice.scorers?.map((scorer) => [scorer.name, scorer.ok]), [
      ['embeddings', true],
      ['classifier', true],
    ]);
    const sent = fake.authorizations.slice(marks);
    assert.ok(sent.length >= 3, 'skills, query, classifier');
    assert.deepEqual(new Set(sent), new Set(['Bearer sk-test-123']));

    const plain = fake.authorizations.length;
    await decide(routerWith(specialists(), [classifier()]), 'I was charged twice, refund please');
    assert.deepEqual(fake.authorizations.slice(plain), [undefined]);

    const unset = fake.authorizations.length;
    const missing = await decide(routerWith(specialists(), [classifier({ apiKeyEnv: 'DMSC_TEST_UNSET_KEY' })]), 'I was charged twice, refund please');
    assert.equal(missing.agent?.key, 't/billing', 'lexical');
    assert.match(missing.scorers![0]!.error!, /^config: the environment variable DMSC_TEST_UNSET_KEY \(apiKeyEnv\) is not set/);
    assert.equal(fake.authorizations.length, unset, 'nothing sent without the key');
  });

  it('embeds each skill once, and again only when it changes; the query every time', async () => {
    const registry = specialists();
    const router = routerWith(registry, [embeddings()]);
    const questions = [PAYSLIP_QUESTION, 'is rain coming'];
    const marks = fake.embeddingCalls.length;
    const skillInputs = () =>
      fake.embeddingCalls
        .slice(marks)
        .flat()
        .filter((input) => !questions.includes(input));

    assert.equal((await decide(router, PAYSLIP_QUESTION)).agent?.key, 't/payroll');
    assert.equal(skillInputs().length, 3, 'the three skills');
    assert.match(skillInputs().find((input) => input.startsWith('Remuneration'))!, /^Remuneration\nRemuneration statements, deductions and tax withholding\nExplain the deductions/);
    assert.equal((await decide(router, 'is rain coming')).agent?.key, 't/weather');
    assert.equal((await decide(router, PAYSLIP_QUESTION)).agent?.key, 't/payroll');
    assert.equal(skillInputs().length, 3, 'not embedded again');
    assert.deepEqual(
      fake.embeddingCalls.slice(marks).filter((input) => input.length === 1 && questions.includes(input[0]!)).map((input) => input[0]),
      [PAYSLIP_QUESTION, 'is rain coming', PAYSLIP_QUESTION],
      'the query, once per decision',
    );

    // The weather agent's skill changes: only it is embedded again.
    registry.agents.get('t/weather')!.skills = [{ ...WEATHER, description: 'Rain, wind, temperature and storm forecasts' }];
    router.syncAgent('t', 'weather');
    assert.equal((await decide(router, 'is rain coming')).agent?.key, 't/weather');
    assert.equal(skillInputs().length, 4);
    assert.match(skillInputs().at(-1)!, /storm forecasts/);
  });
});

describe('semantic scorers in a running gateway', () => {
  let fake: FakeOpenAi;
  let gw: TestGateway;
  const agents = new Map<string, A2aAgent>();

  before(async () => {
    fake = await startFakeOpenAi();
    const specs = { payroll: PAYROLL, billing: BILLING, weather: WEATHER };
    for (const [name, skill] of Object.entries(specs)) {
      agents.set(name, await startA2aAgent(name, 'v1+compat', { skills: [{ ...skill, description: skill.description! }], description: `${name} desk` }));
    }
    gw = await startTestGateway({
      healthCheck: { enabled: false },
      routing: { scorers: [{ kind: 'openai-embeddings', url: fake.url, model: 'fake-embed', timeoutMs: 2000 }] },
      tenants: [{ name: 'acme', agents: [...agents].map(([name, agent]) => ({ name, endpoints: [agent.url] })) }],
    });
    await waitForSkills(gw, 'acme', agents.size);
  });
  after(async () => {
    await gw?.close();
    await Promise.all([...agents.values()].map((agent) => agent.close()));
    await fake?.close();
  });

  it('A2A SendMessage to the tenant lands on the agent the embeddings match, with no word in common', async () => {
    const seen = agents.get('payroll')!.seen.length;
    const res = await fetch(`${gw.plainUrl}/tenants/acme/a2a`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'a2a-version': '1.0' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'SendMessage', params: { message: { messageId: 'm1', role: 'ROLE_USER', parts: [{ text: PAYSLIP_QUESTION }] } } }),
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-dmsc-routed-to'), 'acme/payroll');
    const body = (await res.json()) as { id: number; result?: unknown };
    assert.equal(body.id, 1);
    assert.ok(body.result, JSON.stringify(body));
    assert.ok(agents.get('payroll')!.seen.slice(seen).some((request) => request.path === JSONRPC_PATH && request.rpcMethod === 'SendMessage'));
    assert.ok(fake.embeddingCalls.some((input) => input.length === 1 && input[0] === PAYSLIP_QUESTION), 'the gateway asked the embeddings API');
  });
});

describe('skill embeddings that fail', () => {
  let fake: FakeOpenAi;
  before(async () => {
    fake = await startFakeOpenAi();
  });
  after(() => fake.close());

  it('are not asked for again with every request: the scorer fails at once until a back-off has passed', async () => {
    const router = routerWith(specialists(), [{ kind: 'openai-embeddings', url: fake.url, model: 'fake-embed' }]);
    fake.mode = 'status-500';
    const first = await decide(router, PAYSLIP_QUESTION);
    assert.equal(first.scorers?.[0]?.ok, false);
    const calls = fake.embeddingCalls.length;
    assert.ok(calls >= 1);
    for (let i = 0; i < 5; i++) {
      const again = await decide(router, PAYSLIP_QUESTION);
      assert.equal(again.scorers?.[0]?.ok, false);
      assert.match(again.scorers![0]!.error!, /not embedded again for \d+ ms/);
    }
    assert.equal(fake.embeddingCalls.length, calls, 'no call to the model while backing off, not even for the query');

    // The model is back: after the back-off (1 s) the skills are embedded and the scorer takes part again.
    fake.mode = 'ok';
    await eventually(async () => (await decide(router, PAYSLIP_QUESTION)).scorers?.[0]?.ok === true, 5_000, 100);
    assert.equal((await decide(router, PAYSLIP_QUESTION)).agent?.key, 't/payroll');
  });
});
