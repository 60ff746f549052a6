import {existsSync, mkdirSync, renameSync, rmSync} from 'node:fs';
import path from 'node:path';
import {writeFileAtomic} from '../system/atomic-file.js';
import {crashPoint} from '../system/crash-point.js';
import {currentProcessIdentity, isProcessAlive} from '../system/process-identity.js';
import {randomId} from '../system/random-id.js';
import {readDirectoryOrEmpty} from '../system/read-directory.js';
import {
	isAbandoned,
	listWorkspaceNames,
	readWorkspace,
	type WorkspaceRecord,
	workspaceDirectory,
	workspaceEntries,
} from '../workspace/records.js';
import {layerTreePath, readLayer, scanLayers} from './layers.js';
import {leaseName} from './lease-names.js';
import {listRefs} from './refs.js';
import {findAbandoned, finishInterruptedKeeps, readRunRecord, runEntries} from './runs.js';
import {openExistingStore, type Store} from './store.js';
import {deleteTreesNow, listTrash, measureTrees, moveToTrash} from './trash.js';
import {holdStoreCollection} from './use-lock.js';

/** What `gc` freed (or, with `dryRun`, would free). */
export type GcReport = {
	dryRun: boolean;
	/** Layers no name, child layer, kept run or live run reaches. */
	layers: string[];
	/** Parts of layers whose making was interrupted (a record without a tree, or a tree without a record). */
	halfMadeLayers: string[];
	/** Layers still reachable, which gc kept. */
	reachableLayers: number;
	/** Kept runs whose interrupted promotion was rolled back (the run is kept again, as before). */
	repairedRuns: string[];
	/** Directories of runs whose scratch died (killed, crashed) without cleaning up. */
	deadRuns: string[];
	/** Runs whose scratch died while keeping them, after their record was written: moved into `kept/`. */
	keptRuns: string[];
	/** Half-prepared entries whose owner died. */
	abandonedTemporary: string[];
	/** Workspaces whose `ws init` died before finishing (or left no record). */
	abandonedWorkspaces: string[];
	/** Entries that were already waiting in the trash. */
	trashEntries: string[];
	/** Files and directories freed. */
	entriesFreed: number;
	/** Bytes of disk freed (allocated blocks). */
	bytesFreed: number;
};

/**
A kept run whose promotion was interrupted after its upper became a layer, but before a name pointed at
the layer, is put back as it was: the layer's tree returns to the run. One whose layer was named is
done, and its leftovers are garbage. Returns the kept dirs that are garbage.
*/
async function repairInterruptedPromotions(
	store: Store,
	reachable: (id: string) => boolean,
	report: GcReport,
	dryRun: boolean,
): Promise<string[]> {
	const garbage: string[] = [];
	for (const runId of readDirectoryOrEmpty(store.keptDir)) {
		const directory = path.join(store.keptDir, runId);
		const recordPath = path.join(directory, runEntries.record);
		const run = readRunRecord(directory, runEntries.record);
		const upper = path.join(directory, runEntries.upper);
		if (!run) {
			// keepRun writes the record before the run dir arrives here, so this is debris.
			garbage.push(directory);
			continue;
		}

		if (!run.promotion) {
			continue;
		}

		const {layer} = run.promotion;
		const {promotion: _, ...unpromoted} = run;
		if (existsSync(upper)) {
			// Interrupted before the rename: the run is whole; its half-made layer record is swept below.
			if (!dryRun) {
				await writeFileAtomic(recordPath, `${JSON.stringify(unpromoted, undefined, '\t')}\n`);
			}
		} else if (layerPresent(store, layer) && reachable(layer)) {
			garbage.push(directory);
		} else if (existsSync(layerTreePath(store, layer))) {
			report.repairedRuns.push(runId);
			if (!dryRun) {
				rmSync(path.join(store.layersDir, `${layer}.json`), {force: true});
				renameSync(layerTreePath(store, layer), upper);
				await writeFileAtomic(recordPath, `${JSON.stringify(unpromoted, undefined, '\t')}\n`);
			}
		} else {
			garbage.push(directory);
		}
	}

	return garbage;
}

/** Layer ids something still needs: names, live runs, kept runs and workspaces, with all their lowers. */
function markReachable(store: Store): Set<string> {
	const roots: string[] = listRefs(store).map((ref) => ref.layer);
	for (const name of listWorkspaceNames(store)) {
		const workspace = readWorkspaceOrUndefined(store, name);
		// An abandoned init's layers are garbage; a live one's are also in its run's lease.
		if (workspace && !isAbandoned(workspace)) {
			roots.push(...workspace.layers);
			if (workspace.snapshotting) {
				roots.push(workspace.snapshotting.layer);
			}
		}
	}

	for (const runId of readDirectoryOrEmpty(store.runsDir)) {
		const lease = readRunRecord(path.join(store.runsDir, runId), runEntries.lease);
		if (lease && isProcessAlive(lease.owner)) {
			roots.push(...(lease.layers ?? []));
		}
	}

	for (const runId of readDirectoryOrEmpty(store.keptDir)) {
		const run = readRunRecord(path.join(store.keptDir, runId), runEntries.record);
		if (run) {
			roots.push(...(run.layers ?? []));
		}
	}

	const reachable = new Set<string>();
	for (const id of roots) {
		if (reachable.has(id)) {
			continue;
		}

		reachable.add(id);
		for (const lower of readLayer(store, id)?.lowers ?? []) {
			reachable.add(lower);
		}
	}

	return reachable;
}

/** Whether a layer is there (tree and record), a damaged record included: gc frees it like any other. */
function layerPresent(store: Store, id: string): boolean {
	try {
		return readLayer(store, id) !== undefined;
	} catch {
		return existsSync(layerTreePath(store, id));
	}
}

// A damaged record is reported by the workspace commands; here it only means: touch nothing of it.
function readWorkspaceOrUndefined(store: Store, name: string): WorkspaceRecord | undefined {
	try {
		return readWorkspace(store, name);
	} catch {
		return undefined;
	}
}

/**
Free the layers among `candidates` that nothing reaches any more (after `ws rm` or `ws scrub` dropped
their names): records removed, trees into the trash for the background deleter. The caller must not
hold the store. Returns the ids freed.
*/
export async function freeUnreachableLayers(store: Store, candidates: readonly string[]): Promise<string[]> {
	if (candidates.length === 0) {
		return [];
	}

	const freed: string[] = [];
	const hold = await holdStoreCollection(store);
	try {
		const reachable = markReachable(store);
		for (const id of new Set(candidates)) {
			if (reachable.has(id) || !layerPresent(store, id)) {
				continue;
			}

			rmSync(path.join(store.layersDir, `${id}.json`), {force: true});
			moveToTrash(store, layerTreePath(store, id), `layer-${id}-${randomId(6)}`);
			freed.push(id);
		}
	} finally {
		hold.release();
	}

	return freed;
}

/**
Mark and sweep. Marks every layer a name, a live or kept run reaches (with their lowers), then frees
the rest: unreachable and half-made layers, dead runs' leftovers, abandoned preparations and the trash.
Live runs (their owner's pid and start time still match) and kept runs are never touched. Users of the
store (runs resolving bases, promotions, tags) wait while gc marks and sweeps, which is only renames;
the deletion itself runs after that, in one `rm` of everything swept.
*/
export async function collectGarbage({
	store: storePath,
	dryRun = false,
}: {
	store: string;
	dryRun?: boolean;
}): Promise<GcReport> {
	const store = await openExistingStore(storePath);
	const report: GcReport = {
		dryRun,
		layers: [],
		halfMadeLayers: [],
		reachableLayers: 0,
		repairedRuns: [],
		deadRuns: [],
		keptRuns: [],
		abandonedTemporary: [],
		abandonedWorkspaces: [],
		trashEntries: [],
		entriesFreed: 0,
		bytesFreed: 0,
	};
	const doomed: string[] = [];
	const hold = await holdStoreCollection(store);
	try {
		let reachable = markReachable(store);
		const keptGarbage = await repairInterruptedPromotions(store, (id) => reachable.has(id), report, dryRun);
		reachable = markReachable(store);
		crashPoint('gc-marked');
		doomed.push(...keptGarbage);

		const {complete, halfMade, temporary} = scanLayers(store);
		report.reachableLayers = complete.filter((id) => reachable.has(id)).length;
		report.layers = complete.filter((id) => !reachable.has(id));
		report.halfMadeLayers = halfMade;
		for (const id of [...report.layers, ...report.halfMadeLayers]) {
			// The record goes first: without it the layer no longer exists, whatever happens next.
			if (!dryRun) {
				rmSync(path.join(store.layersDir, `${id}.json`), {force: true});
			}

			if (existsSync(layerTreePath(store, id))) {
				doomed.push(layerTreePath(store, id));
			}
		}

		for (const name of temporary) {
			doomed.push(path.join(store.layersDir, name));
		}

		for (const name of readDirectoryOrEmpty(store.refsDir).filter((file) => file.startsWith('.'))) {
			doomed.push(path.join(store.refsDir, name));
		}

		report.keptRuns = finishInterruptedKeeps(store, {dryRun});
		const abandoned = findAbandoned(store);
		report.deadRuns = abandoned
			.filter(({trashName}) => trashName.startsWith('run-'))
			.map(({directory}) => path.basename(directory));
		report.abandonedTemporary = abandoned
			.filter(({trashName}) => trashName.startsWith('tmp-'))
			.map(({directory}) => path.basename(directory));
		doomed.push(...abandoned.map(({directory}) => directory));
		for (const name of listWorkspaceNames(store)) {
			const workspace = readWorkspaceOrUndefined(store, name);
			const hasRecord = existsSync(path.join(workspaceDirectory(store, name), workspaceEntries.record));
			if ((workspace && isAbandoned(workspace)) || (!workspace && !hasRecord)) {
				report.abandonedWorkspaces.push(name);
				doomed.push(workspaceDirectory(store, name));
			}
		}

		report.trashEntries = listTrash(store);
		doomed.push(...report.trashEntries.map((name) => path.join(store.trashDir, name)));

		const usage = await measureTrees(store, doomed);
		report.entriesFreed = usage.entries;
		report.bytesFreed = usage.bytes;
		if (dryRun) {
			return report;
		}

		// Everything swept goes into one directory under tmp/ that dies with us, deleted in one go below.
		const sweep = path.join(store.tmpDir, leaseName('gc', currentProcessIdentity(), String(Date.now())));
		mkdirSync(sweep, {recursive: true, mode: 0o700});
		for (const [index, entry] of doomed.entries()) {
			if (entry.startsWith(store.trashDir + path.sep)) {
				continue;
			}

			try {
				renameSync(entry, path.join(sweep, String(index)));
			} catch (error) {
				if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
					throw error;
				}
			}
		}

		crashPoint('gc-swept');
		doomed.splice(0, doomed.length, sweep);
	} finally {
		hold.release();
	}

	await deleteTreesNow(store, doomed, report.trashEntries);
	return report;
}
