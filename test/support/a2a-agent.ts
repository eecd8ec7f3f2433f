import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { A2A_PROTOCOL_VERSION, AgentCard, Role, TaskState, type Message, type Part, type SendMessageRequest } from '@a2a-js/sdk';
import {
  AgentEvent,
  DefaultRequestHandler,
  InMemoryTaskStore,
  type AgentExecutor,
  type ExecutionEventBus,
  type RequestContext,
} from '@a2a-js/sdk/server';
import { agentCardHandler, jsonRpcHandler, restHandler, UserBuilder } from '@a2a-js/sdk/server/express';
import { legacyAgentCardRouter } from '@a2a-js/sdk/compat/v0_3/server/express';

/**
 * Real A2A agents for tests, built only from the official `@a2a-js/sdk` server pieces (express
 * JSON-RPC / REST handlers, agent card handler, DefaultRequestHandler). Nothing here knows about
 * the gateway.
 *
 * Behaviour of the executor:
 * - a message whose text starts with `steps` runs a task that publishes, in order, the task
 *   (submitted), three `working` status updates (`step 1..3`), an artifact (`result: <text>`) and
 *   a `completed` status update — and before publishing each event after the first it waits for
 *   `agent.release()`, so a test that releases only after the client has seen the previous event
 *   proves that every event reaches the client on its own (nothing buffers the stream);
 * - any other message is answered with one agent message `echo: <text>`.
 */

export type A2aFlavour =
  /** v1.0 only: card at /.well-known/agent-card.json, v1.0 JSON-RPC + REST. */
  | 'v1'
  /** v1.0 with the SDK's v0.3 compatibility on (one URL set serves both; card shape by A2A-Version). */
  | 'v1+compat'
  /** v0.3 only: v0.3 card at /.well-known/agent.json only, v0.3 JSON-RPC (`message/send`, `message/stream`). */
  | 'v0.3';

export interface SeenRequest {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  /** The JSON-RPC method of a POST to the JSON-RPC path. */
  rpcMethod?: string;
}

export interface A2aAgent {
  name: string;
  /** http://127.0.0.1:<port> */
  url: string;
  port: number;
  /** The JSON-RPC URL the agent's card advertises. */
  jsonRpcUrl: string;
  server: http.Server;
  seen: SeenRequest[];
  /** Lets a gated (streaming `steps`) task publish its next event. */
  release(): void;
  close(): Promise<void>;
}

export const JSONRPC_PATH = '/a2a/jsonrpc';
export const REST_PATH = '/a2a/rest';

function textPart(text: string): Part {
  return { content: { $case: 'text', value: text }, metadata: undefined, filename: '', mediaType: 'text/plain' };
}

function agentMessage(text: string, taskId = '', contextId = ''): Message {
  return {
    messageId: `m-${Math.random().toString(16).slice(2)}`,
    role: Role.ROLE_AGENT,
    parts: [textPart(text)],
    taskId,
    contextId,
    metadata: undefined,
    extensions: [],
    referenceTaskIds: [],
  };
}

/** The first text part of a message ('' when it has none). */
export function textOf(message: Message | undefined): string {
  for (const part of message?.parts ?? []) if (part.content?.$case === 'text') return part.content.value;
  return '';
}

/** A user's text message as an SDK client sends it, optionally continuing a task or conversation. */
export function userMessage(text: string, ids: { taskId?: string; contextId?: string } = {}): SendMessageRequest {
  return {
    tenant: '',
    message: {
      messageId: `u-${Math.random().toString(16).slice(2)}`,
      role: Role.ROLE_USER,
      parts: [textPart(text)],
      taskId: ids.taskId ?? '',
      contextId: ids.contextId ?? '',
      metadata: undefined,
      extensions: [],
      referenceTaskIds: [],
    },
    configuration: undefined,
    metadata: undefined,
  };
}

class Gate {
  private credits = 0;
  private waiters: Array<() => void> = [];
  release(): void {
    const waiter = this.waiters.shift();
    if (waiter) waiter();
    else this.credits++;
  }
  wait(): Promise<void> {
    if (this.credits > 0) {
      this.credits--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }
  /** Unblocks every waiter (on close, so no executor hangs). */
  drain(): void {
    for (const waiter of this.waiters.splice(0)) waiter();
    this.credits = Number.POSITIVE_INFINITY;
  }
}

class TestExecutor implements AgentExecutor {
  constructor(
    private readonly name: string,
    private readonly gate: Gate,
  ) {}

  cancelTask = async (): Promise<void> => {};

  async execute(ctx: RequestContext, bus: ExecutionEventBus): Promise<void> {
    const text = textOf(ctx.userMessage);
    if (!text.startsWith('steps')) {
      bus.publish(AgentEvent.message(agentMessage(`echo: ${text}`, '', ctx.contextId)));
      bus.finished();
      return;
    }
    const { taskId, contextId } = ctx;
    const now = () => new Date().toISOString();
    bus.publish(
      AgentEvent.task({
        id: taskId,
        contextId,
        status: { state: TaskState.TASK_STATE_SUBMITTED, message: undefined, timestamp: now() },
        artifacts: [],
        history: [ctx.userMessage],
        metadata: undefined,
      }),
    );
    for (let step = 1; step <= 3; step++) {
      await this.gate.wait();
      bus.publish(
        AgentEvent.statusUpdate({
          taskId,
          contextId,
          status: { state: TaskState.TASK_STATE_WORKING, message: agentMessage(`step ${step}`, taskId, contextId), timestamp: now() },
          metadata: undefined,
        }),
      );
    }
    await this.gate.wait();
    bus.publish(
      AgentEvent.artifactUpdate({
        taskId,
        contextId,
        artifact: {
          artifactId: 'result',
          name: 'result',
          description: `answer from ${this.name}`,
          parts: [textPart(`result: ${text}`)],
          metadata: undefined,
          extensions: [],
        },
        append: false,
        lastChunk: true,
        metadata: undefined,
      }),
    );
    await this.gate.wait();
    bus.publish(
      AgentEvent.statusUpdate({
        taskId,
        contextId,
        status: { state: TaskState.TASK_STATE_COMPLETED, message: undefined, timestamp: now() },
        metadata: undefined,
      }),
    );
    bus.finished();
  }
}

export interface SkillInput {
  id: string;
  name: string;
  description: string;
  tags: string[];
  examples?: string[];
}

const ECHO_SKILL: SkillInput = { id: 'echo', name: 'Echo', description: 'Repeats what it is told', tags: ['echo', 'test'], examples: ['hello'] };

function buildCard(name: string, origin: string, flavour: A2aFlavour, declareV03: boolean, skills: readonly SkillInput[] = [ECHO_SKILL], description = `test agent ${name}`): AgentCard {
  const version = flavour === 'v0.3' ? '0.3' : A2A_PROTOCOL_VERSION;
  const interfaces = [{ url: origin + JSONRPC_PATH, protocolBinding: 'JSONRPC', tenant: '', protocolVersion: version }];
  if (flavour !== 'v0.3') {
    interfaces.push({ url: origin + REST_PATH, protocolBinding: 'HTTP+JSON', tenant: '', protocolVersion: version });
  }
  if (flavour === 'v1+compat' && declareV03) {
    // The SDK's compat layer needs the v0.3 surface declared (same URL, v0.3 protocol version).
    interfaces.push({ url: origin + JSONRPC_PATH, protocolBinding: 'JSONRPC', tenant: '', protocolVersion: '0.3' });
  }
  return AgentCard.fromJSON({
    name,
    description,
    version: '1.0.0',
    supportedInterfaces: interfaces,
    capabilities: { streaming: true, pushNotifications: false, extensions: [] },
    defaultInputModes: ['text/plain'],
    defaultOutputModes: ['text/plain'],
    skills: skills.map((skill) => ({ examples: [], ...skill, inputModes: ['text/plain'], outputModes: ['text/plain'] })),
  });
}

export interface A2aAgentOptions {
  /**
   * For 'v1+compat': declare the v0.3 JSON-RPC interface the SDK's compat layer requires (default
   * true). Without it the SDK answers a card request without `A2A-Version` (= 0.3) with 400.
   */
  declareV03Interface?: boolean;
  /** The card's skills (default: one `echo` skill). */
  skills?: readonly SkillInput[];
  description?: string;
  /** Listen on this port (default: an ephemeral one). */
  port?: number;
}

/** Starts an SDK-built A2A agent on an ephemeral loopback port. */
export async function startA2aAgent(name: string, flavour: A2aFlavour = 'v1', options: A2aAgentOptions = {}): Promise<A2aAgent> {
  const seen: SeenRequest[] = [];
  const gate = new Gate();
  const app = express();
  const server = http.createServer(app);
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const origin = `http://127.0.0.1:${port}`;

  const card = buildCard(name, origin, flavour, options.declareV03Interface ?? true, options.skills, options.description);
  const requestHandler = new DefaultRequestHandler(card, new InMemoryTaskStore(), new TestExecutor(name, gate));
  const legacyCompat = { enabled: flavour !== 'v1' };

  // Capture what the agent sees (headers, and the JSON-RPC method of calls to the JSON-RPC path).
  app.use((req, _res, next) => {
    seen.push({ method: req.method, path: req.originalUrl, headers: req.headers });
    next();
  });
  app.use(JSONRPC_PATH, express.json({ type: () => true }), (req, _res, next) => {
    const body = req.body as { method?: unknown } | undefined;
    if (typeof body?.method === 'string') seen.at(-1)!.rpcMethod = body.method;
    next();
  });

  if (flavour === 'v0.3') {
    // A v0.3-era agent: its card only at the pre-0.3 well-known path, v0.3 shape.
    app.use('/.well-known/agent.json', legacyAgentCardRouter({ agentCardProvider: requestHandler }));
  } else {
    app.use('/.well-known/agent-card.json', agentCardHandler({ agentCardProvider: requestHandler, legacyCompat }));
    app.use(REST_PATH, restHandler({ requestHandler, userBuilder: UserBuilder.noAuthentication, legacyCompat }));
  }
  app.use(JSONRPC_PATH, jsonRpcHandler({ requestHandler, userBuilder: UserBuilder.noAuthentication, legacyCompat }));

  let closed = false;
  return {
    name,
    url: origin,
    port,
    jsonRpcUrl: origin + JSONRPC_PATH,
    server,
    seen,
    release: () => gate.release(),
    close: () => {
      if (closed) return Promise.resolve();
      closed = true;
      gate.drain();
      return new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
    },
  };
}
