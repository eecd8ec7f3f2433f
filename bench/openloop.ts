// Open-loop constant-rate HTTP/1.1 load generator (the wrk2 idea in ~100 lines): requests are sent
// on a fixed schedule whatever the responses do, and each latency is measured from the time the
// request was *due*, so a stall shows up in the percentiles instead of silently lowering the rate
// (no coordinated omission). Latencies go into a nanosecond histogram (perf_hooks).
//
// Usage: node --import tsx bench/openloop.ts --url URL [--rate 1000] [--duration 10] [--warmup 2]
//        [--connections 32]      -> prints one JSON object on stdout
import { createHistogram, performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';

export interface OpenLoopResult {
  url: string;
  rate: number;
  durationS: number;
  sent: number;
  ok: number;
  errors: number;
  non2xx: number;
  achievedRate: number;
  latencyMs: { min: number; p50: number; p90: number; p99: number; p999: number; max: number; mean: number };
}

async function phase(pool: Pool, path: string, rate: number, seconds: number, record: boolean) {
  const hist = createHistogram();
  let sent = 0;
  let done = 0;
  let ok = 0;
  let errors = 0;
  let non2xx = 0;
  const total = Math.round(rate * seconds);
  const intervalMs = 1000 / rate;
  const start = performance.now();
  await new Promise<void>((resolve) => {
    const finish = () => {
      done++;
      if (done === total) resolve();
    };
    const fire = (due: number) => {
      pool
        .request({ path, method: 'GET' })
        .then(async (res) => {
          await res.body.dump({ limit: 1 << 20 });
          if (res.statusCode >= 200 && res.statusCode < 300) ok++;
          else non2xx++;
          if (record) hist.record(Math.max(1, Math.round((performance.now() - due) * 1e6)));
        })
        .catch(() => {
          errors++;
        })
        .finally(finish);
    };
    // setImmediate keeps the loop spinning so requests leave within microseconds of their due time
    // (setTimeout has ~1 ms granularity, which would add its own jitter to every sample).
    const tick = () => {
      const now = performance.now();
      while (sent < total && start + sent * intervalMs <= now) {
        fire(start + sent * intervalMs);
        sent++;
      }
      if (sent < total) setImmediate(tick);
    };
    tick();
  });
  const elapsed = (performance.now() - start) / 1000;
  const ms = (ns: number) => Math.round(ns / 1e3) / 1e3;
  return {
    sent,
    ok,
    errors,
    non2xx,
    achievedRate: Math.round((sent / elapsed) * 10) / 10,
    latencyMs: {
      min: ms(hist.min),
      p50: ms(hist.percentile(50)),
      p90: ms(hist.percentile(90)),
      p99: ms(hist.percentile(99)),
      p999: ms(hist.percentile(99.9)),
      max: ms(hist.max),
      mean: ms(hist.mean),
    },
  };
}

export async function openLoop(url: string, rate: number, durationS: number, warmupS: number, connections: number): Promise<OpenLoopResult> {
  const target = new URL(url);
  const pool = new Pool(target.origin, {
    connections,
    pipelining: 1,
    keepAliveTimeout: 120_000,
    connect: { rejectUnauthorized: false },
  });
  try {
    const path = target.pathname + target.search;
    if (warmupS > 0) await phase(pool, path, rate, warmupS, false);
    const result = await phase(pool, path, rate, durationS, true);
    return { url, rate, durationS, ...result };
  } finally {
    await pool.close();
  }
}

const isMain = process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/\\/g, '/').split('/').pop()!);
if (isMain) {
  const { values } = parseArgs({
    options: {
      url: { type: 'string' },
      rate: { type: 'string', default: '1000' },
      duration: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '2' },
      connections: { type: 'string', default: '32' },
    },
  });
  if (!values.url) {
    console.error('usage: openloop.ts --url URL [--rate 1000] [--duration 10] [--warmup 2] [--connections 32]');
    process.exit(2);
  }
  const result = await openLoop(values.url, Number(values.rate), Number(values.duration), Number(values.warmup), Number(values.connections));
  process.stdout.write(JSON.stringify(result) + '\n');
}
