/**
 * What the data plane reports. Implemented with prom-client in ./metrics.ts; kept as an interface so
 * the data plane never imports prom-client and tests can pass a no-op.
 */
export type UpstreamErrorKind = 'connect' | 'timeout' | 'reset' | 'protocol' | 'other';

export interface DataplaneTelemetry {
  connectionOpened(listener: string): void;
  connectionClosed(listener: string): void;
  /** Once per request, when the response has finished (or failed). tenant/agent undefined when unresolved. */
  requestFinished(
    listener: string,
    tenant: string | undefined,
    agent: string | undefined,
    status: number,
    seconds: number,
  ): void;
  upstreamError(tenant: string, agent: string, kind: UpstreamErrorKind): void;
  /** Current in-flight request count, read at scrape time. */
  setInflightSource(read: () => number): void;
}

export const noopTelemetry: DataplaneTelemetry = {
  connectionOpened() {},
  connectionClosed() {},
  requestFinished() {},
  upstreamError() {},
  setInflightSource() {},
};
