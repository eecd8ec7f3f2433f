import type { AgentCard } from '@a2a-js/sdk';
import { JsonRpcTransportFactory, type RequestOptions, type Transport } from '@a2a-js/sdk/client';
import { LegacyJsonRpcTransport } from '@a2a-js/sdk/compat/v0_3/client';
import { LegacyJsonRpcTransportHandler } from '@a2a-js/sdk/compat/v0_3/server';
import { JsonRpcTransportHandler, ServerCallContext, type A2ARequestHandler } from '@a2a-js/sdk/server';
import type { A2aVersion } from '../routing/a2a.js';

/*
 * The A2A version bridge: a JSON-RPC call of one protocol version (v0.3 or v1.0) served by an agent
 * that speaks only the other. Both sides are the official SDK's: its JSON-RPC transport handler
 * for the caller's version parses the call and answers in that version, its client transport for
 * the agent's version speaks to the agent, and between them a relay hands each call over as it is
 * (the SDK translates the messages, tasks, events and errors of both versions to and from its own
 * types). The agent is reached through `fetch`, which the gateway gives its chosen endpoint,
 * connection pool, upstream TLS and headers.
 */

/** What the bridge answers: one JSON-RPC response, or a stream of them (SSE events). */
export type BridgedAnswer = { readonly stream: false; readonly body: unknown } | { readonly stream: true; readonly events: AsyncGenerator<unknown, void, undefined> };

/** The least of a card the SDK's pieces read: the interfaces (its client factory) and streaming (its handlers). */
function minimalCard(supportedInterfaces: readonly object[], streaming: boolean): AgentCard {
  const card = { name: 'agent', description: '', version: '1.0.0', supportedInterfaces, capabilities: { streaming }, defaultInputModes: [], defaultOutputModes: [], skills: [] };
  return card as unknown as AgentCard;
}

/**
 * Hands every call of the caller's side to the agent's side, unchanged (the SDK's types are
 * version-neutral). The card it shows the caller's side carries what that side checks: streaming.
 */
function relay(transport: Transport, options: RequestOptions, streaming: boolean): A2ARequestHandler {
  const card = minimalCard([], streaming);
  return {
    getAgentCard: () => Promise.resolve(card),
    getAuthenticatedExtendedAgentCard: (params) => transport.getExtendedAgentCard(params, options),
    sendMessage: (params) => transport.sendMessage(params, options),
    sendMessageStream: (params) => transport.sendMessageStream(params, options),
    getTask: (params) => transport.getTask(params, options),
    cancelTask: (params) => transport.cancelTask(params, options),
    createTaskPushNotificationConfig: (params) => transport.createTaskPushNotificationConfig(params, options),
    getTaskPushNotificationConfig: (params) => transport.getTaskPushNotificationConfig(params, options),
    listTaskPushNotificationConfigs: (params) => transport.listTaskPushNotificationConfig(params, options),
    deleteTaskPushNotificationConfig: (params) => transport.deleteTaskPushNotificationConfig(params, options),
    resubscribe: (params) => transport.resubscribeTask(params, options),
    listTasks: (params) => transport.listTasks(params, options),
  };
}

/** A v1.0 client transport for the agent's JSON-RPC URL. */
function v1Transport(url: string, fetchImpl: typeof fetch): Promise<Transport> {
  return new JsonRpcTransportFactory({ fetchImpl }).create(url, minimalCard([{ url, protocolBinding: 'JSONRPC', protocolVersion: '1.0' }], true));
}

export interface BridgedCall {
  /** The caller's JSON-RPC request, parsed. */
  readonly body: unknown;
  readonly callerVersion: A2aVersion;
  /** The agent's JSON-RPC URL, of the other version. */
  readonly agentUrl: string;
  readonly fetchImpl: typeof fetch;
  readonly signal: AbortSignal;
  /** Whether the agent's card says it streams (message/stream and resubscribe need it). */
  readonly streaming: boolean;
}

/**
 * Serves `call.body` (a JSON-RPC call of `callerVersion`) through the agent's JSON-RPC interface at
 * `agentUrl`, of the other version. Never rejects for what the agent did: its errors, and a failure
 * to reach it, are JSON-RPC error responses of the caller's version (the caller of the bridge tells
 * a failure to reach the agent from its own fetch).
 */
export async function bridgeA2aCall(call: BridgedCall): Promise<BridgedAnswer> {
  const { body, callerVersion, agentUrl, fetchImpl, signal, streaming } = call;
  // The v1.0 side names its version (A2A-Version: an agent assumes 0.3 without it).
  const toV1 = callerVersion === '0.3';
  const transport = toV1 ? await v1Transport(agentUrl, fetchImpl) : new LegacyJsonRpcTransport({ endpoint: agentUrl, fetchImpl });
  const forward = relay(transport, toV1 ? { signal, serviceParameters: { 'A2A-Version': '1.0' } } : { signal }, streaming);
  const handler = toV1 ? new LegacyJsonRpcTransportHandler(forward) : new JsonRpcTransportHandler(forward);
  const context = new ServerCallContext({ requestedVersion: callerVersion });
  const answer = await handler.handle(body as Record<string, unknown>, context);
  if (Symbol.asyncIterator in answer) return { stream: true, events: answer as AsyncGenerator<unknown, void, undefined> };
  return { stream: false, body: answer };
}
