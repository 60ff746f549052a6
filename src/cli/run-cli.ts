import {statSync} from 'node:fs';
import path from 'node:path';
import {InvalidPathError} from '../errors.js';
import type {BackendChoice} from '../run/backend.js';
import {signalNumber} from '../run/namespace.js';
import {type RunResult, startRun} from '../run/run.js';
import {writeFileAtomic} from '../system/atomic-file.js';
import {reportError} from './report-error.js';
import {parseRunArguments} from './run-arguments.js';

/** `run` fails with 125 whenever scratch itself fails, so its status never collides with the command's. */
const scratchFailed = 125;
const forwardedSignals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'];

/**
`scratch run`: returns the exit status. `showHelp` prints `run --help` (it lives with yargs, which the
run path does not load).
*/
export async function runCli(
	argv: readonly string[],
	{showHelp}: {showHelp: () => Promise<number>},
): Promise<number> {
	let verbose = argv.includes('--verbose');
	try {
		const parsed = parseRunArguments(argv);
		verbose = parsed.verbose;
		if (parsed.help) {
			return await showHelp();
		}

		const jsonFile = parsed.jsonFile === undefined ? undefined : path.resolve(parsed.jsonFile);
		if (jsonFile) {
			checkJsonFileDirectory(jsonFile, parsed.jsonFile as string);
		}

		const run = startRun({
			command: parsed.command,
			...(parsed.src === undefined ? {} : {src: parsed.src}),
			...(parsed.store === undefined ? {} : {store: parsed.store}),
			inPlace: parsed.inPlace,
			keep: parsed.keep,
			bases: parsed.bases,
			...(parsed.promote === undefined ? {} : {promote: parsed.promote}),
			backend: parsed.backend as BackendChoice,
			tmpfs: parsed.tmpfs,
			measure: jsonFile !== undefined,
			onEvent(event) {
				if (event.type === 'kept') {
					process.stderr.write(`scratch: kept run ${event.runId}; its writes are in ${event.upper}\n`);
				} else if (event.type === 'promoted') {
					process.stderr.write(
						`scratch: promoted the run's writes as ${event.name} (layer ${event.layer})\n`,
					);
				} else if (event.type === 'not-promoted') {
					process.stderr.write(
						`scratch: not promoted to ${event.name}: ${event.reason}; ${event.name} is unchanged\n`,
					);
				}
			},
		});
		const forward = (signal: NodeJS.Signals) => run.kill(signal);
		for (const signal of forwardedSignals) {
			process.on(signal, forward);
		}

		let result: RunResult;
		try {
			result = await run.result;
		} finally {
			for (const signal of forwardedSignals) {
				process.off(signal, forward);
			}
		}

		if (jsonFile) {
			await writeFileAtomic(jsonFile, `${JSON.stringify(result, undefined, '\t')}\n`, {durable: false});
		}

		return result.interruptedBy ? 128 + signalNumber(result.interruptedBy) : result.exitCode;
	} catch (error) {
		reportError(error, {verbose});
		return scratchFailed;
	}
}

function checkJsonFileDirectory(jsonFile: string, requested: string): void {
	let isDirectory = false;
	try {
		isDirectory = statSync(path.dirname(jsonFile)).isDirectory();
	} catch {}

	if (!isDirectory) {
		throw new InvalidPathError(
			`--json-file ${requested}: directory ${path.dirname(jsonFile)} does not exist; create it or write the summary elsewhere`,
		);
	}
}
