import {UsageError} from '../errors.js';
import type {BackendChoice} from '../run/backend.js';
import {signalNumber} from '../run/namespace.js';
import type {RunHandle} from '../run/run.js';
import {describeHolder} from '../workspace/lock.js';
import {initWorkspace, startWorkspaceRun, type WorkspaceRunEvent} from '../workspace/workspaces.js';
import {renderWorkspaceInit} from './render-workspace.js';
import {exitCodeFor, reportError} from './report-error.js';
import {firstValue, parseCommandLine, type RunOptionSpec, runOptionSpecs} from './run-arguments.js';
import {
	exitStatusOfRun,
	fallbackNotice,
	forwardedSignals,
	jsonFileOf,
	scratchFailed,
	withForwardedSignals,
	writeJsonFile,
} from './run-cli.js';

/*
`scratch ws run` and `scratch ws init` take a command after `--`, like `run`, and share its fast parser
(no yargs on the path of a CI step). Their other options are `run`'s.
*/

const sharedNames = ['in-place', 'backend', 'touch', 'tmpfs', 'json-file', 'store', 'verbose'];
const shared = runOptionSpecs.filter((spec) => sharedNames.includes(spec.name));
const byName = (name: string) => runOptionSpecs.find((spec) => spec.name === name) as RunOptionSpec;

export const wsRunOptionSpecs: readonly RunOptionSpec[] = [
	{
		name: 'no-wait',
		type: 'boolean',
		description: 'Fail at once, instead of waiting, when another run holds the workspace',
	},
	...shared,
];

export const wsInitOptionSpecs: readonly RunOptionSpec[] = [
	byName('src'),
	{
		name: 'base',
		type: 'string',
		array: true,
		placeholder: 'NAME',
		description: 'Start from layer NAME (and its lowers) over the source; repeatable, later ones higher',
	},
	...shared,
];

function onWorkspaceEvent(event: WorkspaceRunEvent): void {
	if (event.type === 'waiting') {
		process.stderr.write(
			`scratch: workspace ${event.workspace} is busy: ${describeHolder(event.holder)} holds it; waiting (--no-wait fails instead)\n`,
		);
	} else if (event.type === 'fallback') {
		process.stderr.write(`${fallbackNotice(event.reason)}\n`);
	}
}

function runOptionsOf(values: Map<string, string[]>) {
	const store = firstValue(values, 'store');
	return {
		...(store === undefined ? {} : {store}),
		inPlace: values.has('in-place'),
		backend: (firstValue(values, 'backend') ?? 'auto') as BackendChoice,
		touch: values.get('touch') ?? [],
		tmpfs: values.get('tmpfs') ?? [],
	};
}

/** `scratch ws run WS [options] -- CMD...`: the command's exit status, or 125 when scratch failed. */
export async function wsRunCli(
	argv: readonly string[],
	{showHelp}: {showHelp: () => Promise<number>},
): Promise<number> {
	try {
		const parsed = parseCommandLine(argv, wsRunOptionSpecs, {usage: 'scratch ws run', positionalCount: 1});
		if (parsed.help) {
			return await showHelp();
		}

		const [workspace] = parsed.positionals;
		if (workspace === undefined) {
			throw new UsageError('no workspace given; write scratch ws run WS -- CMD');
		}

		const jsonFile = jsonFileOf(firstValue(parsed.values, 'json-file'));
		const run = await startWorkspaceRun({
			workspace,
			command: parsed.command,
			...runOptionsOf(parsed.values),
			noWait: parsed.values.has('no-wait'),
			measure: jsonFile !== undefined,
			onEvent: onWorkspaceEvent,
		});
		const result = await withForwardedSignals(run);
		await writeJsonFile(jsonFile, {workspace, ...result});
		return exitStatusOfRun(result);
	} catch (error) {
		reportError(error, {verbose: argv.includes('--verbose')});
		return scratchFailed;
	}
}

/**
`scratch ws init WS [options] [-- CMD...]`: 0 when the workspace was made; 1 when it could not be (the
init command failed, for one), 2 for bad usage.
*/
export async function wsInitCli(
	argv: readonly string[],
	{showHelp}: {showHelp: () => Promise<number>},
): Promise<number> {
	try {
		const parsed = parseCommandLine(argv, wsInitOptionSpecs, {usage: 'scratch ws init', positionalCount: 1});
		if (parsed.help) {
			return await showHelp();
		}

		const [workspace] = parsed.positionals;
		if (workspace === undefined) {
			throw new UsageError('no workspace name given; write scratch ws init WS [-- CMD...]');
		}

		const src = firstValue(parsed.values, 'src');
		const jsonFile = jsonFileOf(firstValue(parsed.values, 'json-file'));
		// The init command gets the signals sent to scratch; the workspace is then not made.
		let run: RunHandle | undefined;
		let received: NodeJS.Signals | undefined;
		const forward = (signal: NodeJS.Signals) => {
			received = signal;
			run?.kill(signal);
		};
		for (const signal of forwardedSignals) {
			process.on(signal, forward);
		}

		const init = await initWorkspace({
			workspace,
			...(parsed.command.length > 0 ? {command: parsed.command} : {}),
			...(src === undefined ? {} : {src}),
			bases: parsed.values.get('base') ?? [],
			...runOptionsOf(parsed.values),
			measure: jsonFile !== undefined,
			onEvent: onWorkspaceEvent,
			onRunStarted(handle) {
				run = handle;
				if (received) {
					handle.kill(received);
				}
			},
		}).catch((error: unknown) => {
			throw received ? new InterruptedError(received, error) : error;
		});
		for (const signal of forwardedSignals) {
			process.off(signal, forward);
		}

		await writeJsonFile(jsonFile, init);
		process.stderr.write(`scratch: ${renderWorkspaceInit(init)}`);
		return 0;
	} catch (error) {
		if (error instanceof InterruptedError) {
			reportError(error.cause, {verbose: argv.includes('--verbose')});
			return 128 + signalNumber(error.signal);
		}

		reportError(error, {verbose: argv.includes('--verbose')});
		return exitCodeFor(error);
	}
}

/** The init was interrupted by a signal scratch passed on: exit 128+N, like the command would. */
class InterruptedError extends Error {
	readonly signal: NodeJS.Signals;
	override readonly cause: unknown;

	constructor(signal: NodeJS.Signals, cause: unknown) {
		super(`interrupted by ${signal}`);
		this.signal = signal;
		this.cause = cause;
	}
}
