import {existsSync, mkdirSync, readFileSync, renameSync, statSync} from 'node:fs';
import path from 'node:path';
import {LimitError, NotFoundError, StoreError} from '../errors.js';
import {measureUpper} from '../run/upper-stats.js';
import {syncDirectory, writeFileAtomic} from '../system/atomic-file.js';
import {crashPoint} from '../system/crash-point.js';
import {randomId} from '../system/random-id.js';
import {readDirectoryOrEmpty} from '../system/read-directory.js';
import type {Store} from './store.js';

/** The kernel's limit on lower layers in one overlay mount (OVL_MAX_STACK); the source tree is one of them. */
export const maxLowerLayers = 500;

/** Layers that can stack over a source tree in one run. */
export const maxStackedLayers = maxLowerLayers - 1;

/**
Layer ids are 6 symbols of the run-id alphabet: short, because a run mounts from inside `layers/` and
names its lower layers by id, so 500 of them (7 bytes each with the separator) fit mount(2)'s one-page
option string. 32^6 ids; a clash is detected when the layer is committed.
*/
export const layerIdLength = 6;

const layerIdPattern = /^[\da-hj-km-np-tv-z]{6}$/;

/** Whether `text` has the form of a layer id. */
export function isLayerId(text: string): boolean {
	return layerIdPattern.test(text);
}

/** A new random layer id. */
export function createLayerId(): string {
	return randomId(layerIdLength);
}

/** What the store records about a layer in `layers/ID.json`. Layers never change; only stats are added. */
export type LayerRecord = {
	id: string;
	/** The layer it was made on (the top base of its run), or null when it sits right on a source tree. */
	parent: string | null;
	/** Every layer stacked below it, bottom first: stacking it means stacking these, then it. */
	lowers: string[];
	created: string;
	/** How it was made. */
	origin: 'run' | 'squash' | 'import' | 'workspace';
	/** The source tree of the run that made it. */
	source?: string;
	command?: string[];
	exitCode?: number;
	/** The run that wrote it. */
	run?: string;
	/** Set when `origin` is `workspace`: the workspace whose snapshot it is, and how many runs wrote it. */
	workspace?: string;
	runs?: number;
	/** Set when `origin` is `squash`: the layer whose stack it flattens. */
	squashed?: string;
	/** Non-directory entries (files, symlinks, whiteouts; not opaque markers), counted when first asked for. */
	files?: number;
	directories?: number;
	/** Paths it deletes from below (whiteouts). */
	deletions?: number;
	/** Bytes of regular file content. */
	size?: number;
	/** `sha256:` of the layer's OCI tar (`scratch export`, without SOURCE_DATE_EPOCH), once exported. */
	diffId?: string;
	/** `sha256:` ChainID of the layer's stack, once exported. */
	chainId?: string;
	/** Set when it came from a registry: `REGISTRY/REPOSITORY@BLOB-DIGEST`. */
	pulled?: string;
};

/** The tree of a layer, in overlay upper format. */
export function layerTreePath(store: Store, id: string): string {
	return path.join(store.layersDir, id);
}

function layerRecordPath(store: Store, id: string): string {
	return path.join(store.layersDir, `${id}.json`);
}

/** A complete layer's record (tree and record both present), or undefined. */
export function readLayer(store: Store, id: string): LayerRecord | undefined {
	if (!isLayerId(id)) {
		return undefined;
	}

	let text: string;
	try {
		text = readFileSync(layerRecordPath(store, id), 'utf8');
	} catch {
		return undefined;
	}

	if (!existsSync(layerTreePath(store, id))) {
		return undefined;
	}

	try {
		return JSON.parse(text) as LayerRecord;
	} catch (error) {
		throw damagedLayerRecord(store, id, error);
	}
}

/** A layer whose record cannot be read: what to do about it, in one line. */
export function damagedLayerRecord(store: Store, id: string, cause: unknown): StoreError {
	return new StoreError(
		`the record of layer ${id} in store ${store.root} is damaged (${cause instanceof Error ? cause.message : String(cause)}); remove the names that reach it, then scratch gc frees it`,
		{cause},
	);
}

/** Like readLayer, for layers that must exist (a ref's target, a lower of a live layer). */
export function requireLayer(store: Store, id: string, reachedFrom: string): LayerRecord {
	const layer = readLayer(store, id);
	if (!layer) {
		throw new NotFoundError(
			`layer ${id} (reached from ${reachedFrom}) is missing from store ${store.root}; the store is damaged: remove that name with scratch rm`,
		);
	}

	return layer;
}

/** What is in `layers/`: complete layers, and the parts of half-made ones (a tree or a record alone). */
export function scanLayers(store: Store): {complete: string[]; halfMade: string[]; temporary: string[]} {
	const trees = new Set<string>();
	const records = new Set<string>();
	const temporary: string[] = [];
	for (const name of readDirectoryOrEmpty(store.layersDir)) {
		if (isLayerId(name)) {
			trees.add(name);
		} else if (name.endsWith('.json') && isLayerId(name.slice(0, -5))) {
			records.add(name.slice(0, -5));
		} else {
			temporary.push(name);
		}
	}

	const complete = [...trees].filter((id) => records.has(id)).sort();
	const halfMade = [...new Set([...trees, ...records])]
		.filter((id) => !(trees.has(id) && records.has(id)))
		.sort();
	return {complete, halfMade, temporary};
}

/**
A complete layer whose record has the ChainID `chainId` (and, when `lowers` is given, exactly those
lowers), or undefined. ChainIDs are recorded by export, import and pull; this reads every record, so it
costs one small file read per layer.
*/
export function findLayerByChainId(
	store: Store,
	chainId: string,
	lowers?: readonly string[],
): LayerRecord | undefined {
	for (const id of scanLayers(store).complete) {
		let layer: LayerRecord | undefined;
		try {
			layer = readLayer(store, id);
		} catch {
			// A record that cannot be parsed matches nothing.
			continue;
		}

		if (
			layer?.chainId === chainId &&
			(lowers === undefined ||
				(layer.lowers.length === lowers.length &&
					layer.lowers.every((lower, index) => lower === lowers[index])))
		) {
			return layer;
		}
	}

	return undefined;
}

/** The layers a stack of `layer` mounts, bottom first, itself last. */
export function stackOf(layer: LayerRecord): string[] {
	return [...layer.lowers, layer.id];
}

/**
Stack several layers (each with its own lowers) in the order given, later ones higher. A layer that
appears twice keeps its highest place: `--base deps --base tools` where tools was built on deps stacks
deps once, below tools.
*/
export function combineStacks(stacks: readonly string[][]): string[] {
	const flat = stacks.flat();
	const lastIndex = new Map(flat.map((id, index) => [id, index]));
	return flat.filter((id, index) => lastIndex.get(id) === index);
}

/** Fail clearly when a stack has more layers than one overlay mount can take. */
export function checkStackDepth(layerCount: number, what: string): void {
	if (layerCount > maxStackedLayers) {
		throw new LimitError(
			`${what} stacks ${layerCount} layers over the source, more than the kernel's ${maxLowerLayers} lower layers allow (${maxStackedLayers} plus the source); flatten it first with scratch squash NAME --as NEW`,
		);
	}
}

/** A layer id not in use in the store (its `layers/` dir is created if missing). */
export function reserveLayerId(store: Store): string {
	try {
		// Never recursive: a store removed meanwhile must not be made again, half, by a promotion.
		mkdirSync(store.layersDir, {mode: 0o700});
	} catch (error) {
		if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
			throw error;
		}
	}

	let id = createLayerId();
	while (existsSync(layerTreePath(store, id)) || existsSync(layerRecordPath(store, id))) {
		id = createLayerId();
	}

	return id;
}

/**
Make a finished upper tree a layer: its record is written durably first, then the tree is renamed in
beside it, so the layer is complete at the rename; a crash between leaves a record without a tree, which
gc removes. The caller holds the store (use-lock.ts) and must point a name at the layer (or record it
elsewhere) before letting go, or gc will take it back. The tree must be unmounted and its data synced.
*/
export async function commitLayer(
	store: Store,
	tree: string,
	record: Omit<LayerRecord, 'id'>,
	id = reserveLayerId(store),
): Promise<LayerRecord> {
	const layer: LayerRecord = {id, ...record};
	await writeFileAtomic(layerRecordPath(store, id), `${JSON.stringify(layer, undefined, '\t')}\n`, {
		mode: 0o600,
	});
	crashPoint('layer-recorded');
	renameSync(tree, layerTreePath(store, id));
	await syncDirectory(store.layersDir);
	crashPoint('layer-committed');
	return layer;
}

/**
Add facts derived from a layer (its stats, its DiffID) to its record. Layers never change, so they stay
true; the write is neither durable nor locked, since losing or repeating it only means deriving them
again. Only the record's owner keeps them: a copy written by anyone else (root looking at a user's
store) would be theirs, mode 0600, and the layer unreadable to the store's owner. A read-only store
just does not keep them.
*/
export async function addToLayerRecord(
	store: Store,
	id: string,
	facts: Pick<LayerRecord, 'files' | 'directories' | 'deletions' | 'size' | 'diffId' | 'chainId'>,
): Promise<void> {
	try {
		const current = readLayer(store, id);
		if (!current || statSync(layerRecordPath(store, id)).uid !== process.geteuid?.()) {
			return;
		}

		await writeFileAtomic(
			layerRecordPath(store, id),
			`${JSON.stringify({...current, ...facts}, undefined, '\t')}\n`,
			{
				durable: false,
				mode: 0o600,
			},
		);
	} catch {
		// Not kept: derived again next time.
	}
}

/**
A layer's record with its file count and size, measured once and then kept in its record (layers never
change, so they stay true). Measuring walks the tree, which is why promotion does not do it.
*/
export async function layerWithStats(store: Store, layer: LayerRecord): Promise<LayerRecord> {
	if (layer.files !== undefined && layer.size !== undefined) {
		return layer;
	}

	const stats = await measureUpper(layerTreePath(store, layer.id), store.layerFormat);
	const facts = {
		files: stats.files + stats.deletions,
		directories: stats.directories,
		deletions: stats.deletions,
		size: stats.bytes,
	};
	await addToLayerRecord(store, layer.id, facts);
	return {...layer, ...facts};
}
