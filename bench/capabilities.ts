// The cost of intent matching (CapabilityIndex.rank) at 10,000 agents x 10 skills = 100,000 skills:
// one tenant holding all of them (the worst case), and the same agents spread over 100 tenants.
// Skills are synthetic (bench/skill-corpus.ts): a vocabulary of --words pseudo-words, each skill's
// text drawn half from a global Zipf distribution (words shared by all, like "data" or "request")
// and half from the Zipf distribution of its agent's topic (one of 500 topics with 150 words each);
// 300 tags.
// Queries are 5-30 word texts: words of one target skill, words from the global distribution and
// English stop words. Each rank() call (text analysis included, limit 5) is timed on its own, in
// wall time (process.hrtime.bigint) and in process CPU time (process.cpuUsage, which leaves out
// time the process waited for a core on a shared machine), after a warm-up; best of --rounds
// rounds by p99. Also: build time, memory (JS heap + typed-array buffers, after a full gc), one
// agent's upsert (10 new skills) and remove, how often the target skill's agent comes first, and
// how often the best agent is the one found without the work bound (exhaustive, MaxScore only).
// Usage: node --import tsx bench/capabilities.ts [--agents N] [--queries Q] [--rounds R] [--words W]
//   [--seed S] [--budget maxPostingsPerQuery] [--rescored maxRescoredDocuments] [--single]
import os from 'node:os';
import v8 from 'node:v8';
import vm from 'node:vm';
import { CapabilityIndex, type CapabilityIndexOptions } from '../src/routing/capabilities/index.js';
import { percentile, skillCorpus } from './skill-corpus.js';

const arg = (name: string, fallback: number): number => {
  const index = process.argv.indexOf(name);
  return index > 0 ? Number(process.argv[index + 1]) : fallback;
};
const AGENTS = arg('--agents', 10_000);
const SKILLS_PER_AGENT = 10;
const QUERIES = arg('--queries', 20_000);
const WORDS = arg('--words', 5_000);
const TENANTS_SPREAD = 100;
const UPDATES = 1_000;
/** Best of this many rounds of rank() timings, by p99: the machine may be shared. */
const ROUNDS = arg('--rounds', 3);
const BOUNDS: CapabilityIndexOptions = {
  ...(process.argv.includes('--budget') ? { maxPostingsPerQuery: arg('--budget', 0) } : {}),
  ...(process.argv.includes('--rescored') ? { maxRescoredDocuments: arg('--rescored', 0) } : {}),
};

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

const { pick, vocabulary, agents, agentSkills, queryFor } = skillCorpus({ agents: AGENTS, words: WORDS, seed: arg('--seed', 7), skillsPerAgent: SKILLS_PER_AGENT });

/** JS heap plus typed-array backing stores, after a full gc. */
function memoryMb(): number {
  gc();
  gc();
  const { heapUsed, arrayBuffers } = process.memoryUsage();
  return (heapUsed + arrayBuffers) / 1024 / 1024;
}

interface Row {
  label: string;
  buildMs: number;
  memoryMb: number;
  rank: Float64Array;
  rankCpu: Float64Array;
  hitRate: number;
  agreement: number;
  upsert: Float64Array;
  remove: Float64Array;
  terms: number;
}

function run(label: string, tenantOf: (agent: number) => string, options: CapabilityIndexOptions = {}): Row {
  agents.forEach((agent, i) => (agent.tenant = tenantOf(i)));
  const baseMemory = memoryMb();
  const index = new CapabilityIndex(options);
  const started = performance.now();
  for (const agent of agents) index.upsertAgent(agent.tenant, agent.name, agent.skills, agent.tags);
  const buildMs = performance.now() - started;
  const memory = memoryMb() - baseMemory;

  const queries = Array.from({ length: 4096 }, () => queryFor(pick(agents)));
  for (let i = 0; i < 5_000; i++) index.rank(queries[i % queries.length]!.tenant, { text: queries[i % queries.length]!.text });
  let rank: Float64Array | undefined;
  let rankCpu: Float64Array | undefined;
  let hits = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const samples = new Float64Array(QUERIES);
    const cpuSamples = new Float64Array(QUERIES);
    hits = 0;
    for (let i = 0; i < QUERIES; i++) {
      const query = queries[i % queries.length]!;
      const cpu = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      const ranked = index.rank(query.tenant, { text: query.text });
      samples[i] = Number(process.hrtime.bigint() - t0) / 1000;
      const used = process.cpuUsage(cpu);
      cpuSamples[i] = used.user + used.system;
      if (ranked[0]?.agentKey === query.target) hits++;
    }
    samples.sort();
    cpuSamples.sort();
    if (!rank || percentile(samples, 99) < percentile(rank, 99)) rank = samples;
    if (!rankCpu || percentile(cpuSamples, 99) < percentile(rankCpu, 99)) rankCpu = cpuSamples;
  }

  // The same queries without the work bound (MaxScore pruning only, which is exact).
  const unbounded = { maxPostingsPerQuery: Number.MAX_SAFE_INTEGER, maxRescoredDocuments: Number.MAX_SAFE_INTEGER };
  const exhaustive = new CapabilityIndex({ ...options, ...unbounded });
  for (const agent of agents) exhaustive.upsertAgent(agent.tenant, agent.name, agent.skills, agent.tags);
  let same = 0;
  const compared = 1_000;
  for (const query of queries.slice(0, compared)) {
    const bounded = index.rank(query.tenant, { text: query.text })[0]?.agentKey;
    if (bounded === exhaustive.rank(query.tenant, { text: query.text })[0]?.agentKey) same++;
  }

  const upsert = new Float64Array(UPDATES);
  const remove = new Float64Array(UPDATES);
  for (let i = 0; i < UPDATES; i++) {
    const agent = pick(agents);
    const skills = agentSkills(Number(agent.name.slice(6)), i + 1);
    let t0 = process.hrtime.bigint();
    index.upsertAgent(agent.tenant, agent.name, skills, agent.tags);
    upsert[i] = Number(process.hrtime.bigint() - t0) / 1000;
    t0 = process.hrtime.bigint();
    index.removeAgent(agent.tenant, agent.name);
    remove[i] = Number(process.hrtime.bigint() - t0) / 1000;
    index.upsertAgent(agent.tenant, agent.name, agent.skills, agent.tags);
  }
  upsert.sort();
  remove.sort();
  const terms = index.stats().terms;
  return { label, buildMs, memoryMb: memory, rank: rank!, rankCpu: rankCpu!, hitRate: hits / QUERIES, agreement: same / compared, upsert, remove, terms };
}

console.log('# node --import tsx bench/capabilities.ts' + (process.argv.length > 2 ? ' ' + process.argv.slice(2).join(' ') : ''));
console.log(
  `# node ${process.version}, ${os.cpus()[0]?.model ?? 'unknown CPU'} x${os.cpus().length}; ${AGENTS.toLocaleString('en-US')} agents x ${SKILLS_PER_AGENT} skills, ` +
    `${vocabulary.length.toLocaleString('en-US')} words, ${QUERIES.toLocaleString('en-US')} timed rank() calls x ${ROUNDS} rounds, ${UPDATES} upserts and removes`,
);
const rows = [run('1 tenant', () => 'big', BOUNDS)];
if (!process.argv.includes('--single')) rows.push(run(`${TENANTS_SPREAD} tenants`, (i) => `tenant-${i % TENANTS_SPREAD}`, BOUNDS));
const us = (value: number): string => value.toFixed(1);
console.log(
  '\n| index | build | memory | terms | rank p50 | rank p99 | rank p99.9 | rank max | rank CPU p50 / p99 | target first ' +
    '| same best as exhaustive | upsert p50 / p99 | remove p50 / p99 |',
);
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const row of rows) {
  const cells = [
    row.label,
    `${(row.buildMs / 1000).toFixed(2)} s`,
    `${row.memoryMb.toFixed(0)} MB`,
    row.terms.toLocaleString('en-US'),
    `${us(percentile(row.rank, 50))} µs`,
    `${us(percentile(row.rank, 99))} µs`,
    `${us(percentile(row.rank, 99.9))} µs`,
    `${us(row.rank[row.rank.length - 1]!)} µs`,
    `${us(percentile(row.rankCpu, 50))} / ${us(percentile(row.rankCpu, 99))} µs`,
    `${(100 * row.hitRate).toFixed(1)}%`,
    `${(100 * row.agreement).toFixed(1)}%`,
    `${us(percentile(row.upsert, 50))} / ${us(percentile(row.upsert, 99))} µs`,
    `${us(percentile(row.remove, 50))} / ${us(percentile(row.remove, 99))} µs`,
  ];
  console.log(`| ${cells.join(' | ')} |`);
}
