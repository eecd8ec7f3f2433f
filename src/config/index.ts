export * from './schema.js';
export { ConfigError, configIssueMessages, formatConfigPath, loadConfigFile, parseConfigText, type ConfigOverrides } from './load.js';
export { configOverrides, OVERRIDABLE_SETTINGS, type OverrideFlags } from './overrides.js';
export { watchConfig, type ConfigWatcher } from './watch.js';
