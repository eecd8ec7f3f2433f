import { CONFIG_FILE_OPTION, CONFIG_OVERRIDE_OPTIONS, type Command } from './command.js';
import { configFileFrom, effectiveConfig } from './config-commands.js';
import { CliError } from './io.js';

export const startCommand: Command = {
  name: 'start',
  positionals: { min: 0, max: 0 },
  summary: 'run the gateway (until SIGTERM/SIGINT; SIGHUP or editing the config file reloads it)',
  options: { ...CONFIG_FILE_OPTION, ...CONFIG_OVERRIDE_OPTIONS },
  async run({ values, io }) {
    const { config, configFile, stateDir, load } = await effectiveConfig(configFileFrom(values, io), values, io.env);
    // Loaded here, not at the top: help and config commands must not pay for (or depend on) the whole gateway.
    const { startGateway } = await import('../gateway.js');
    const options = { config, stateDir, configFile, loadConfig: load, env: io.env, print: io.out, handleSignals: true };
    try {
      await startGateway(options);
    } catch (err) {
      throw new CliError(`the gateway could not start: ${(err as Error).message}`);
    }
    // The listeners keep the process alive; the gateway's signal handlers end it.
    return 0;
  },
};
