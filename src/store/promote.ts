import {existsSync, readFileSync} from 'node:fs';
import path from 'node:path';
import {describeSystemError, NotFoundError, StoreError} from '../errors.js';
import type {WriteStats} from '../run/upper-stats.js';
import {writeFileAtomic} from '../system/atomic-file.js';
import {crashPoint} from '../system/crash-point.js';
import {commitLayer, type LayerRecord, readLayer, reserveLayerId} from './layers.js';
import {checkName} from './names.js';
import {type Ref, writeRef} from './refs.js';
import {type RunRecord, runEntries} from './runs.js';
import type {Store} from './store.js';
import {moveToTrash} from './trash.js';
import {holdStoreUse} from './use-lock.js';

/** A promotion's outcome: the new layer and the name now pointing at it. */
export type Promotion = {layer: LayerRecord; ref: Ref};

/** The record of the layer a run's upper becomes. */
export function layerRecordOfRun(
	run: RunRecord,
	exitCode: number,
	written?: WriteStats,
): Omit<LayerRecord, 'id'> {
	return {
		parent: run.layers.at(-1) ?? null,
		lowers: run.layers,
		created: new Date().toISOString(),
		origin: 'run',
		source: run.src,
		command: run.command,
		exitCode,
		run: run.id,
		...(written
			? {
					files: written.files + written.deletions,
					directories: written.directories,
					deletions: written.deletions,
					size: written.bytes,
				}
			: {}),
	};
}

/**
Turn a finished upper tree into a layer named `name`: a durable record, a rename, and a durable ref.
Nothing is copied or synced, so the cost does not grow with what was written: the tree's data reaches
the disk with the kernel's normal writeback (see the README's Limits on power loss).
*/
export async function promoteTree(
	store: Store,
	{tree, name, record, id}: {tree: string; name: string; record: Omit<LayerRecord, 'id'>; id?: string},
): Promise<Promotion> {
	const hold = await holdStoreUse(store);
	try {
		return await commitAndName(store, {tree, name, record, id});
	} finally {
		hold.release();
	}
}

/**
The layer's commit and its name, for a caller that already holds the store (use-lock.ts). Holding it
twice would deadlock against a collector waiting for the first hold to end.
*/
export async function commitAndName(
	store: Store,
	{tree, name, record, id}: {tree: string; name: string; record: Omit<LayerRecord, 'id'>; id?: string},
): Promise<Promotion> {
	const layer = await commitLayer(store, tree, record, id);
	crashPoint('promote-before-ref');
	const ref = await writeRef(store, name, layer.id);
	crashPoint('promote-ref-written');
	return {layer, ref};
}

/** A kept run's record, or a clear error. */
export function readKeptRun(store: Store, runId: string): RunRecord {
	const recordPath = path.join(store.keptDir, runId, runEntries.record);
	let text: string;
	try {
		text = readFileSync(recordPath, 'utf8');
	} catch (error) {
		if ((error as NodeJS.ErrnoException).code === 'ENOENT' || !/^[\da-z]+$/.test(runId)) {
			throw new NotFoundError(
				`no kept run ${runId} in store ${store.root}; keep one with scratch run --keep (its id is printed then)`,
			);
		}

		throw new StoreError(`cannot read kept run ${runId}: ${describeSystemError(error)}`, {cause: error});
	}

	return JSON.parse(text) as RunRecord;
}

/**
`scratch promote RUN-ID NAME`: make a kept run's upper a layer. The kept run first records which layer
it is becoming, so a crash at any point leaves either the kept run or the named layer (gc puts a
half-promoted run back; running the same promote again finishes one whose layer is already made).
*/
export async function promoteKeptRun(store: Store, runId: string, name: string): Promise<Promotion> {
	checkName(name, 'NAME');
	const keptDirectory = path.join(store.keptDir, runId);
	const tree = path.join(keptDirectory, runEntries.upper);
	// Held from before the intent is read or recorded until a name points at the layer: gc takes an intent
	// it sees for an interrupted promotion and undoes it, so it must never see the intent of a live one.
	const hold = await holdStoreUse(store);
	let promotion: Promotion;
	try {
		const run = readKeptRun(store, runId);
		const made = run.promotion && !existsSync(tree) ? readLayer(store, run.promotion.layer) : undefined;
		if (made) {
			// An earlier promote got as far as making the layer: finish it.
			promotion = {layer: made, ref: await writeRef(store, name, made.id)};
		} else {
			if (!existsSync(tree)) {
				throw new StoreError(
					`kept run ${runId} has no upper dir left (an interrupted promote?); run scratch gc to repair the store`,
				);
			}

			const id = reserveLayerId(store);
			await writeFileAtomic(
				path.join(keptDirectory, runEntries.record),
				`${JSON.stringify({...run, promotion: {layer: id, name}}, undefined, '\t')}\n`,
			);
			crashPoint('promote-intent-recorded');
			promotion = await commitAndName(store, {
				tree,
				name,
				id,
				record: layerRecordOfRun(run, run.exitCode ?? 0),
			});
		}
	} finally {
		hold.release();
	}

	moveToTrash(store, keptDirectory, `kept-${runId}`);
	return promotion;
}
