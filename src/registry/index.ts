export { Registry, type RegistryOptions, type CardsConfig } from './registry.js';
export { AgentChanges } from './changes.js';
export { rewriteAgentCard, cardSkills, CARD_PATHS } from './card.js';
export * from './types.js';
