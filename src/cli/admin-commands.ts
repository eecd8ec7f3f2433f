import { existsSync } from 'node:fs';
import path from 'node:path';
import { CONFIG_FILE_OPTION, type Command } from './command.js';
import { configFileFrom, effectiveConfig } from './config-commands.js';
import { CliError } from './io.js';

export const adminCommands: Command[] = [
  {
    name: 'admin reset-token',
    positionals: { min: 0, max: 0 },
    summary: 'make a new admin token (printed once, stored hashed); running gateways accept it at once',
    options: {
      home: { type: 'string', placeholder: 'DIR', help: 'state directory (DMSC_HOME; default ./.dmsc)' },
      ...CONFIG_FILE_OPTION,
    },
    async run({ values, io }) {
      const { stateDir } = await effectiveConfig(configFileFrom(values, io), { home: values.home }, io.env);
      if (!existsSync(stateDir)) {
        throw new CliError(`no gateway state in ${path.resolve(stateDir)}: start the gateway once, or point at its state with --home or DMSC_HOME`);
      }
      // The store pulls in the native SQLite binding: load it only for the command that needs it.
      const [{ openStore }, { generateAdminToken, hashToken }, { ADMIN_TOKEN_META_KEY }] = await Promise.all([
        import('../store/index.js'),
        import('../admin/index.js'),
        import('../gateway.js'),
      ]);
      const store = await openStore(stateDir);
      try {
        const token = generateAdminToken();
        await store.setMeta(ADMIN_TOKEN_META_KEY, hashToken(token));
        io.out(token);
      } finally {
        await store.close();
      }
      io.err('New admin token above (shown once, stored hashed); the previous stored token no longer works.');
      return 0;
    },
  },
];
