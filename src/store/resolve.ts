import {describeSystemError, NotFoundError, ScratchError, StoreError} from '../errors.js';
import {
	checkStackDepth,
	combineStacks,
	isLayerId,
	type LayerRecord,
	readLayer,
	requireLayer,
	scanLayers,
	stackOf,
} from './layers.js';
import {checkName, nameProblem} from './names.js';
import {readRef} from './refs.js';
import type {Store} from './store.js';

/** A layer found by name (or by id), with the name it was found by. */
export type ResolvedLayer = {layer: LayerRecord; name?: string};

/**
Find the layer a reference means: a snapshot name first, then a layer id. Names win, so a name that
happens to look like a layer id still means what its owner meant.
*/
export function resolveLayer(store: Store, reference: string, role = 'name'): ResolvedLayer {
	if (nameProblem(reference) === undefined) {
		const ref = readRef(store, reference);
		if (ref) {
			const layer = readRecord(store, ref.layer, reference, () =>
				requireLayer(store, ref.layer, `name ${reference}`),
			);
			return {layer, name: reference};
		}
	}

	const layer = isLayerId(reference)
		? readRecord(store, reference, undefined, () => readLayer(store, reference))
		: undefined;
	if (layer) {
		return {layer};
	}

	checkName(reference, role);
	throw new NotFoundError(`no snapshot named ${reference} in store ${store.root}; see scratch ls`);
}

/**
Read a layer's record, turning a damaged one (not JSON: a torn write by another tool, a disk error)
into a clear error instead of a parser's exception.
*/
function readRecord<T>(store: Store, id: string, name: string | undefined, read: () => T): T {
	try {
		return read();
	} catch (thrown) {
		// readLayer says a record is damaged without knowing the name that reached it: say it here.
		const damaged = thrown instanceof StoreError && thrown.cause instanceof SyntaxError;
		if (thrown instanceof ScratchError && !damaged) {
			throw thrown;
		}

		const error = damaged ? thrown.cause : thrown;
		throw new StoreError(
			`the record of layer ${id} in store ${store.root} is damaged (${describeSystemError(error)}); remove the names that reach it${name === undefined ? '' : ` (scratch rm ${name})`}, then scratch gc frees it`,
			{cause: error},
		);
	}
}

/** The layers of a run's view, bottom first, and the one its writes would sit on. */
export type BaseStack = {layers: string[]; top: string | null};

/**
Resolve `--base` arguments to the layers to mount, bottom first: each base brings its lowers, later
bases stack higher. Every layer is checked to be present, and the depth against the kernel's limit.
*/
export function resolveBases(store: Store, references: readonly string[]): BaseStack {
	if (references.length === 0) {
		return {layers: [], top: null};
	}

	const resolved = references.map((reference) => resolveLayer(store, reference, '--base'));
	const layers = combineStacks(resolved.map(({layer}) => stackOf(layer)));
	checkStackDepth(layers.length, `--base ${references.join(' --base ')}`);
	const present = new Set(scanLayers(store).complete);
	const missing = layers.find((id) => !present.has(id));
	if (missing) {
		throw new NotFoundError(
			`layer ${missing}, below --base ${references.join(' --base ')}, is missing from store ${store.root}; the store is damaged: remove the names that reach it with scratch rm`,
		);
	}

	return {layers, top: resolved.at(-1)?.layer.id ?? null};
}
