export { Registry, type RegistryOptions, type CardsConfig } from './registry.js';
export { endpointHealthEpoch } from './endpoint.js';
export { rewriteAgentCard, cardSkills, CARD_PATHS } from './card.js';
export * from './types.js';
