#!/usr/bin/env node
/*
The `scratch` command. `run` is on the hot path of every CI step, so it loads only what it needs; every
other command (and `run --help`) goes through yargs, loaded on demand.
*/
const argv = process.argv.slice(2);
if (argv[0] === 'run') {
	const {runCli} = await import('./cli/run-cli.js');
	process.exitCode = await runCli(argv.slice(1));
} else {
	const {main} = await import('./cli/commands.js');
	process.exitCode = await main(argv);
}
