import {statSync} from 'node:fs';
import path from 'node:path';
import {InvalidPathError} from '../errors.js';
import type {BackendChoice} from '../run/backend.js';
import {signalNumber} from '../run/namespace.js';
import {type RunHandle, type RunResult, startRun} from '../run/run.js';
import {writeFileAtomic} from '../system/atomic-file.js';
import {reportError} from './report-error.js';
import {parseRunArguments} from './run-arguments.js';

/** `run` fails with 125 whenever scratch itself fails, so its status never collides with the command's. */
export const scratchFailed = 125;
export const forwardedSignals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'];

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

		const jsonFile = jsonFileOf(parsed.jsonFile);

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
			touch: parsed.touch,
			measure: jsonFile !== undefined,
			onEvent(event) {
				if (event.type === 'fallback') {
					process.stderr.write(`${fallbackNotice(event.reason)}\n`);
				} else if (event.type === 'kept') {
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
		const result = await withForwardedSignals(run);
		await writeJsonFile(jsonFile, result);
		return exitStatusOfRun(result);
	} catch (error) {
		reportError(error, {verbose});
		return scratchFailed;
	}
}

/** What `auto` says on stderr when it falls back to fuse-overlayfs: one line, the reasons shortened. */
export function fallbackNotice(reason: string): string {
	return `scratch: using the fuse backend (fuse-overlayfs, slower than kernel overlayfs) because ${reason}`;
}

/** Wait for a run, passing SIGINT, SIGTERM, SIGHUP and SIGQUIT on to its command meanwhile. */
export async function withForwardedSignals(run: RunHandle): Promise<RunResult> {
	const forward = (signal: NodeJS.Signals) => run.kill(signal);
	for (const signal of forwardedSignals) {
		process.on(signal, forward);
	}

	try {
		return await run.result;
	} finally {
		for (const signal of forwardedSignals) {
			process.off(signal, forward);
		}
	}
}

/** scratch's exit status for a finished run: the command's, or 128+N when signal N was passed on. */
export function exitStatusOfRun(result: RunResult): number {
	return result.interruptedBy ? 128 + signalNumber(result.interruptedBy) : result.exitCode;
}

/** `--json-file FILE`: the absolute path, after checking its directory exists; undefined when not given. */
export function jsonFileOf(requested: string | undefined): string | undefined {
	if (requested === undefined) {
		return undefined;
	}

	const jsonFile = path.resolve(requested);
	checkJsonFileDirectory(jsonFile, requested);
	return jsonFile;
}

/** Write a summary to the `--json-file`, if one was given. */
export async function writeJsonFile(jsonFile: string | undefined, summary: unknown): Promise<void> {
	if (jsonFile) {
		await writeFileAtomic(jsonFile, `${JSON.stringify(summary, undefined, '\t')}\n`, {durable: false});
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
