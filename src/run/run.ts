import path from 'node:path';
import {describeSystemError, PermissionError, ScratchError} from '../errors.js';
import {
	createRunDirectory,
	createRunId,
	keepRun,
	type RunRecord,
	reclaimAbandoned,
	runEntries,
} from '../store/runs.js';
import {defaultStorePath, openStore, type Store, storeLayout} from '../store/store.js';
import {moveToTrash, startBackgroundDeleter} from '../store/trash.js';
import {findExecutable} from '../system/executables.js';
import {currentProcessIdentity} from '../system/process-identity.js';
import {type BackendChoice, type BackendName, selectBackend} from './backend.js';
import {type NamespaceProcess, type StdioTarget, signalNumber, startNamespace} from './namespace.js';
import {
	exitStatusOf,
	isUnderOtherTmpfs,
	type NamespacePlan,
	type NamespaceTools,
	resolveTmpfsPath,
} from './namespace-plan.js';
import {
	checkCommand,
	checkStorePlacement,
	checkTmpfsMountPoint,
	relativeWorkingDirectory,
	resolveSourceTree,
} from './preflight.js';
import {translateSetupFailure} from './setup-errors.js';
import {measureUpper, type WriteStats} from './upper-stats.js';

/** Options of one run. */
export type RunOptions = {
	/** The command and its arguments; the first is looked up in PATH inside the view. */
	command: string[];
	/** Source tree: the bottom of the view, never written. Default: the current directory. */
	src?: string;
	/** The caller's directory; when inside the source, the command starts at the same place in the view. */
	cwd?: string;
	/** Store directory. Default: `SCRATCH_STORE`, else `/var/lib/scratch` (root) or `~/.local/share/scratch`. */
	store?: string;
	/** Mount the view over the source's own path (inside the run's namespace only). */
	inPlace?: boolean;
	/** Keep the run's writes in the store instead of discarding them. */
	keep?: boolean;
	/** `auto` (default), `kernel` (root) or `userns` (user namespace). */
	backend?: BackendChoice;
	/** Paths that get a private tmpfs in the run: relative ones inside the view, absolute ones where they are. */
	tmpfs?: string[];
	/** Count files and bytes written (walks the upper dir after the command). */
	measure?: boolean;
	/** Environment of the command. Default: `process.env`. `SCRATCH_RUN_ID` is added. */
	env?: NodeJS.ProcessEnv;
	/** The command's stdin, stdout and stderr. Default: inherited. */
	stdio?: [StdioTarget, StdioTarget, StdioTarget];
	/** Progress: the CLI renders these; the library never prints. */
	onEvent?: (event: RunEvent) => void;
};

/** Progress of a run. */
export type RunEvent =
	| {type: 'started'; runId: string; backend: BackendName; view: string}
	| {type: 'kept'; runId: string; upper: string};

/** What happened in a run. */
export type RunResult = {
	runId: string;
	/** The command's exit status (126/127 cannot execute / not found, 128+N killed by signal N). */
	exitCode: number;
	/** Set when a signal was forwarded to the run (the CLI then exits 128+N). */
	interruptedBy?: NodeJS.Signals;
	/** False when the run was interrupted before the command could start. */
	commandStarted: boolean;
	backend: BackendName;
	source: string;
	store: string;
	kept: boolean;
	/** The kept upper dir, when `keep` was set. */
	keptUpper?: string;
	durations: {setupMs: number; commandMs: number; teardownMs: number; totalMs: number};
	/** Present when `measure` was set. */
	written?: WriteStats;
};

/** A run in progress. */
export type RunHandle = {
	/** The run's unique id. */
	readonly id: string;
	readonly result: Promise<RunResult>;
	/** Forward a signal to the command (SIGINT, SIGTERM, ...); before it starts, abort the run. */
	kill(signal: NodeJS.Signals): void;
};

function resolveTools(): NamespaceTools {
	return {
		setpriv: findExecutable('setpriv'),
		unshare: findExecutable('unshare'),
		sh: findExecutable('sh'),
		mount: findExecutable('mount'),
		mkdir: findExecutable('mkdir'),
	};
}

/** Start a run. Errors before the command starts reject `result` with a ScratchError; nothing is left behind. */
export function startRun(options: RunOptions): RunHandle {
	const id = createRunId();
	let namespace: NamespaceProcess | undefined;
	let pendingSignal: NodeJS.Signals | undefined;
	let interruptedBy: NodeJS.Signals | undefined;
	const handle: RunHandle = {
		id,
		result: execute(),
		kill(signal) {
			interruptedBy = signal;
			if (namespace) {
				namespace.signal(signal);
			} else {
				pendingSignal = signal;
			}
		},
	};

	async function execute(): Promise<RunResult> {
		const startedAt = performance.now();
		checkCommand(options.command);
		const source = resolveSourceTree(options.src ?? process.cwd());
		const backend = selectBackend(options.backend ?? 'auto');
		const tools = resolveTools();
		const storePath = path.resolve(options.store ?? defaultStorePath());
		checkStorePlacement(storePath, source);
		const relative = relativeWorkingDirectory(source, options.cwd ?? process.cwd());

		const record: RunRecord = {
			id,
			state: 'running',
			owner: currentProcessIdentity(),
			created: new Date().toISOString(),
			src: source,
			command: options.command,
			inPlace: options.inPlace ?? false,
			backend,
		};
		const runDirectory = path.join(storeLayout(storePath).runsDir, id);
		const target = options.inPlace ? source : path.join(runDirectory, runEntries.merged);
		const requestedTmpfs = options.tmpfs ?? [];
		const tmpfs = requestedTmpfs.map((requested) => resolveTmpfsPath(requested, {source, target}));
		const outsidePaths = tmpfs.filter((mount) => !mount.create).map((mount) => mount.path);
		for (const [index, mount] of tmpfs.entries()) {
			if (!mount.create && !isUnderOtherTmpfs(mount.path, outsidePaths)) {
				checkTmpfsMountPoint(mount.path, requestedTmpfs[index] as string);
			}
		}
		const plan: NamespacePlan = {
			backend,
			source,
			target,
			workingDirectory: path.join(target, relative),
			volatile: !options.keep,
			tmpfs,
			command: options.command,
		};

		const store = await openStore(storePath);
		if (pendingSignal) {
			return abortedResult(id, store, backend, source, startedAt, pendingSignal);
		}

		try {
			createRunDirectory(store, record);
		} catch (error) {
			throw new PermissionError(
				`cannot create the run's directories in store ${store.root}: ${describeSystemError(error)}; use a store you own with --store DIR`,
				{cause: error},
			);
		}

		namespace = startNamespace(plan, tools, {
			runDirectory,
			stdio: options.stdio ?? ['inherit', 'inherit', 'inherit'],
			environment: {...(options.env ?? process.env), SCRATCH_RUN_ID: id},
		});
		if (pendingSignal) {
			namespace.signal(pendingSignal);
		}

		// Forked now, while the namespace is being set up; it starts deleting once released.
		const deleter = startBackgroundDeleter(store);
		try {
			return await finishRun(namespace);
		} finally {
			deleter.release();
		}

		async function finishRun(namespace: NamespaceProcess): Promise<RunResult> {
			let readyAt = startedAt;
			void namespace.ready.then(() => {
				readyAt = performance.now();
				options.onEvent?.({type: 'started', runId: id, backend, view: plan.workingDirectory});
			});
			// A kept upper must be fully unmounted before it is synced and recorded; a discarded one need not
			// wait for the kernel's teardown of the overlay (see namespace-plan.ts).
			let exit = await namespace.commandExit;
			if (options.keep) {
				namespace.release();
				exit = await namespace.closed;
			}

			const exitedAt = performance.now();
			if (!options.keep) {
				namespace.detach();
			}

			if (!exit.started) {
				finishDiscard(store, runDirectory, id);
				if (interruptedBy) {
					return abortedResult(id, store, backend, source, startedAt, interruptedBy);
				}

				throw translateSetupFailure(exit.setupOutput, backend, store.root);
			}

			const exitCode = exitStatusOf(exit.code, exit.signal ? signalNumber(exit.signal) : undefined);
			const written = options.measure
				? await measureUpper(path.join(runDirectory, runEntries.upper))
				: undefined;
			let keptUpper: string | undefined;
			if (options.keep) {
				try {
					const keptDirectory = await keepRun(store, runDirectory, {
						...record,
						state: 'kept',
						finished: new Date().toISOString(),
						exitCode,
					});
					keptUpper = path.join(keptDirectory, runEntries.upper);
				} catch (error) {
					throw new ScratchError(
						`the command finished (status ${exitCode}) but keeping run ${id} failed: ${describeSystemError(error)}; its writes are still in ${runDirectory}`,
						{cause: error},
					);
				}

				options.onEvent?.({type: 'kept', runId: id, upper: keptUpper});
				reclaimAbandoned(store);
			} else {
				finishDiscard(store, runDirectory, id);
			}

			const finishedAt = performance.now();
			return {
				runId: id,
				exitCode,
				...(interruptedBy ? {interruptedBy} : {}),
				commandStarted: true,
				backend,
				source,
				store: store.root,
				kept: Boolean(options.keep),
				...(keptUpper ? {keptUpper} : {}),
				durations: {
					setupMs: round(readyAt - startedAt),
					commandMs: round(exitedAt - readyAt),
					teardownMs: round(finishedAt - exitedAt),
					totalMs: round(finishedAt - startedAt),
				},
				...(written ? {written} : {}),
			};
		}
	}

	return handle;
}

/** Run a command to completion. */
export async function runCommand(options: RunOptions): Promise<RunResult> {
	return startRun(options).result;
}

/*
Discard: one rename into the trash; the run's background deleter removes it after we are gone, so the
caller never waits for the size of what was written. Leftovers of runs whose scratch died are swept
along.
*/
function finishDiscard(store: Store, runDirectory: string, id: string): void {
	moveToTrash(store, runDirectory, `run-${id}`);
	reclaimAbandoned(store);
}

function abortedResult(
	id: string,
	store: Store,
	backend: BackendName,
	source: string,
	startedAt: number,
	signal: NodeJS.Signals,
): RunResult {
	const totalMs = round(performance.now() - startedAt);
	return {
		runId: id,
		exitCode: 128 + signalNumber(signal),
		interruptedBy: signal,
		commandStarted: false,
		backend,
		source,
		store: store.root,
		kept: false,
		durations: {setupMs: totalMs, commandMs: 0, teardownMs: 0, totalMs},
	};
}

function round(milliseconds: number): number {
	return Math.round(milliseconds * 100) / 100;
}
