import {existsSync} from 'node:fs';
import path from 'node:path';
import {describeSystemError, PermissionError, ScratchError, StoreError, UsageError} from '../errors.js';
import {checkName} from '../store/names.js';
import {layerRecordOfRun, promoteTree} from '../store/promote.js';
import {resolveBases} from '../store/resolve.js';
import {
	createRunDirectory,
	createRunId,
	keepRun,
	type RunRecord,
	reclaimAbandoned,
	runEntries,
} from '../store/runs.js';
import {
	defaultStorePath,
	isOnOverlayfs,
	openStore,
	type Store,
	storeLayout,
	storeRecordName,
} from '../store/store.js';
import {moveToTrash, startBackgroundDeleter} from '../store/trash.js';
import {holdStoreUse} from '../store/use-lock.js';
import {crashPoint} from '../system/crash-point.js';
import {findExecutable} from '../system/executables.js';
import {readKernelErrors, uptimeSeconds} from '../system/kernel-messages.js';
import {currentProcessIdentity} from '../system/process-identity.js';
import {syncFileSystem} from '../system/sync-file-system.js';
import {
	type BackendChoice,
	type BackendName,
	backendProblem,
	chooseBackend,
	describePassedOver,
	readHostFacts,
	readStoreFacts,
	usesUserNamespace,
} from './backend.js';
import {type NamespaceProcess, type StdioTarget, signalNumber, startNamespace} from './namespace.js';
import {
	checkMountOptions,
	exitStatusOf,
	type FuseTools,
	fuseToolNames,
	isUnderOtherTmpfs,
	isWithin,
	type NamespacePlan,
	type NamespaceTools,
	overlayOptionsOf,
	resolveTmpfsPath,
} from './namespace-plan.js';
import {
	checkCommand,
	checkStorePlacement,
	checkTmpfsMountPoint,
	checkTmpfsTarget,
	normalizeTouchGlob,
	relativeWorkingDirectory,
	resolveSourceTree,
} from './preflight.js';
import {kernelMessagesAbout, parseSetupOutput, translateSetupFailure} from './setup-errors.js';
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
	/** Keep the run's writes in the store instead of discarding them (with `promote`: only when not promoted). */
	keep?: boolean;
	/** Layers (names, or layer ids) stacked over the source, each with its lowers; later ones stack higher. */
	bases?: string[];
	/** When the command exits 0, its writes become a layer and this name points at it. */
	promote?: string;
	/** `auto` (default), `kernel` (root), `userns` (user namespace) or `fuse` (fuse-overlayfs). */
	backend?: BackendChoice;
	/** Paths that get a private tmpfs in the run: relative ones inside the view, absolute ones where they are. */
	tmpfs?: string[];
	/** Globs, relative to the view's root, whose files are copied up before the command starts (`var/lib/rpm/*`). */
	touch?: string[];
	/** Internal: the writes persist in a workspace's upper instead (`scratch ws run`); see workspace/. */
	persistent?: PersistentView;
	/** Count files and bytes written (walks the upper dir after the command). */
	measure?: boolean;
	/** Environment of the command. Default: `process.env`. `SCRATCH_RUN_ID` is added. */
	env?: NodeJS.ProcessEnv;
	/** The command's stdin, stdout and stderr. Default: inherited. */
	stdio?: [StdioTarget, StdioTarget, StdioTarget];
	/** Progress: the CLI renders these; the library never prints. */
	onEvent?: (event: RunEvent) => void;
};

/**
A view whose writes persist: a workspace's `upper` and `work` dirs, and its `merged` dir as the mount
point, so the command sees the same path in every run of the workspace.
*/
export type PersistentView = {
	/** Absolute dir holding `upper`, `work` and `merged`. */
	directory: string;
	/** The workspace's name, recorded in the run's lease. */
	workspace: string;
	/** The layers to mount, bottom first; called while the store is held, so gc cannot take them meanwhile. */
	layers(store: Store): string[];
};

/** Progress of a run. */
export type RunEvent =
	/** `auto` passed over the kernel backends (which are faster) and took fuse-overlayfs: why. */
	| {type: 'fallback'; backend: BackendName; reason: string}
	| {type: 'started'; runId: string; backend: BackendName; view: string}
	| {type: 'kept'; runId: string; upper: string}
	| {type: 'promoted'; runId: string; name: string; layer: string}
	| {type: 'not-promoted'; runId: string; name: string; reason: string};

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
	/** Layers stacked over the source, bottom first. */
	layers: string[];
	/** The layer the writes became, when `promote` was set and the command exited 0. */
	promoted?: {name: string; layer: string};
	/** Why nothing was promoted, when `promote` was set. */
	notPromoted?: string;
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

function resolveTools(backend: BackendName): NamespaceTools {
	return {
		setpriv: findExecutable('setpriv'),
		unshare: findExecutable('unshare'),
		sh: findExecutable('sh'),
		mount: findExecutable('mount'),
		mkdir: findExecutable('mkdir'),
		...(backend === 'fuse'
			? {
					fuse: Object.fromEntries(
						fuseToolNames.map(([key, program]) => [key, findExecutable(program)]),
					) as FuseTools,
				}
			: {}),
	};
}

/** The run dir's file for fuse-overlayfs's messages (and its teardown's xattr listing). */
const fuseLogName = 'fuse.log';

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
		// The kernel's log is read only when a mount fails, from a second before the run began.
		const bootSecondsAtStart = uptimeSeconds();
		checkCommand(options.command);
		if (options.promote !== undefined) {
			checkName(options.promote, '--promote');
		}

		const {persistent} = options;
		if (persistent && (options.promote !== undefined || options.keep)) {
			throw new UsageError(
				"a workspace's run keeps its writes in the workspace: it takes no promote or keep",
			);
		}

		const touch = (options.touch ?? []).map((glob) => normalizeTouchGlob(glob));

		const bases = options.bases ?? [];
		const source = resolveSourceTree(options.src ?? process.cwd());
		const storePath = path.resolve(options.store ?? defaultStorePath());
		const hostFacts = readHostFacts();
		const storeFacts = readStoreFacts(storePath);
		const selection = chooseBackend(options.backend ?? 'auto', hostFacts, storeFacts);
		const {passedOver} = selection;
		let {backend} = selection;
		let tools = resolveTools(backend);
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
			layers: [],
			bases,
			...(persistent ? {workspace: persistent.workspace} : {}),
		};
		const runDirectory = path.join(storeLayout(storePath).runsDir, id);
		const target = options.inPlace
			? source
			: path.join(persistent?.directory ?? runDirectory, runEntries.merged);
		const requestedTmpfs = options.tmpfs ?? [];
		const tmpfs = requestedTmpfs.map((requested) => resolveTmpfsPath(requested, {source, target}));
		const outsidePaths = tmpfs.filter((mount) => !mount.create).map((mount) => mount.path);
		for (const [index, mount] of tmpfs.entries()) {
			if (!mount.create) {
				checkTmpfsTarget(mount.path, requestedTmpfs[index] as string);
			}

			if (!mount.create && !isUnderOtherTmpfs(mount.path, outsidePaths)) {
				checkTmpfsMountPoint(mount.path, requestedTmpfs[index] as string);
			}
		}
		if (backend === 'fuse') {
			const problem = fuseTmpfsProblem(tmpfs, storePath, source);
			if (problem) {
				throw new UsageError(problem);
			}
		}

		const store = await openStore(storePath);
		if (pendingSignal) {
			return abortedResult(id, store, backend, source, startedAt, pendingSignal);
		}

		if (backend === 'fuse' && passedOver.length > 0) {
			options.onEvent?.({type: 'fallback', backend, reason: describePassedOver(passedOver)});
		}

		const upperOfRun = path.join(persistent?.directory ?? runDirectory, runEntries.upper);

		// While the bases are resolved and the lease naming them is written, gc must not sweep them.
		const hold = bases.length > 0 || persistent ? await holdStoreUse(store) : undefined;
		const fusePlan = {
			// Counting the writes (--json-file) needs them in the store's format too.
			keepWrites:
				Boolean(options.keep) ||
				options.promote !== undefined ||
				persistent !== undefined ||
				Boolean(options.measure),
			upper: upperOfRun,
			layerFormat: store.layerFormat,
			log: path.join(runDirectory, fuseLogName),
		};
		const plan: NamespacePlan = {
			backend,
			userNamespace: usesUserNamespace(backend, hostFacts.euid),
			...(backend === 'fuse' ? {fuse: fusePlan} : {}),
			source,
			target,
			workingDirectory: path.join(target, relative),
			// A workspace's upper outlives the run, and a volatile mount would refuse it after a crash.
			volatile: !options.keep && !persistent,
			layers: [],
			layersDirectory: store.layersDir,
			runId: id,
			...(persistent
				? {
						writable: {
							upper: path.relative(store.layersDir, path.join(persistent.directory, runEntries.upper)),
							work: path.relative(store.layersDir, path.join(persistent.directory, runEntries.work)),
						},
					}
				: {}),
			touch,
			tmpfs,
			command: options.command,
		};
		try {
			const layers = persistent ? persistent.layers(store) : resolveBases(store, bases).layers;
			record.layers = layers;
			plan.layers = layers;
			checkMountOptions(plan);
			try {
				createRunDirectory(store, record);
			} catch (error) {
				throw runDirectoryError(store, error);
			}

			crashPoint('run-prepared');
		} finally {
			hold?.release();
		}

		// The run's view as the plan and tools say now (the fallback to fuse starts it a second time).
		const startView = () =>
			startNamespace(plan, tools, {
				runDirectory,
				stdio: options.stdio ?? ['inherit', 'inherit', 'inherit'],
				environment: {...(options.env ?? process.env), SCRATCH_RUN_ID: id},
			});
		namespace = startView();
		if (pendingSignal) {
			namespace.signal(pendingSignal);
		}

		// Forked now, while the namespace is being set up; it starts deleting once released and once the
		// namespace is gone (see trash.ts).
		const deleters = [startBackgroundDeleter(store, {alsoAfter: namespace.gone})];
		namespace.gone?.destroy();
		try {
			return await finishRun(namespace);
		} finally {
			for (const deleter of deleters) {
				deleter.release();
			}
		}

		async function finishRun(current: NamespaceProcess): Promise<RunResult> {
			let readyAt = startedAt;
			void current.ready.then(() => {
				readyAt = performance.now();
				options.onEvent?.({type: 'started', runId: id, backend, view: plan.workingDirectory});
			});
			/*
			A kept upper must be fully unmounted before it is synced and recorded. A discarded or promoted one
			need not wait for the kernel's teardown of the overlay (it evicts every inode the run touched, see
			namespace-plan.ts): pid 1 reports the exit only once every process of the run is gone, so nothing
			can write to the upper any more, and the mount, unreachable, dies with this process.
			*/
			let exit = await current.commandExit;
			const statusNow = exitStatusOf(exit.code, exit.signal ? signalNumber(exit.signal) : undefined);
			// A fuse view that could not be unmounted cleanly may not have all its writes in the upper.
			const unclean = exit.teardown !== undefined && exit.teardown !== 'clean';
			const uncleanReason = {
				died: 'the fuse-overlayfs daemon died while the command ran (writes after that failed), so its writes cannot be trusted',
				stuck:
					'the fuse-overlayfs view could not be unmounted (a process of the run would not stop), so its writes cannot be trusted',
				unnormalized:
					"the writes of the fuse-overlayfs view could not be put in the store's layer format, so they cannot be trusted",
				clean: '',
			}[exit.teardown ?? 'clean'];
			const promoting =
				options.promote !== undefined && exit.started && statusNow === 0 && !interruptedBy && !unclean;
			const keeping = Boolean(options.keep) && !promoting && !unclean;
			// A kept upper, or a workspace's, is used again: the overlay must be gone from it first.
			const waitForUnmount = keeping || persistent !== undefined;
			if (waitForUnmount) {
				current.release();
				exit = await current.closed;
			}

			const exitedAt = performance.now();
			if (!waitForUnmount) {
				current.detach();
			}

			if (!exit.started) {
				if (interruptedBy) {
					finishDiscard(store, runDirectory, id);
					return abortedResult(id, store, backend, source, startedAt, interruptedBy);
				}

				const failure = translateSetupFailure(
					exit.setupOutput,
					backend,
					store.root,
					bootSecondsAtStart === undefined
						? []
						: kernelMessagesAbout(
								readKernelErrors(bootSecondsAtStart - 0.1, /^(overlay|overlayfs|fuse)\b/),
								overlayOptionsOf(plan),
							),
					{sourceOnOverlayfs: isOnOverlayfs(source)},
				);
				/*
				Facts cannot tell everything (overlays nested too deep below the source, a security module, a file
				system that looks fine): when the kernel refused the overlay itself and auto chose, fuse-overlayfs
				gets its turn, in the same run dir (the failed mount wrote nothing).
				*/
				const canFallBack =
					(options.backend ?? 'auto') === 'auto' &&
					backend !== 'fuse' &&
					parseSetupOutput(exit.setupOutput).step === 'overlay' &&
					backendProblem('fuse', hostFacts, storeFacts) === undefined &&
					fuseTmpfsProblem(tmpfs, store.root, source) === undefined;
				if (!canFallBack) {
					finishDiscard(store, runDirectory, id);
					throw failure;
				}

				backend = 'fuse';
				tools = resolveTools(backend);
				plan.backend = backend;
				plan.userNamespace = usesUserNamespace(backend, hostFacts.euid);
				plan.fuse = fusePlan;
				options.onEvent?.({
					type: 'fallback',
					backend,
					reason: `the kernel refused the overlay: ${failure.message}`,
				});
				let retry: NamespaceProcess;
				try {
					retry = startView();
				} catch {
					finishDiscard(store, runDirectory, id);
					throw failure;
				}

				// Signals now go to the retry, and its discarded upper waits for the retry's namespace.
				namespace = retry;
				deleters.push(startBackgroundDeleter(store, {alsoAfter: retry.gone}));
				retry.gone?.destroy();
				return finishRun(retry);
			}

			const exitCode = exitStatusOf(exit.code, exit.signal ? signalNumber(exit.signal) : undefined);
			crashPoint('run-exited');
			if (storeGone(store) && (options.promote !== undefined || options.keep || persistent)) {
				const lost =
					options.promote !== undefined && exitCode === 0 && !interruptedBy
						? `its writes could not be promoted to ${options.promote}`
						: persistent
							? 'the workspace is gone with it'
							: `run ${id} could not be kept`;
				throw new StoreError(
					`the command ${exitCode === 0 ? 'succeeded' : `finished (status ${exitCode})`} but the store ${store.root} was removed while it ran, so ${lost}; nothing was kept`,
				);
			}

			const upper = path.join(persistent?.directory ?? runDirectory, runEntries.upper);
			const written = options.measure ? await measureUpper(upper, store.layerFormat) : undefined;
			let keptUpper: string | undefined;
			let promoted: {name: string; layer: string} | undefined;
			let notPromoted: string | undefined;
			if (options.promote !== undefined && !promoting) {
				notPromoted = interruptedBy
					? `the run was interrupted by ${interruptedBy}`
					: exitCode === 0 && unclean
						? uncleanReason
						: `the command exited with status ${exitCode}`;
				options.onEvent?.({type: 'not-promoted', runId: id, name: options.promote, reason: notPromoted});
			}

			if (promoting) {
				const name = options.promote as string;
				try {
					const promotion = await promoteTree(store, {
						tree: path.join(runDirectory, runEntries.upper),
						name,
						record: layerRecordOfRun(record, exitCode, written),
					});
					promoted = {name, layer: promotion.layer.id};
				} catch (error) {
					// Whatever is left of the writes goes: a full disk needs the space back.
					discardQuietly(store, runDirectory, id);
					throw storeGone(store)
						? new StoreError(
								`the command succeeded but the store ${store.root} was removed while it ran, so its writes could not be promoted to ${name}; nothing was kept`,
								{cause: error},
							)
						: new ScratchError(
								`the command succeeded but promoting its writes to ${name} failed: ${describeSystemError(error)}${isNoSpace(error) ? ` (the store's file system is full)` : ''}; ${name} is unchanged and the writes were discarded; free space (scratch gc) and run again`,
								{cause: error},
							);
				}

				options.onEvent?.({type: 'promoted', runId: id, name, layer: promoted.layer});
				finishDiscard(store, runDirectory, id);
			} else if (keeping) {
				try {
					const keptDirectory = await keepRun(store, runDirectory, {
						...record,
						state: 'kept',
						finished: new Date().toISOString(),
						exitCode,
					});
					keptUpper = path.join(keptDirectory, runEntries.upper);
				} catch (error) {
					if (storeGone(store)) {
						throw new StoreError(
							`the command finished (status ${exitCode}) but the store ${store.root} was removed while it ran, so run ${id} could not be kept`,
							{cause: error},
						);
					}

					throw new ScratchError(
						`the command finished (status ${exitCode}) but keeping run ${id} failed: ${describeSystemError(error)}${isNoSpace(error) ? ` (the store's file system is full)` : ''}; its writes are still in ${runDirectory} (scratch gc removes them)`,
						{cause: error},
					);
				}

				options.onEvent?.({type: 'kept', runId: id, upper: keptUpper});
				reclaimAbandoned(store);
			} else {
				if (persistent) {
					// What a workspace's run wrote is recorded once it returns: it must survive a crash.
					await syncFileSystem(upper);
				}

				finishDiscard(store, runDirectory, id);
				if (unclean && (options.keep || persistent)) {
					throw new ScratchError(
						`the command finished (status ${exitCode}) but ${uncleanReason}; ${persistent ? 'the workspace keeps what reached its upper dir' : 'its writes were not kept'}`,
					);
				}
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
				kept: keeping,
				...(keptUpper ? {keptUpper} : {}),
				layers: record.layers,
				...(promoted ? {promoted} : {}),
				...(notPromoted ? {notPromoted} : {}),
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
	if (storeGone(store)) {
		// Removed while the command ran (its mount kept the upper alive): nothing is left to discard.
		return;
	}

	moveToTrash(store, runDirectory, `run-${id}`);
	crashPoint('run-discarded');
	reclaimAbandoned(store);
}

// After a failure: discard what can be, and let gc take the rest once this process is gone.
function discardQuietly(store: Store, runDirectory: string, id: string): void {
	try {
		finishDiscard(store, runDirectory, id);
	} catch {}
}

/**
fuse-overlayfs reaches the source and the run's upper and work dirs by path, and resolves them after the
outside --tmpfs mounts are in place: one that covers the store or the source would hide them.
*/
function fuseTmpfsProblem(
	tmpfs: ReadonlyArray<{path: string; create: boolean}>,
	storeRoot: string,
	source: string,
): string | undefined {
	const covering = tmpfs.find(
		(mount) => !mount.create && (isWithin(storeRoot, mount.path) || isWithin(source, mount.path)),
	);
	return covering
		? `--tmpfs ${covering.path} covers the ${isWithin(storeRoot, covering.path) ? 'store' : 'source tree'}, which the fuse backend reaches by path once the tmpfs is there; give a tmpfs elsewhere, or put the store (or the source) outside it`
		: undefined;
}

/** Whether the store's directory is gone (removed while a command ran). */
function storeGone(store: Store): boolean {
	return !existsSync(path.join(store.root, storeRecordName));
}

function isNoSpace(error: unknown): boolean {
	const {code} = error as NodeJS.ErrnoException;
	return code === 'ENOSPC' || code === 'EDQUOT';
}

/** Why the run's directories could not be made, as one line with what to do. */
function runDirectoryError(store: Store, error: unknown): ScratchError {
	const {code} = error as NodeJS.ErrnoException;
	if (code === 'EROFS') {
		return new PermissionError(
			`store ${store.root} is on a read-only file system, and a run needs to write its upper dir there; use a writable store with --store DIR (a read-only store can still be listed, inspected, diffed and exported)`,
			{cause: error},
		);
	}

	if (isNoSpace(error)) {
		return new StoreError(
			`cannot create the run's directories in store ${store.root}: ${describeSystemError(error)}; free space (scratch gc frees what nothing uses) or use another --store`,
			{cause: error},
		);
	}

	return new PermissionError(
		`cannot create the run's directories in store ${store.root}: ${describeSystemError(error)}; use a store you own with --store DIR`,
		{cause: error},
	);
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
		layers: [],
		durations: {setupMs: totalMs, commandMs: 0, teardownMs: 0, totalMs},
	};
}

function round(milliseconds: number): number {
	return Math.round(milliseconds * 100) / 100;
}
