import {existsSync, mkdirSync, renameSync, rmSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import {BusyError, ExistsError, NotFoundError, ScratchError, StoreError} from '../errors.js';
import {type BackendChoice, chooseBackend, readHostFacts, readStoreFacts} from '../run/backend.js';
import type {StdioTarget} from '../run/namespace.js';
import {checkCommand, checkStorePlacement, resolveSourceTree} from '../run/preflight.js';
import {type RunEvent, type RunHandle, type RunResult, startRun} from '../run/run.js';
import {freeUnreachableLayers} from '../store/gc.js';
import {
	checkStackDepth,
	commitLayer,
	type LayerRecord,
	layerWithStats,
	readLayer,
	requireLayer,
	reserveLayerId,
	scanLayers,
	stackOf,
} from '../store/layers.js';
import {leaseName} from '../store/lease-names.js';
import {listRefs, type Ref, readRef, removeRef, writeRef} from '../store/refs.js';
import {resolveBases} from '../store/resolve.js';
import type {StoreOptions} from '../store/snapshots.js';
import {defaultStorePath, openExistingStore, openStore, type Store} from '../store/store.js';
import {moveToTrash, startBackgroundDeleter} from '../store/trash.js';
import {holdStoreUse} from '../store/use-lock.js';
import {crashPoint} from '../system/crash-point.js';
import {currentProcessIdentity} from '../system/process-identity.js';
import {randomId} from '../system/random-id.js';
import {type BusyPolicy, lockWorkspace, type WorkspaceHolder, workspaceHolder} from './lock.js';
import {
	checkWorkspaceName,
	ensureWorkspaceDirectories,
	freshWrites,
	isAbandoned,
	isEmptyDirectory,
	isReady,
	listWorkspaceNames,
	readWorkspace,
	requireWorkspace,
	snapshotRefName,
	type WorkspaceRecord,
	type WorkspaceWrites,
	workspaceDirectory,
	workspaceEntries,
	workspacesDirectory,
	writesAfterRun,
	writeWorkspace,
} from './records.js';

/*
How a workspace changes, and why each step is crash-safe (SCRATCH_CRASH_AT names the steps):
- snapshot with writes: record the intent (layer id and name) in the workspace's record, commit the
  upper as that layer (layer record, then rename), name it, then record the new current stack and a
  fresh upper. Whoever next takes the workspace finishes an interrupted snapshot whose layer was made,
  or forgets one whose layer was not (its upper is still in place). gc keeps the intent's layer.
- snapshot without writes: only the name is written, for the current layer (layers are lazy).
- rollback and clean: the upper goes to the trash first, then the record gets the new current stack:
  a crash between leaves the old snapshot with no writes, never writes over the wrong stack.
Every change holds the workspace's lock, and the store (use-lock.ts) while it adds references.
*/

/** Options of the workspace commands. */
export type WorkspaceOptions = StoreOptions & {
	/** The workspace's name: one segment of letters, digits, '.', '_' and '-'. */
	workspace: string;
};

/** What a run of a command in a workspace (or of its init command) takes. */
export type WorkspaceRunOptions = WorkspaceOptions & {
	command: string[];
	/** The caller's directory; inside the source, the command starts at the same place in the view. */
	cwd?: string;
	inPlace?: boolean;
	backend?: BackendChoice;
	tmpfs?: string[];
	touch?: string[];
	measure?: boolean;
	env?: NodeJS.ProcessEnv;
	stdio?: [StdioTarget, StdioTarget, StdioTarget];
	/** Fail at once, instead of waiting, when another run holds the workspace. */
	noWait?: boolean;
	onEvent?: (event: WorkspaceRunEvent) => void;
};

/** Progress of a workspace run: a run's events, and waiting for the workspace. */
export type WorkspaceRunEvent = RunEvent | {type: 'waiting'; workspace: string; holder?: WorkspaceHolder};

/** `scratch ws init` options. */
export type WorkspaceInitOptions = WorkspaceOptions &
	Omit<WorkspaceRunOptions, 'command' | 'noWait' | 'workspace'> & {
		/** Source tree. Default: the current directory. */
		src?: string;
		/** Layers to start from (names or ids), later ones higher. */
		bases?: string[];
		/** Run this first; its writes are in postinit. */
		command?: string[];
		/** Called when the init command's run starts, to pass it signals. */
		onRunStarted?: (run: RunHandle) => void;
	};

/** What `ws init` made. */
export type WorkspaceInit = {
	workspace: WorkspaceRecord;
	/** The layer postinit names. */
	postinit: string;
	/** The init command's run, when there was one. */
	run?: RunResult;
};

/** What `ws snapshot` did. */
export type WorkspaceSnapshot = {
	name: string;
	layer: string;
	/** False when there were no writes: the name is another name for the current layer. */
	created: boolean;
};

/** What `ws rollback` and `ws clean` dropped, and where the workspace now stands. */
export type WorkspaceReset = {
	workspace: string;
	/** The current snapshot's layer afterwards. */
	layer: string;
	/** The runs whose writes were dropped; `runs` 0 and `hadWrites` false when there was nothing. */
	dropped: WorkspaceWrites & {hadWrites: boolean};
	/** Layers of the stack rolled away from that nothing reaches any more (an unnamed current snapshot): freed. */
	freed: string[];
};

/** A workspace's snapshot names among `refs` (`WS/NAME`, one segment after the workspace's). */
function workspaceSnapshotRefs(
	refs: readonly Ref[],
	workspace: string,
): Array<{name: string; fullName: string; layer: string}> {
	const prefix = `${workspace}/`;
	return refs
		.filter((ref) => ref.name.startsWith(prefix) && !ref.name.slice(prefix.length).includes('/'))
		.map((ref) => ({name: ref.name.slice(prefix.length), fullName: ref.name, layer: ref.layer}));
}

function resolveStorePath(options: StoreOptions): string {
	return path.resolve(options.store ?? defaultStorePath());
}

/** The current snapshot of a finished workspace: the top of its stack. */
function currentLayer(record: WorkspaceRecord): string {
	const top = record.layers.at(-1);
	if (top === undefined) {
		throw new ScratchError(`workspace ${record.name} has no current snapshot; its record is damaged`);
	}

	return top;
}

/**
Finish or forget a snapshot that was interrupted, and remake dirs a crash left missing. The caller holds
the workspace and the store.
*/
async function repairWorkspace(store: Store, record: WorkspaceRecord): Promise<WorkspaceRecord> {
	const directory = workspaceDirectory(store, record.name);
	let repaired = record;
	if (record.snapshotting) {
		const {layer: id, name} = record.snapshotting;
		const {snapshotting: _, ...rest} = record;
		const layer = readLayer(store, id);
		if (layer) {
			const full = `${record.name}/${name}`;
			if (!readRef(store, full)) {
				await writeRef(store, full, id);
			}

			// Init's postinit may name the top of the stack it already has (its bases, several perhaps).
			const layers = record.layers.at(-1) === id ? record.layers : stackOf(layer);
			repaired = {...rest, layers, writes: freshWrites(name)};
		} else {
			// The layer was never completed, so the upper is still in place: forget its record, if any.
			rmSync(path.join(store.layersDir, `${id}.json`), {force: true});
			repaired = rest;
		}
	} else if (!existsSync(path.join(directory, workspaceEntries.upper))) {
		// A rollback or clean dropped the writes and died before recording it: the writes are gone.
		repaired = {...record, writes: freshWrites(record.writes.from)};
	}

	ensureWorkspaceDirectories(directory);
	if (repaired !== record) {
		await writeWorkspace(store, repaired);
	}

	return repaired;
}

/** Hold a workspace (and, inside, the store) while `change` runs on its repaired record. */
async function changeWorkspace<T>(
	options: WorkspaceOptions,
	operation: WorkspaceHolder['operation'],
	policy: BusyPolicy,
	change: (store: Store, record: WorkspaceRecord) => Promise<T>,
): Promise<T> {
	checkWorkspaceName(options.workspace);
	const store = await openExistingStore(resolveStorePath(options));
	requireWorkspace(store, options.workspace);
	const lock = await lockWorkspace(store, options.workspace, operation, policy);
	try {
		const hold = await holdStoreUse(store);
		try {
			const record = await repairWorkspace(store, requireWorkspace(store, options.workspace));
			return await change(store, record);
		} finally {
			hold.release();
		}
	} finally {
		lock.release();
	}
}

/**
The layer a workspace's writes become: made on the current stack, from the runs since the last snapshot.
*/
function layerRecordOfWrites(record: WorkspaceRecord): Omit<LayerRecord, 'id'> {
	const lastCommand = record.writes.commands.at(-1);
	return {
		parent: record.layers.at(-1) ?? null,
		lowers: record.layers,
		created: new Date().toISOString(),
		origin: 'workspace',
		source: record.src,
		...(lastCommand ? {command: lastCommand} : {}),
		workspace: record.name,
		runs: record.writes.runs,
	};
}

/** Take a snapshot named `name` (one segment) of a held, repaired workspace. */
async function takeSnapshot(store: Store, record: WorkspaceRecord, name: string): Promise<WorkspaceSnapshot> {
	const full = snapshotRefName(record.name, name);
	if (readRef(store, full)) {
		throw new ExistsError(
			`snapshot ${full} exists; choose another name, or remove it first with scratch ws rm ${record.name} ${name}`,
		);
	}

	const directory = workspaceDirectory(store, record.name);
	const upper = path.join(directory, workspaceEntries.upper);
	if (isEmptyDirectory(upper)) {
		const layer = currentLayer(record);
		await writeRef(store, full, layer);
		await writeWorkspace(store, {...record, writes: freshWrites(name)});
		return {name: full, layer, created: false};
	}

	checkStackDepth(record.layers.length + 1, `a snapshot of workspace ${record.name}`);
	const id = reserveLayerId(store);
	await writeWorkspace(store, {...record, snapshotting: {layer: id, name}});
	crashPoint('ws-snapshot-intent');
	const layer = await commitLayer(store, upper, layerRecordOfWrites(record), id);
	await writeRef(store, full, id);
	crashPoint('ws-snapshot-named');
	ensureWorkspaceDirectories(directory);
	await writeWorkspace(store, {...record, layers: stackOf(layer), writes: freshWrites(name)});
	crashPoint('ws-snapshot-recorded');
	return {name: full, layer: id, created: true};
}

/** `scratch ws snapshot WS NAME`: the writes so far become layer `WS/NAME`, now current. */
export async function snapshotWorkspace(
	options: WorkspaceOptions & {name: string},
): Promise<WorkspaceSnapshot> {
	snapshotRefName(checkWorkspaceName(options.workspace), options.name);
	return changeWorkspace(options, 'snapshot', {wait: 'unless-run'}, async (store, record) =>
		takeSnapshot(store, record, options.name),
	);
}

/** Drop a held workspace's writes (into the trash) and make `layers` its current stack. */
async function resetWorkspace(
	store: Store,
	record: WorkspaceRecord,
	layers: string[],
	from: string | undefined,
	step: 'rollback' | 'clean',
): Promise<WorkspaceReset> {
	const directory = workspaceDirectory(store, record.name);
	const upper = path.join(directory, workspaceEntries.upper);
	const hadWrites = !isEmptyDirectory(upper);
	// The upper stays missing until the new state is recorded: finding it missing, the next user knows
	// the writes were dropped (repairWorkspace).
	const deleter = hadWrites ? startBackgroundDeleter(store) : undefined;
	try {
		if (hadWrites) {
			moveToTrash(store, upper, `workspace-${record.name}-${randomId(8)}`);
			crashPoint(`ws-${step}-dropped`);
		}

		await writeWorkspace(store, {...record, layers, writes: freshWrites(from ?? record.writes.from)});
		crashPoint(`ws-${step}-recorded`);
		ensureWorkspaceDirectories(directory);
	} finally {
		deleter?.release();
	}

	return {
		workspace: record.name,
		layer: layers.at(-1) as string,
		dropped: {...record.writes, hadWrites},
		freed: [],
	};
}

/** `scratch ws rollback WS NAME`: drop the writes; snapshot `WS/NAME` becomes current. */
export async function rollbackWorkspace(options: WorkspaceOptions & {name: string}): Promise<WorkspaceReset> {
	const full = snapshotRefName(checkWorkspaceName(options.workspace), options.name);
	let left: {store: Store; layers: string[]} | undefined;
	const reset = await changeWorkspace(options, 'rollback', {wait: 'unless-run'}, async (store, record) => {
		const ref = readRef(store, full);
		if (!ref) {
			throw new NotFoundError(
				`workspace ${record.name} has no snapshot ${options.name}; scratch ws snapshots ${record.name} lists them`,
			);
		}

		const layers = stackOf(requireLayer(store, ref.layer, `snapshot ${full}`));
		checkStackDepth(layers.length, `snapshot ${full}`);
		for (const id of layers) {
			requireLayer(store, id, `snapshot ${full}`);
		}

		left = {store, layers: record.layers};
		return resetWorkspace(store, record, layers, options.name, 'rollback');
	});
	// Rolling away from a snapshot whose names were all removed leaves its layers to nothing: free them
	// now, as `ws rm` would have (the store is no longer held: collecting needs it to itself).
	const freed = left ? await freeUnreachableLayers(left.store, left.layers) : [];
	if (freed.length > 0) {
		startBackgroundDeleter(left?.store as Store).release();
	}

	return {...reset, freed};
}

/** `scratch ws clean WS`: drop the writes since the current snapshot. */
export async function cleanWorkspace(options: WorkspaceOptions): Promise<WorkspaceReset> {
	return changeWorkspace(options, 'clean', {wait: 'unless-run'}, async (store, record) =>
		resetWorkspace(store, record, record.layers, undefined, 'clean'),
	);
}

/** One line of `scratch ws snapshots`. */
export type WorkspaceSnapshotEntry = {
	/** The snapshot's name within the workspace (its full name is `WS/NAME`). */
	name: string;
	layer: string;
	/** Whether it names the workspace's current layer (several names can). */
	current: boolean;
	created: string;
	/** Bytes of file content in the layer itself. */
	size: number;
	files: number;
};

/** `scratch ws snapshots WS`. */
export type WorkspaceSnapshots = {
	workspace: string;
	/** The current layer, named or not. */
	current: string;
	snapshots: WorkspaceSnapshotEntry[];
	/** The runs whose writes sit on the current snapshot. */
	writes: WorkspaceWrites;
	/** Who holds the workspace now (a run in progress), if anyone. */
	busy?: WorkspaceHolder;
};

/** `scratch ws snapshots WS`: sorted by name, current ones marked. Reads only; never waits. */
export async function listWorkspaceSnapshots(options: WorkspaceOptions): Promise<WorkspaceSnapshots> {
	checkWorkspaceName(options.workspace);
	const store = await openExistingStore(resolveStorePath(options), {readOnly: true});
	const record = requireWorkspace(store, options.workspace);
	const current =
		record.snapshotting && readLayer(store, record.snapshotting.layer)
			? record.snapshotting.layer
			: currentLayer(record);
	const snapshots: WorkspaceSnapshotEntry[] = [];
	for (const {name, layer: id} of workspaceSnapshotRefs(listRefs(store), record.name)) {
		const found = readLayer(store, id);
		if (!found) {
			continue;
		}

		const layer = await layerWithStats(store, found);
		snapshots.push({
			name,
			layer: layer.id,
			current: layer.id === current,
			created: layer.created,
			size: layer.size ?? 0,
			files: layer.files ?? 0,
		});
	}

	const busy = workspaceHolder(store, record.name);
	return {workspace: record.name, current, snapshots, writes: record.writes, ...(busy ? {busy} : {})};
}

/** `scratch ws rm WS NAME`: remove a snapshot name; its layer is freed once nothing reaches it. */
export async function removeWorkspaceSnapshot(
	options: WorkspaceOptions & {name: string},
): Promise<{name: string; layer: string; freed: string[]}> {
	const full = snapshotRefName(checkWorkspaceName(options.workspace), options.name);
	const store = await openExistingStore(resolveStorePath(options));
	requireWorkspace(store, options.workspace);
	const hold = await holdStoreUse(store);
	let layer: string;
	try {
		const ref = readRef(store, full);
		if (!ref) {
			throw new NotFoundError(
				`workspace ${options.workspace} has no snapshot ${options.name}; scratch ws snapshots ${options.workspace} lists them`,
			);
		}

		layer = ref.layer;
		removeRef(store, full);
	} finally {
		hold.release();
	}

	const record = readLayer(store, layer);
	const freed = await freeUnreachableLayers(store, record ? stackOf(record) : []);
	startBackgroundDeleter(store).release();
	return {name: full, layer, freed};
}

/** What `ws scrub` removed. */
export type WorkspaceScrub = {workspace: string; names: string[]; freed: string[]};

// A damaged record reads as none: the workspace is still scrubbed.
function readWorkspaceIfReadable(store: Store, workspace: string): WorkspaceRecord | undefined {
	try {
		return readWorkspace(store, workspace);
	} catch (error) {
		if (error instanceof StoreError) {
			return undefined;
		}

		throw error;
	}
}

/**
`scratch ws scrub WS`: remove the workspace, its snapshot names, and every layer nothing else reaches.
Other workspaces, names and runs keep theirs. Also clears what an interrupted init or scrub left.
*/
export async function scrubWorkspace(options: WorkspaceOptions): Promise<WorkspaceScrub> {
	const workspace = checkWorkspaceName(options.workspace);
	const store = await openExistingStore(resolveStorePath(options));
	const lock = await lockWorkspace(store, workspace, 'scrub', {wait: 'unless-run'});
	const candidates: string[] = [];
	const names: string[] = [];
	try {
		const hold = await holdStoreUse(store);
		try {
			// A damaged record is no reason to keep the workspace: scrub is what its error advises.
			const record = readWorkspaceIfReadable(store, workspace);
			if (record && !isReady(record) && !isAbandoned(record)) {
				throw new BusyError(
					`workspace ${workspace} is still being initialised (by pid ${record.owner?.pid}); wait for its ws init to finish`,
				);
			}

			const refs = workspaceSnapshotRefs(listRefs(store), workspace);
			if (!record && refs.length === 0 && !existsSync(workspaceDirectory(store, workspace))) {
				throw new NotFoundError(
					`no workspace ${workspace} in store ${store.root}; scratch ws ls lists the workspaces`,
				);
			}

			// Its layers, including those whose names an interrupted scrub removed already.
			const made = scanLayers(store).complete.filter((id) => readLayer(store, id)?.workspace === workspace);
			for (const id of [
				...(record?.layers ?? []),
				...(record?.snapshotting ? [record.snapshotting.layer] : []),
				...refs.map((ref) => ref.layer),
				...made,
			]) {
				const layer = readLayer(store, id);
				candidates.push(...(layer ? stackOf(layer) : [id]));
			}

			// Names first: a crash midway leaves a workspace with fewer names, which scrub finishes.
			for (const ref of refs) {
				removeRef(store, ref.fullName);
				names.push(ref.fullName);
				crashPoint('ws-scrub-unnamed');
			}

			moveToTrash(store, workspaceDirectory(store, workspace), `workspace-${workspace}-${randomId(8)}`);
		} finally {
			hold.release();
		}
	} finally {
		lock.release();
	}

	const freed = await freeUnreachableLayers(store, candidates);
	startBackgroundDeleter(store).release();
	return {workspace, names, freed};
}

/** One line of `scratch ws ls`. */
export type WorkspaceEntry = {
	name: string;
	state: 'ready' | 'initialising' | 'abandoned' | 'damaged';
	src?: string;
	created?: string;
	/** The current layer and the snapshot names pointing at it. */
	current?: string;
	currentNames?: string[];
	snapshots?: number;
	/** Runs whose writes sit on the current snapshot. */
	runs?: number;
	busy?: WorkspaceHolder;
};

/** `scratch ws ls`: every workspace, sorted. Reads only; never waits. */
export async function listWorkspaces(options: StoreOptions = {}): Promise<WorkspaceEntry[]> {
	const store = await openExistingStore(resolveStorePath(options), {readOnly: true});
	const refs = listRefs(store);
	const entries: WorkspaceEntry[] = [];
	for (const name of listWorkspaceNames(store)) {
		let record: WorkspaceRecord | undefined;
		try {
			record = readWorkspace(store, name);
		} catch {
			entries.push({name, state: 'damaged'});
			continue;
		}

		if (!record) {
			continue;
		}

		const own = workspaceSnapshotRefs(refs, name);
		const current = record.layers.at(-1);
		const busy = workspaceHolder(store, name);
		entries.push({
			name,
			state: isReady(record) ? 'ready' : isAbandoned(record) ? 'abandoned' : 'initialising',
			src: record.src,
			created: record.created,
			...(current ? {current} : {}),
			currentNames: own.filter((ref) => ref.layer === current).map((ref) => ref.name),
			snapshots: own.length,
			runs: record.writes.runs,
			...(busy ? {busy} : {}),
		});
	}

	return entries;
}

/**
Start a command in a workspace (`scratch ws run`): it sees the current snapshot's stack and the writes
of the runs since, and its own writes stay. One run at a time: a second waits (or, with `noWait`,
fails with a BusyError) until the first is done. Resolves once the workspace is held and the run started.
*/
export async function startWorkspaceRun(options: WorkspaceRunOptions): Promise<RunHandle> {
	checkWorkspaceName(options.workspace);
	checkCommand(options.command);
	const store = await openExistingStore(resolveStorePath(options));
	requireWorkspace(store, options.workspace);
	const lock = await lockWorkspace(
		store,
		options.workspace,
		'run',
		options.noWait
			? {wait: false}
			: {
					wait: true,
					onWait: (holder) =>
						options.onEvent?.({type: 'waiting', workspace: options.workspace, ...(holder ? {holder} : {})}),
				},
		options.command,
	);
	try {
		let record: WorkspaceRecord;
		const hold = await holdStoreUse(store);
		try {
			record = await repairWorkspace(store, requireWorkspace(store, options.workspace));
		} finally {
			hold.release();
		}

		const handle = startPersistentRun(store, record, options);
		return {
			id: handle.id,
			kill: (signal) => handle.kill(signal),
			result: handle.result
				.then(async (result) => {
					if (result.commandStarted) {
						const latest = readWorkspace(store, record.name) ?? record;
						await writeWorkspace(store, {...latest, writes: writesAfterRun(latest.writes, options.command)});
					}

					return result;
				})
				.finally(() => lock.release()),
		};
	} catch (error) {
		lock.release();
		throw error;
	}
}

/** Run a command in a workspace to completion. */
export async function runInWorkspace(options: WorkspaceRunOptions): Promise<RunResult> {
	return (await startWorkspaceRun(options)).result;
}

function startPersistentRun(
	store: Store,
	record: WorkspaceRecord,
	options: Omit<WorkspaceRunOptions, 'noWait'>,
): RunHandle {
	const directory = workspaceDirectory(store, record.name);
	return startRun({
		command: options.command,
		src: record.src,
		store: store.root,
		...(options.cwd === undefined ? {} : {cwd: options.cwd}),
		...(options.inPlace === undefined ? {} : {inPlace: options.inPlace}),
		...(options.backend === undefined ? {} : {backend: options.backend}),
		...(options.tmpfs === undefined ? {} : {tmpfs: options.tmpfs}),
		...(options.touch === undefined ? {} : {touch: options.touch}),
		...(options.measure === undefined ? {} : {measure: options.measure}),
		...(options.env === undefined ? {} : {env: options.env}),
		...(options.stdio === undefined ? {} : {stdio: options.stdio}),
		...(options.onEvent ? {onEvent: options.onEvent} : {}),
		persistent: {
			directory,
			workspace: record.name,
			layers: (heldStore) => {
				// Read again under the store's hold: the layers gc must keep for this run.
				const latest = readWorkspace(heldStore, record.name);
				return latest?.layers ?? record.layers;
			},
		},
	});
}

/**
`scratch ws init WS`: a new workspace on `src` (and `bases`), after an optional init command, with
snapshot `WS/postinit` naming its start. It exists only once init succeeded: a failed init command
or a crash leaves nothing but garbage for gc (and `ws init` again reclaims it).
*/
export async function initWorkspace(options: WorkspaceInitOptions): Promise<WorkspaceInit> {
	const workspace = checkWorkspaceName(options.workspace);
	if (options.command) {
		checkCommand(options.command);
	}

	const bases = options.bases ?? [];
	const source = resolveSourceTree(options.src ?? options.cwd ?? process.cwd());
	const storePath = resolveStorePath(options);
	checkStorePlacement(storePath, source);
	// A backend that cannot run here is refused before anything is made, as a plain run's is.
	chooseBackend(options.backend ?? 'auto', readHostFacts(), readStoreFacts(storePath));
	const store = await openStore(storePath);
	// Checked before the lock is taken (nothing changes for bad input), and again once it is held.
	checkInitPossible(store, workspace);
	resolveBases(store, bases);
	const lock = await lockWorkspace(store, workspace, 'init', {wait: false}, options.command);
	try {
		const directory = workspaceDirectory(store, workspace);
		const existing = checkInitPossible(store, workspace);

		if (existing || existsSync(directory)) {
			// What a dead init left.
			moveToTrash(store, directory, `workspace-${workspace}-${randomId(8)}`);
		}

		let record: WorkspaceRecord;
		const hold = await holdStoreUse(store);
		try {
			const stack = resolveBases(store, bases);
			record = {
				name: workspace,
				state: 'initialising',
				owner: currentProcessIdentity(),
				created: new Date().toISOString(),
				src: source,
				bases,
				layers: stack.layers,
				writes: freshWrites(),
			};
			createWorkspaceDirectory(store, record);
		} finally {
			hold.release();
		}

		let run: RunResult | undefined;
		if (options.command) {
			try {
				const handle = startPersistentRun(store, record, {...options, command: options.command});
				options.onRunStarted?.(handle);
				run = await handle.result;
			} catch (error) {
				moveToTrash(store, directory, `workspace-${workspace}-${randomId(8)}`);
				throw error;
			}

			if (run.exitCode !== 0 || run.interruptedBy) {
				moveToTrash(store, directory, `workspace-${workspace}-${randomId(8)}`);
				startBackgroundDeleter(store).release();
				throw new ScratchError(
					`the init command ${run.interruptedBy ? `was interrupted by ${run.interruptedBy}` : `exited with status ${run.exitCode}`}; workspace ${workspace} was not created`,
				);
			}

			record = {...record, writes: writesAfterRun(record.writes, options.command)};
		}

		const postinit = await finishInit(store, record);
		return {workspace: postinit, postinit: currentLayer(postinit), ...(run ? {run} : {})};
	} finally {
		lock.release();
	}
}

/** Fail unless `ws init WS` can make WS; returns what a dead init left, if anything. */
function checkInitPossible(store: Store, workspace: string): WorkspaceRecord | undefined {
	const existing = readWorkspace(store, workspace);
	if (existing && !isAbandoned(existing)) {
		throw new ExistsError(
			`workspace ${workspace} exists; use it with scratch ws run ${workspace} -- CMD, or remove it with scratch ws scrub ${workspace}`,
		);
	}

	const taken = listRefs(store).find((ref) => ref.name.startsWith(`${workspace}/`));
	if (taken) {
		throw new ExistsError(
			`the name ${taken.name} exists, and workspace ${workspace}'s snapshots would share its names; remove it with scratch rm ${taken.name}, or choose another workspace name`,
		);
	}

	return existing;
}

/** Build a workspace's dir under `tmp/` and rename it into place whole, so gc never sees half of one. */
function createWorkspaceDirectory(store: Store, record: WorkspaceRecord): void {
	const preparing = path.join(store.tmpDir, leaseName(`workspace-${record.name}`, currentProcessIdentity()));
	mkdirSync(preparing, {mode: 0o700});
	ensureWorkspaceDirectories(preparing);
	writeFileSync(
		path.join(preparing, workspaceEntries.record),
		`${JSON.stringify(record, undefined, '\t')}\n`,
		{mode: 0o600},
	);
	mkdirSync(workspacesDirectory(store), {recursive: true, mode: 0o700});
	renameSync(preparing, workspaceDirectory(store, record.name));
}

/**
Make postinit: the init command's writes become a layer (or, with none, postinit names the top base;
with no base either, an empty layer stands for the source alone). The workspace becomes ready with the
name recorded as an intent, so a crash before the name is written is finished by the next user.
*/
async function finishInit(store: Store, initialising: WorkspaceRecord): Promise<WorkspaceRecord> {
	const hold = await holdStoreUse(store);
	try {
		const directory = workspaceDirectory(store, initialising.name);
		const upper = path.join(directory, workspaceEntries.upper);
		let layers = initialising.layers;
		const top = layers.at(-1);
		// A name points at one layer, which stands for its own stack: several bases need a layer of their own.
		const topStack =
			top === undefined ? [] : stackOf(requireLayer(store, top, `workspace ${initialising.name}`));
		if (!isEmptyDirectory(upper) || top === undefined || topStack.join(':') !== layers.join(':')) {
			checkStackDepth(layers.length + 1, `workspace ${initialising.name}`);
			const layer = await commitLayer(store, upper, layerRecordOfWrites(initialising));
			ensureWorkspaceDirectories(directory);
			layers = stackOf(layer);
		}

		const postinit = layers.at(-1) as string;
		const {owner: _, ...rest} = initialising;
		const ready: WorkspaceRecord = {...rest, state: 'ready', layers, writes: freshWrites('postinit')};
		await writeWorkspace(store, {...ready, snapshotting: {layer: postinit, name: 'postinit'}});
		crashPoint('ws-init-recorded');
		await writeRef(store, `${ready.name}/postinit`, postinit);
		await writeWorkspace(store, ready);
		return ready;
	} finally {
		hold.release();
	}
}
