import {type Dirent, existsSync, lstatSync, readdirSync, type Stats} from 'node:fs';
import {readdir} from 'node:fs/promises';
import path from 'node:path';
import {NotFoundError, StoreError, UnsupportedEnvironmentError} from '../errors.js';
import {
	isOpaqueMarker,
	type LayerFormat,
	opaqueMarker,
	whiteoutName,
	whiteoutPrefix,
	whiteoutTarget,
} from '../store/layer-format.js';
import {isLayerId, type LayerRecord, layerTreePath, readLayer, requireLayer} from '../store/layers.js';
import {nameProblem} from '../store/names.js';
import {readKeptRun} from '../store/promote.js';
import {readRef} from '../store/refs.js';
import {resolveLayer} from '../store/resolve.js';
import {runEntries} from '../store/runs.js';
import {openExistingStore, type Store} from '../store/store.js';
import {findExecutable} from '../system/executables.js';
import {runGetfattr, unquoteGetfattrPath} from '../system/getfattr.js';

/** What kind of file a changed path is (for a deletion: what it hid, when that is still known). */
export type EntryType = 'file' | 'directory' | 'symlink' | 'other';

/** One changed path: A added, M modified, D deleted. */
export type LayerChange = {
	change: 'A' | 'M' | 'D';
	/** Relative to the root of the view, `/`-separated, without a leading `./`. */
	path: string;
	type: EntryType;
	/** Set on a directory that hides what was below it (it, or a directory above it, was replaced). */
	opaque?: boolean;
};

/** What a layer or a kept run changed, compared with what lies below it. */
export type LayerDiff = {
	/** What was diffed: a layer (with the name it was found by, if any) or a kept run. */
	subject: {kind: 'layer' | 'run'; id: string; name?: string};
	/** Sorted by path, a directory's entries right after it. */
	changes: LayerChange[];
};

/** Options of `diffLayer`. */
export type DiffOptions = {
	/** Store directory; defaults to `defaultStorePath()`. */
	store?: string;
	/** A snapshot name, a kept run id or a layer id, tried in that order. */
	reference: string;
};

/** What one tree of a stack holds at a path, as overlayfs reads it. */
export type StackEntry =
	| {kind: 'absent'}
	| {kind: 'whiteout'}
	| {kind: 'directory'; opaque: boolean}
	| {kind: 'file' | 'symlink' | 'other'};

/** Reads what tree number `tree` of a stack (0 is the top) holds at a relative path. */
export type StackProbe = (tree: number, relativePath: string) => StackEntry;

/**
A path found in a stack. For a directory, `trees` are the trees merged into it, top first (the first
one gives its attributes); for anything else, the one tree it comes from.
*/
export type StackLookup = {type: EntryType; trees: number[]};

/**
Find `relativePath` inside a directory of a stack, given the trees merged into that directory (top
first). The rules are overlayfs's: a whiteout ends the search; so does a non-directory, which is the
result when nothing was found above it (below a directory, it is hidden); an opaque directory is the
last tree merged. Undefined when nothing is there.
*/
export function descendStack(
	parentTrees: readonly number[],
	relativePath: string,
	probe: StackProbe,
): StackLookup | undefined {
	const trees: number[] = [];
	for (const tree of parentTrees) {
		const entry = probe(tree, relativePath);
		if (entry.kind === 'absent') {
			continue;
		}

		if (entry.kind === 'whiteout') {
			break;
		}

		if (entry.kind !== 'directory') {
			if (trees.length === 0) {
				return {type: entry.kind, trees: [tree]};
			}

			break;
		}

		trees.push(tree);
		if (entry.opaque) {
			break;
		}
	}

	return trees.length === 0 ? undefined : {type: 'directory', trees};
}

/**
Find a relative path in a stack of `treeCount` trees (0 is the top), component by component from the
root, as overlayfs does: a whiteout or a non-directory at an ancestor, or an opaque ancestor, hides what
the trees under it hold.
*/
export function lookupStack(
	relativePath: string,
	treeCount: number,
	probe: StackProbe,
): StackLookup | undefined {
	let found: StackLookup = {type: 'directory', trees: Array.from({length: treeCount}, (_, tree) => tree)};
	let reached = '';
	for (const name of relativePath.split('/')) {
		if (found.type !== 'directory') {
			return undefined;
		}

		reached = reached === '' ? name : `${reached}/${name}`;
		const next = descendStack(found.trees, reached, probe);
		if (!next) {
			return undefined;
		}

		found = next;
	}

	return found;
}

/**
The directories marked opaque (`user.overlay.opaque="y"`) in the output of `getfattr -d` (as text:
`# file: PATH` headers, then one `name="value"` line per attribute, then a blank line). Other values
(`x`, which newer kernels write on directories holding regular-file whiteouts) do not hide anything.
*/
export function parseOpaqueDirectories(getfattrOutput: string): Set<string> {
	const opaque = new Set<string>();
	let file: string | undefined;
	for (const line of getfattrOutput.split('\n')) {
		if (line.startsWith('# file: ')) {
			file = unquoteGetfattrPath(line.slice('# file: '.length));
		} else if (line === 'user.overlay.opaque="y"' && file !== undefined) {
			opaque.add(file);
		}
	}

	return opaque;
}

function findGetfattr(): string {
	try {
		return findExecutable('getfattr');
	} catch (error) {
		throw new UnsupportedEnvironmentError(
			"scratch diff needs the program 'getfattr' to read overlay attributes and cannot find it; install the attr package",
			{cause: error},
		);
	}
}

/**
Absolute paths of the opaque directories in some trees, from one `getfattr` over all of them (Node
cannot read extended attributes). getfattr exits 1 when it could not read something (a directory the
command made unreadable); what it printed is still right, so that is not an error.
*/
export async function readOpaqueDirectories(roots: readonly string[]): Promise<Set<string>> {
	if (roots.length === 0) {
		return new Set();
	}

	const args = [
		'--absolute-names',
		'--recursive',
		'--physical',
		'--dump',
		'--match=^user\\.overlay\\.opaque$',
	];
	const output = await runGetfattr(findGetfattr(), args, roots, {partial: true, what: roots.join(' ')});
	return parseOpaqueDirectories(output);
}

/** What a diff compares: the upper tree, and what lies below it. */
type DiffSubject = {
	subject: LayerDiff['subject'];
	upper: string;
	/** Layer trees below the upper, top first. */
	lowerLayers: string[];
	/** The source tree at the bottom; undefined for a layer made from no source tree (imported). */
	source: string | undefined;
};

const runIdPattern = /^[\da-z]{12}$/;

/** The trees of some layers, top first, from ids bottom first; a missing one means a damaged store. */
function layerTreesTopFirst(store: Store, ids: readonly string[], reachedFrom: string): string[] {
	return ids.map((id) => layerTreePath(store, requireLayer(store, id, reachedFrom).id)).reverse();
}

function findSubject(store: Store, reference: string): DiffSubject {
	// A name wins over a run id that looks the same, as names win over layer ids in resolveLayer.
	const isExistingName = nameProblem(reference) === undefined && readRef(store, reference) !== undefined;
	const keptDirectory = path.join(store.keptDir, reference);
	if (
		!isExistingName &&
		runIdPattern.test(reference) &&
		existsSync(path.join(keptDirectory, runEntries.record))
	) {
		const run = readKeptRun(store, reference);
		const upper = path.join(keptDirectory, runEntries.upper);
		if (!existsSync(upper)) {
			throw new StoreError(
				`kept run ${reference} has no upper dir left (an interrupted promote?); run scratch gc to repair the store`,
			);
		}

		return {
			subject: {kind: 'run', id: run.id},
			upper,
			lowerLayers: layerTreesTopFirst(store, run.layers, `kept run ${reference}`),
			source: run.src,
		};
	}

	const layerById = isLayerId(reference) ? readLayer(store, reference) : undefined;
	if (isExistingName || layerById) {
		const {layer, name} = isExistingName ? resolveLayer(store, reference) : {layer: layerById as LayerRecord};
		return {
			subject: name === undefined ? {kind: 'layer', id: layer.id} : {kind: 'layer', id: layer.id, name},
			upper: layerTreePath(store, layer.id),
			lowerLayers: layerTreesTopFirst(store, layer.lowers, `layer ${layer.id}`),
			source: layer.source,
		};
	}

	throw new NotFoundError(
		`no snapshot name, kept run or layer ${JSON.stringify(reference)} in store ${store.root}; see scratch ls for names (scratch run --keep prints kept run ids)`,
	);
}

function entryTypeOf(info: Pick<Stats, 'isFile' | 'isDirectory' | 'isSymbolicLink'>): EntryType {
	if (info.isFile()) {
		return 'file';
	}

	if (info.isDirectory()) {
		return 'directory';
	}

	return info.isSymbolicLink() ? 'symlink' : 'other';
}

/** How the trees of a store record whiteouts and opaque directories, read with lstat (and getfattr). */
type TreeFormat = {
	format: LayerFormat;
	/** Absolute paths of the directories marked opaque by xattr (the kernel's format only). */
	opaqueDirectories: ReadonlySet<string>;
};

/** Whether a directory of a tree hides what lies below it: by xattr, or by holding the opaque marker. */
function isOpaqueDirectory({format, opaqueDirectories}: TreeFormat, absolute: string): boolean {
	if (format === 'overlay-userxattr-1') {
		return opaqueDirectories.has(absolute);
	}

	const marker = safeLstat(path.join(absolute, opaqueMarker));
	return marker !== undefined && isOpaqueMarker(format, opaqueMarker, marker);
}

/** What a tree's entry is besides content: a whiteout (with the name it deletes) or the opaque marker. */
type EntryMeaning = {deletes: string} | 'marker' | undefined;

/** What an lstat'ed entry of a tree is: a whiteout, the opaque marker, or (undefined) content. */
function meaningOf(format: LayerFormat, name: string, info: Stats): EntryMeaning {
	if (isOpaqueMarker(format, name, info)) {
		return 'marker';
	}

	const deletes = whiteoutTarget(format, name, info);
	return deletes === undefined ? undefined : {deletes};
}

/** The same for a directory entry, lstat'ed only when its type and name allow it to be more than content. */
function meaningOfEntry(format: LayerFormat, absolute: string, entry: Dirent): EntryMeaning {
	const mayBeMore =
		format === 'whiteout-files-1'
			? entry.isFile() && entry.name.startsWith(whiteoutPrefix)
			: entry.isCharacterDevice();
	const info = mayBeMore ? safeLstat(absolute) : undefined;
	return info ? meaningOf(format, entry.name, info) : undefined;
}

/**
A probe reading real trees; a path that cannot be read (gone, or under an unreadable dir) is absent, and
so is the name of a whiteout file or marker itself (it is not content of the view).
*/
function treeProbe(trees: readonly string[], treeFormat: TreeFormat): StackProbe {
	const {format} = treeFormat;
	return (tree, relativePath) => {
		const absolute = path.join(trees[tree] as string, relativePath);
		const name = path.basename(relativePath);
		const info = safeLstat(absolute);
		if (!info) {
			if (format === 'overlay-userxattr-1') {
				return {kind: 'absent'};
			}

			// In the whiteout-files format a deletion is a file beside the name it deletes.
			const whiteout = whiteoutName(format, name);
			const whiteoutInfo = safeLstat(path.join(path.dirname(absolute), whiteout));
			return whiteoutInfo && whiteoutTarget(format, whiteout, whiteoutInfo) === name
				? {kind: 'whiteout'}
				: {kind: 'absent'};
		}

		if (meaningOf(format, name, info) !== undefined) {
			// The kernel's whiteout sits at the name it deletes; a whiteout file or marker is no content.
			return format === 'overlay-userxattr-1' ? {kind: 'whiteout'} : {kind: 'absent'};
		}

		const type = entryTypeOf(info);
		return type === 'directory'
			? {kind: 'directory', opaque: isOpaqueDirectory(treeFormat, absolute)}
			: {kind: type};
	};
}

function safeLstat(file: string): Stats | undefined {
	try {
		return lstatSync(file);
	} catch {
		return undefined;
	}
}

function readNamesBelow(trees: readonly string[], found: StackLookup, relativePath: string): Set<string> {
	const names = new Set<string>();
	for (const tree of found.trees) {
		try {
			for (const name of readdirSync(path.join(trees[tree] as string, relativePath))) {
				names.add(name);
			}
		} catch {
			// An unreadable directory below: report what can be read.
		}
	}

	return names;
}

type Walk = {
	upper: string;
	lowerTrees: readonly string[];
	probe: StackProbe;
	treeFormat: TreeFormat;
	changes: LayerChange[];
};

/**
Compare one directory of the upper tree with the view below. `below` is that directory in the view
below (undefined when it is not there); `replaced` says the upper directory hides it.
*/
async function walkDirectory(
	walk: Walk,
	relativeDirectory: string,
	below: StackLookup | undefined,
	replaced: boolean,
): Promise<void> {
	let entries: Dirent[];
	try {
		entries = await readdir(path.join(walk.upper, relativeDirectory), {withFileTypes: true});
	} catch {
		// A directory the command made unreadable (mode 000, read as its owner): report the rest.
		return;
	}

	const childPath = (name: string) => (relativeDirectory === '' ? name : `${relativeDirectory}/${name}`);
	const lookupBelow = (relativePath: string) =>
		below?.type === 'directory' ? descendStack(below.trees, relativePath, walk.probe) : undefined;

	// What each upper entry is to the view: content, a whiteout of another name, or the opaque marker.
	const meanings = new Map(
		entries.map((entry) => [
			entry.name,
			meaningOfEntry(walk.treeFormat.format, path.join(walk.upper, childPath(entry.name)), entry),
		]),
	);
	if (replaced && below?.type === 'directory') {
		const upperNames = new Set<string>();
		for (const entry of entries) {
			const meaning = meanings.get(entry.name);
			if (meaning !== 'marker') {
				upperNames.add(meaning === undefined ? entry.name : meaning.deletes);
			}
		}

		for (const name of readNamesBelow(walk.lowerTrees, below, relativeDirectory)) {
			const hidden = upperNames.has(name) ? undefined : lookupBelow(childPath(name));
			if (hidden) {
				walk.changes.push({change: 'D', path: childPath(name), type: hidden.type});
			}
		}
	}

	for (const entry of entries) {
		const meaning = meanings.get(entry.name);
		if (meaning === 'marker') {
			continue;
		}

		if (meaning !== undefined) {
			const deleted = childPath(meaning.deletes);
			walk.changes.push({change: 'D', path: deleted, type: lookupBelow(deleted)?.type ?? 'other'});
			continue;
		}

		const relativePath = childPath(entry.name);
		const absolute = path.join(walk.upper, relativePath);
		const found = lookupBelow(relativePath);
		if (!entry.isDirectory()) {
			walk.changes.push({change: found ? 'M' : 'A', path: relativePath, type: entryTypeOf(entry)});
			continue;
		}

		if (!found) {
			walk.changes.push({change: 'A', path: relativePath, type: 'directory'});
			await walkDirectory(walk, relativePath, undefined, false);
			continue;
		}

		// Inside a replaced directory nothing merges from below, so every directory there replaces too.
		const hidesBelow = replaced || isOpaqueDirectory(walk.treeFormat, absolute);
		if (hidesBelow) {
			walk.changes.push({change: 'M', path: relativePath, type: 'directory', opaque: true});
		} else {
			const upperInfo = safeLstat(absolute);
			const lowerInfo = safeLstat(
				path.join(walk.lowerTrees[found.trees[0] as number] as string, relativePath),
			);
			// A type change shows in the mode too. Directories copied up on the way to a change are not listed.
			if (
				!upperInfo ||
				!lowerInfo ||
				upperInfo.mode !== lowerInfo.mode ||
				upperInfo.uid !== lowerInfo.uid ||
				upperInfo.gid !== lowerInfo.gid
			) {
				walk.changes.push({change: 'M', path: relativePath, type: 'directory'});
			}
		}

		await walkDirectory(walk, relativePath, found, hidesBelow);
	}
}

/** Order paths as a tree: by segment, so a directory's entries follow it directly. */
function comparePaths(left: string, right: string): number {
	const leftSegments = left.split('/');
	const rightSegments = right.split('/');
	for (let index = 0; index < Math.min(leftSegments.length, rightSegments.length); index++) {
		const leftSegment = leftSegments[index] as string;
		const rightSegment = rightSegments[index] as string;
		if (leftSegment !== rightSegment) {
			return leftSegment < rightSegment ? -1 : 1;
		}
	}

	return leftSegments.length - rightSegments.length;
}

/**
`scratch diff NAME|RUN-ID`: what a layer or a kept run changed, compared with what lies below it: the
layers it was made on, then the source tree as it is now (an empty tree when it is gone). The reference
is a snapshot name, a kept run id or a layer id, tried in that order. The root directory itself is never
listed: overlayfs gives it the upper dir's attributes, whatever the command did. Trees are read in the
store's layer format: in a whiteout-files store a `.wh.NAME` file deletes NAME and `.wh..wh..opq` makes
its directory opaque; neither is listed itself.
*/
export async function diffLayer({store: storePath, reference}: DiffOptions): Promise<LayerDiff> {
	const store = await openExistingStore(storePath, {readOnly: true});
	const {subject, upper, lowerLayers, source} = findSubject(store, reference);
	// The source tree is read as a plain tree (no opaque dirs): reading its xattrs would mean a walk of it.
	// The whiteout-files format has no opaque xattrs, only marker files, read as the walk meets them.
	const treeFormat: TreeFormat = {
		format: store.layerFormat,
		opaqueDirectories:
			store.layerFormat === 'overlay-userxattr-1'
				? await readOpaqueDirectories([upper, ...lowerLayers])
				: new Set(),
	};
	const lowerTrees = source === undefined ? lowerLayers : [...lowerLayers, source];
	const walk: Walk = {
		upper,
		lowerTrees,
		probe: treeProbe(lowerTrees, treeFormat),
		treeFormat,
		changes: [],
	};
	await walkDirectory(walk, '', {type: 'directory', trees: lowerTrees.map((_, tree) => tree)}, false);
	walk.changes.sort((left, right) => comparePaths(left.path, right.path));
	return {subject, changes: walk.changes};
}
