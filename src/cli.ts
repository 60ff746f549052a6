#!/usr/bin/env node
/*
The `scratch` command. `run` (and `ws run`) is on the hot path of every CI step, so it is bundled into
this file and loads nothing else; every other command (and `run --help`) loads the yargs CLI on demand.
*/
import {runCli} from './cli/run-cli.js';

async function main(argv: string[]): Promise<number> {
	const runCommands = async (commandArguments: string[]) => {
		const {main: yargsMain} = await import('./cli/commands.js');
		return yargsMain(commandArguments);
	};

	if (argv[0] === 'run') {
		return runCli(argv.slice(1), {showHelp: () => runCommands(['run', '--help'])});
	}

	// `ws run` is a CI step too; `ws init` takes a command the same way.
	if (argv[0] === 'ws' && (argv[1] === 'run' || argv[1] === 'init')) {
		const subcommand = argv[1];
		const {wsInitCli, wsRunCli} = await import('./cli/ws-cli.js');
		const cli = subcommand === 'run' ? wsRunCli : wsInitCli;
		return cli(argv.slice(2), {showHelp: () => runCommands(['ws', subcommand, '--help'])});
	}

	return runCommands(argv);
}

// Exit at once rather than letting Node.js close every handle first: background work (the kernel's
// teardown of a discarded overlay, the deletion of its upper) starts when our descriptors close, and
// should not compete with our own exit. stdout and stderr writes are synchronous on Linux.
main(process.argv.slice(2)).then(
	(exitCode) => process.exit(exitCode),
	(error: unknown) => {
		process.stderr.write(
			`scratch: internal error: ${error instanceof Error ? error.message : String(error)}\n`,
		);
		process.exit(125);
	},
);
