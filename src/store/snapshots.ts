import {ExistsError, NotFoundError} from '../errors.js';
import {type LayerRecord, layerWithStats, readLayer} from './layers.js';
import {checkName} from './names.js';
import {type Promotion, promoteKeptRun} from './promote.js';
import {listRefs, type Ref, readRef, removeRef, writeRef} from './refs.js';
import {resolveLayer} from './resolve.js';
import {openExistingStore} from './store.js';
import {holdStoreUse} from './use-lock.js';

/** Options every store operation takes. */
export type StoreOptions = {
	/** Store directory. Default: `SCRATCH_STORE`, else `/var/lib/scratch` (root) or `~/.local/share/scratch`. */
	store?: string;
};

/** One line of `scratch ls`: a name and the layer it points at. */
export type SnapshotEntry = {
	name: string;
	layer: string;
	parent: string | null;
	/** Layers a run with `--base NAME` stacks over the source: the layer and every layer below it. */
	depth: number;
	/** Bytes of file content in the layer itself (not its lowers). */
	size: number;
	files: number;
	created: string;
	command: string[];
	origin: LayerRecord['origin'];
};

/** Every snapshot name with its layer, sorted by name. */
export async function listSnapshots(options: StoreOptions = {}): Promise<SnapshotEntry[]> {
	const store = await openExistingStore(options.store, {readOnly: true});
	const entries: SnapshotEntry[] = [];
	for (const ref of listRefs(store)) {
		const found = readLayer(store, ref.layer);
		if (!found) {
			continue;
		}

		const layer = await layerWithStats(store, found);
		entries.push({
			name: ref.name,
			layer: layer.id,
			parent: layer.parent,
			depth: layer.lowers.length + 1,
			size: layer.size ?? 0,
			files: layer.files ?? 0,
			created: layer.created,
			command: layer.command ?? [],
			origin: layer.origin,
		});
	}

	return entries;
}

/** One layer in full: its record, the names pointing at it, and its stack. */
export type LayerDetails = {
	layer: LayerRecord;
	names: string[];
	/** The layers a run with `--base` on it mounts, bottom first, itself last, with their names. */
	chain: Array<{
		id: string;
		names: string[];
		created: string;
		command: string[];
		origin: LayerRecord['origin'];
	}>;
};

/** `scratch inspect NAME|LAYER-ID`. */
export async function inspectLayer(options: StoreOptions & {reference: string}): Promise<LayerDetails> {
	const store = await openExistingStore(options.store, {readOnly: true});
	const {layer: found} = resolveLayer(store, options.reference, 'NAME');
	const layer = await layerWithStats(store, found);
	const namesByLayer = new Map<string, string[]>();
	for (const ref of listRefs(store)) {
		namesByLayer.set(ref.layer, [...(namesByLayer.get(ref.layer) ?? []), ref.name]);
	}

	const chain = [...layer.lowers, layer.id].map((id) => {
		const record = id === layer.id ? layer : readLayer(store, id);
		return {
			id,
			names: namesByLayer.get(id) ?? [],
			created: record?.created ?? '',
			command: record?.command ?? [],
			origin: record?.origin ?? 'run',
		};
	});
	return {layer, names: namesByLayer.get(layer.id) ?? [], chain};
}

/** `scratch tag NAME NEW-NAME`: another name for the same layer (refused if NEW-NAME exists, unless `force`). */
export async function tagSnapshot(
	options: StoreOptions & {reference: string; name: string; force?: boolean},
): Promise<Ref> {
	checkName(options.name, 'NEW-NAME');
	const store = await openExistingStore(options.store);
	const hold = await holdStoreUse(store);
	try {
		const {layer} = resolveLayer(store, options.reference, 'NAME');
		const existing = readRef(store, options.name);
		if (existing && !options.force && existing.layer !== layer.id) {
			throw new ExistsError(
				`${options.name} exists already (layer ${existing.layer}); remove it with scratch rm ${options.name} or pass --force to move it`,
			);
		}

		return await writeRef(store, options.name, layer.id);
	} finally {
		hold.release();
	}
}

/**
`scratch rm NAME...`: remove names. All are checked first, so an unknown one changes nothing. Layers
stay until `gc` finds nothing reaching them. Returns the removed names with the layers they pointed at.
*/
export async function removeSnapshots(options: StoreOptions & {names: string[]}): Promise<Ref[]> {
	for (const name of options.names) {
		checkName(name, 'NAME');
	}

	const store = await openExistingStore(options.store);
	const refs = options.names.map((name) => {
		const ref = readRef(store, name);
		if (!ref) {
			throw new NotFoundError(
				`no snapshot named ${name} in store ${store.root}; nothing was removed; see scratch ls`,
			);
		}

		return ref;
	});
	for (const ref of refs) {
		removeRef(store, ref.name);
	}

	return refs;
}

/** `scratch promote RUN-ID NAME`: make a run kept with `--keep` a layer named NAME. */
export async function promoteRun(options: StoreOptions & {runId: string; name: string}): Promise<Promotion> {
	const store = await openExistingStore(options.store);
	return promoteKeptRun(store, options.runId, options.name);
}
