import {spawn} from 'node:child_process';
import {mkdirSync, readFileSync, rmSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import {describeSystemError, StoreError, UnsupportedEnvironmentError} from '../errors.js';
import {
	defaultLayerFormat,
	isOpaqueMarker,
	type LayerFormat,
	opaqueMarker,
	opaqueXattr,
	whiteoutName,
	whiteoutPrefix,
	whiteoutTarget,
} from '../store/layer-format.js';
import {type LayerRecord, layerTreePath, requireLayer, stackOf} from '../store/layers.js';
import {leaseName} from '../store/lease-names.js';
import {checkName} from '../store/names.js';
import {commitAndName} from '../store/promote.js';
import type {Ref} from '../store/refs.js';
import {resolveLayer} from '../store/resolve.js';
import {openExistingStore, type Store} from '../store/store.js';
import {discardWorkDirectory} from '../store/trash.js';
import {holdStoreUse} from '../store/use-lock.js';
import {findExecutable} from '../system/executables.js';
import {unquoteGetfattr} from '../system/getfattr.js';
import {currentProcessIdentity} from '../system/process-identity.js';
import {randomId} from '../system/random-id.js';

/*
A squash applies the layers of a stack, bottom first, to one new tree, so that the new layer over any
source tree shows what the whole stack showed. Each layer is applied with one `cp` after the paths it
replaces have been removed from the tree; which paths those are is decided here, from a listing of all
the layers (one `find`, which batches directories into `getfattr` for opaqueness and xattrs) and a model of
what the tree holds so far. All file work happens in two spawned shells (list everything, then apply
everything), inside a user namespace when not root, where the store's owner is root and so can read
and replace mode-000 and read-only directories.

Paths from the listings are kept as byte strings (latin1), so file names that are not UTF-8 go through
unchanged; they are only ever handed back to the shell, never to Node's fs.

The tree is built in the store's layer format (layer-format.ts). The model is the same for both, in
terms of the view's names; only where a whiteout lies and how a directory is made opaque differ: in the
whiteout-files format a whiteout of X is the file `.wh.X` beside X (so a later X must remove it, and a
later `.wh.X` must remove X), and an opaque directory holds the marker file `.wh..wh..opq`.
*/
const copyOptions = ['-dR', '--preserve=mode,ownership,timestamps,links,xattr', '--remove-destination'];

/** Options of `squashLayer`. */
export type SquashOptions = {
	/** Store directory; defaults to `defaultStorePath()`. */
	store?: string;
	/** The snapshot name (or layer id) whose stack is flattened. */
	name: string;
	/** The name the new layer gets; it may be `name` itself, or replace another existing name. */
	as: string;
};

/** What a squash made. */
export type Squash = {
	/** The new layer: no parent, no lowers, `origin: 'squash'`, `squashed` the layer it flattens. */
	layer: LayerRecord;
	/** The name now pointing at it. */
	ref: Ref;
	/** How many layers went into it. */
	squashedLayers: number;
};

/**
One entry of a layer, as listed: a directory or anything else (file, symlink, whiteout, device). In the
whiteout-files format, `marker` says the entry is no content: a whiteout or an opaque directory's marker.
*/
export type LayerEntry = {path: string; directory: boolean; marker?: 'whiteout' | 'opaque'};

/** The name a whiteout file deletes (`marker: 'whiteout'` entries only: `.wh.NAME`). */
function deletedName(listedName: string): string {
	return listedName.slice(whiteoutPrefix.length);
}

/** A directory's extended attributes, as listed: whether it is opaque and the names of the others. */
export type DirectoryXattrs = {opaque: boolean; names: string[]};

/**
What the tree holds so far at a name of the view: a directory with the xattrs it carries, or something
else (a whiteout, told apart because in the whiteout-files format it lies under another name).
*/
type TreeNode =
	| {directory: false; whiteout: boolean}
	| {directory: true; xattrs: Set<string>; children: Map<string, TreeNode>};

type TreeDirectory = Extract<TreeNode, {directory: true}>;

/** What the tree being built holds so far: a model of it, updated as each layer is planned. */
export type SquashTree = {root: TreeDirectory};

/** What must happen, besides the copy of the layer itself, for one layer to be applied to the tree. */
export type LayerPlan = {
	/**
	Paths to remove from the tree before the copy: replaced by another type, or by an opaque directory; in
	the whiteout-files format also a whiteout of a name the layer holds, and a name the layer deletes.
	*/
	removals: string[];
	/**
	Directories to mark opaque: they replace a file or whiteout that hid what lies below. The kernel's format
	marks them with an xattr after the copy, the whiteout-files one with a marker file made before it.
	*/
	opaque: string[];
	/** Xattrs to remove after the copy from directories merged with the layer's: the layer's lacks them. */
	staleXattrs: Array<{path: string; name: string}>;
};

/** An empty tree to plan a squash on. */
export function createSquashTree(): SquashTree {
	return {root: {directory: true, xattrs: new Set(), children: new Map()}};
}

/**
Xattrs overlayfs keeps for itself (hidden from the view), which say nothing about the view's content.
`user.overlay.overlay.*` is how overlayfs stores a user's own `user.overlay.*` xattr: that one is content.
*/
export function isOverlayPrivateXattr(name: string): boolean {
	return /^(user|trusted)\.overlay\./.test(name) && !/^(user|trusted)\.overlay\.overlay\./.test(name);
}

/**
Plan how one layer (entries in `find` order: a directory before what it holds) in layer format `format`
goes onto the tree, and update the model to what the tree holds afterwards. Overlayfs's rules, layer B
over tree T:
- anything but a directory in B (a file, a symlink, a whiteout) replaces whatever T has there;
- an opaque directory in B replaces whatever T has there, and stays opaque;
- any other directory in B merges with a directory in T (B's attributes win; T's opaqueness stays);
  over a file or whiteout in T, it hid everything below that, so it becomes opaque;
- what B does not name stays as T has it; every whiteout stays, as it may hide something of the source.
*/
export function planLayer(
	tree: SquashTree,
	entries: readonly LayerEntry[],
	xattrs: ReadonlyMap<string, DirectoryXattrs>,
	format: LayerFormat = defaultLayerFormat,
): LayerPlan {
	const plan: LayerPlan = {removals: [], opaque: [], staleXattrs: []};
	const userXattrs = (directoryPath: string) =>
		new Set((xattrs.get(directoryPath)?.names ?? []).filter((name) => !isOverlayPrivateXattr(name)));
	const mergeDirectory = (directory: TreeDirectory, directoryPath: string) => {
		const names = userXattrs(directoryPath);
		for (const name of directory.xattrs) {
			if (!names.has(name)) {
				plan.staleXattrs.push({path: directoryPath, name});
			}
		}

		directory.xattrs = names;
	};

	// A marker follows its directory in the listing, so the opaque directories are gathered first.
	const markedOpaque = new Set(
		entries.filter((entry) => entry.marker === 'opaque').map((entry) => parentOf(entry.path)),
	);
	const isOpaque = (directoryPath: string) =>
		format === 'whiteout-files-1'
			? markedOpaque.has(directoryPath)
			: (xattrs.get(directoryPath)?.opaque ?? false);
	// Where what the tree holds at a name lies on disk: a whiteout file lies beside the name.
	const onDisk = (parentPath: string, name: string, node: TreeNode) =>
		joinPath(parentPath, !node.directory && node.whiteout ? whiteoutName(format, name) : name);

	// The layer's directories, by path, as they stand in the tree once planned.
	const directories = new Map<string, TreeDirectory>([['', tree.root]]);
	mergeDirectory(tree.root, '');
	for (const entry of entries) {
		const parentPath = parentOf(entry.path);
		const parent = directories.get(parentPath);
		if (!parent) {
			throw new Error(`layer listing has ${entry.path} before its directory`);
		}

		if (entry.marker === 'opaque') {
			// Copied with its directory, which was planned as opaque.
			continue;
		}

		const listedName = entry.path.slice(parentPath === '' ? 0 : parentPath.length + 1);
		const whiteout = entry.marker === 'whiteout';
		const name = whiteout ? deletedName(listedName) : listedName;
		const existing = parent.children.get(name);
		if (!entry.directory) {
			// cp --remove-destination replaces anything but a directory by itself; something under another
			// name (a whiteout file, or the name a whiteout file deletes) has to go first.
			if (existing && (existing.directory || onDisk(parentPath, name, existing) !== entry.path)) {
				plan.removals.push(onDisk(parentPath, name, existing));
			}

			parent.children.set(name, {directory: false, whiteout});
			continue;
		}

		const opaque = isOpaque(entry.path);
		if (existing?.directory && !opaque) {
			mergeDirectory(existing, entry.path);
			directories.set(entry.path, existing);
			continue;
		}

		if (existing) {
			plan.removals.push(onDisk(parentPath, name, existing));
			if (!(existing.directory || opaque)) {
				plan.opaque.push(entry.path);
			}
		}

		const directory: TreeDirectory = {directory: true, xattrs: userXattrs(entry.path), children: new Map()};
		parent.children.set(name, directory);
		directories.set(entry.path, directory);
	}

	return plan;
}

function parentOf(relativePath: string): string {
	const slash = relativePath.lastIndexOf('/');
	return slash === -1 ? '' : relativePath.slice(0, slash);
}

function joinPath(parentPath: string, name: string): string {
	return parentPath === '' ? name : `${parentPath}/${name}`;
}

/** Split a listed path `ID/RELATIVE` (or `ID` for a layer's root) into the layer id and the relative path. */
function splitListedPath(listed: string): [string, string] {
	const slash = listed.indexOf('/');
	return slash === -1 ? [listed, ''] : [listed.slice(0, slash), listed.slice(slash + 1)];
}

/**
Parse `find ID... -printf '%H %y %s %P\0'` output (read as latin1) run in `layers/`: each layer's entries,
in find's order, without the layer's root. In the whiteout-files format, whiteouts and opaque markers
are told from content by name, type and size.
*/
export function parseEntryListing(
	listing: string,
	format: LayerFormat = defaultLayerFormat,
): Map<string, LayerEntry[]> {
	const layers = new Map<string, LayerEntry[]>();
	for (const record of listing.split('\0')) {
		const space = record.indexOf(' ');
		const sizeEnd = space === -1 ? -1 : record.indexOf(' ', space + 3);
		const relative = sizeEnd === -1 ? '' : record.slice(sizeEnd + 1);
		if (relative === '') {
			continue;
		}

		const id = record.slice(0, space);
		const type = record[space + 1];
		const entry: LayerEntry = {path: relative, directory: type === 'd'};
		// Only regular files can be whiteouts or markers there; the kernel's whiteouts lie at the names
		// they delete, so its listing needs no telling apart.
		if (format === 'whiteout-files-1' && type === 'f') {
			const name = relative.slice(relative.lastIndexOf('/') + 1);
			const stats = {
				isFile: () => true,
				isCharacterDevice: () => false,
				size: Number(record.slice(space + 3, sizeEnd)),
				rdev: 0,
			};
			if (isOpaqueMarker(format, name, stats)) {
				entry.marker = 'opaque';
			} else if (whiteoutTarget(format, name, stats) !== undefined) {
				entry.marker = 'whiteout';
			}
		}

		const entries = layers.get(id) ?? [];
		entries.push(entry);
		layers.set(id, entries);
	}

	return layers;
}

/**
Parse `getfattr --absolute-names -d -m - -e hex ID/DIR...` output (read as latin1) run in `layers/`:
each layer's directories that have xattrs, by relative path ('' for the layer's root).
*/
export function parseXattrDump(dump: string): Map<string, Map<string, DirectoryXattrs>> {
	const layers = new Map<string, Map<string, DirectoryXattrs>>();
	let current: DirectoryXattrs | undefined;
	for (const line of dump.split('\n')) {
		if (line.startsWith('# file: ')) {
			const [id, relative] = splitListedPath(unquoteGetfattr(line.slice('# file: '.length)));
			current = {opaque: false, names: []};
			const directories = layers.get(id) ?? new Map<string, DirectoryXattrs>();
			directories.set(relative, current);
			layers.set(id, directories);
		} else if (line !== '' && current) {
			const equals = line.indexOf('=');
			const name = unquoteGetfattr(equals === -1 ? line : line.slice(0, equals));
			current.names.push(name);
			// 'y' is opaque; 'x' (a directory holding xwhiteouts, for data-only layers) is not.
			if (name === opaqueXattr && line.slice(equals + 1) === '0x79') {
				current.opaque = true;
			}
		}
	}

	return layers;
}

/** A byte string (latin1) quoted for sh. */
function shellQuote(bytes: string): string {
	return `'${bytes.replaceAll("'", "'\\''")}'`;
}

/** A Node (UTF-8) string as the byte string the scripts are written in. */
function asBytes(text: string): string {
	return Buffer.from(text, 'utf8').toString('latin1');
}

function quotePath(text: string): string {
	return shellQuote(asBytes(text));
}

const toolNames = ['sh', 'find', 'getfattr', 'setfattr', 'cp', 'rm', 'xargs', 'mkdir', 'touch'] as const;

type Tools = Record<(typeof toolNames)[number], string>;

function findTools(): Tools {
	const tools = {} as Tools;
	for (const name of toolNames) {
		try {
			tools[name] = findExecutable(name);
		} catch (error) {
			const owner = {getfattr: 'attr', setfattr: 'attr', find: 'findutils', xargs: 'findutils'} as Record<
				string,
				string
			>;
			throw new UnsupportedEnvironmentError(
				`scratch squash needs the program '${name}' and cannot find it; install the ${owner[name] ?? 'coreutils'} package`,
				{cause: error},
			);
		}
	}

	return tools;
}

/** Run a script with sh, as the store's owner (root in a user namespace when not root). */
async function runScript(
	tools: Tools,
	scriptPath: string,
	{failure, advice}: {failure: string; advice: string},
): Promise<void> {
	const command =
		process.geteuid?.() === 0
			? [tools.sh, scriptPath]
			: [findExecutable('unshare'), '--user', '--map-root-user', '--', tools.sh, scriptPath];
	await new Promise<void>((resolve, reject) => {
		const child = spawn(command[0] as string, command.slice(1), {stdio: ['ignore', 'ignore', 'pipe']});
		let stderr = '';
		child.stderr.on('data', (chunk: Buffer) => {
			stderr += chunk.toString();
		});
		child.on('error', (error) => {
			reject(new StoreError(`${failure}: ${describeSystemError(error)}; ${advice}`, {cause: error}));
		});
		child.on('close', (code, signal) => {
			if (code === 0) {
				resolve();
				return;
			}

			const reason = stderr.trim().split('\n')[0] || (signal ? `killed by ${signal}` : `exit status ${code}`);
			reject(new StoreError(`${failure}: ${reason}; ${advice}`));
		});
	});
}

/**
The script that lists every layer with one find, run in `layers/`: all entries into `entries`, and the
xattrs of every directory (getfattr, started as few times as the argument limit allows) into `xattrs`.
*/
function listingScript(
	tools: Tools,
	{
		layersDirectory,
		layers,
		listsDirectory,
	}: {layersDirectory: string; layers: string[]; listsDirectory: string},
): string {
	const list = (name: string) => quotePath(path.join(listsDirectory, name));
	return `set -e
cd ${quotePath(layersDirectory)}
${shellQuote(tools.find)} ${layers.map((id) => shellQuote(id)).join(' ')} -fprintf ${list('entries')} '%H %y %s %P\\0' -type d -exec ${shellQuote(tools.getfattr)} -P --absolute-names -d -m - -e hex {} + > ${list('xattrs')}
`;
}

/** The script that applies every layer to the tree: removals, one copy, then opaque marks and stale xattrs. */
function applyScript(
	tools: Tools,
	{
		tree,
		trees,
		plans,
		listsDirectory,
		format,
	}: {tree: string; trees: string[]; plans: LayerPlan[]; listsDirectory: string; format: LayerFormat},
): string {
	const lines = ['set -e', `cd ${quotePath(tree)}`];
	for (const [index, plan] of plans.entries()) {
		const list = (suffix: string, paths: string[]) => {
			const file = path.join(listsDirectory, `${index}.${suffix}`);
			// `./` keeps a name starting with '-' from being read as an option.
			writeFileSync(file, Buffer.from(paths.map((relative) => `./${relative}\0`).join(''), 'latin1'));
			return quotePath(file);
		};

		if (plan.removals.length > 0) {
			lines.push(
				`${shellQuote(tools.xargs)} -0 -r ${shellQuote(tools.rm)} -rf -- < ${list('removals', plan.removals)}`,
			);
		}

		if (plan.opaque.length > 0 && format === 'whiteout-files-1') {
			// Made before the copy, which then gives each directory the layer's mode, owner and times.
			lines.push(
				`${shellQuote(tools.xargs)} -0 -r ${shellQuote(tools.mkdir)} -- < ${list('opaque', plan.opaque)}`,
				`${shellQuote(tools.xargs)} -0 -r ${shellQuote(tools.touch)} -- < ${list(
					'markers',
					plan.opaque.map((directory) => `${directory}/${opaqueMarker}`),
				)}`,
			);
		}

		lines.push(
			// `TREE/.` copies what the layer holds (and its root's attributes) into `.`, not the layer itself.
			`${shellQuote(tools.cp)} ${copyOptions.join(' ')} -- ${quotePath(`${trees[index]}/.`)} .`,
		);
		if (plan.opaque.length > 0 && format === 'overlay-userxattr-1') {
			lines.push(
				`${shellQuote(tools.xargs)} -0 -r ${shellQuote(tools.setfattr)} -n ${opaqueXattr} -v y < ${list('opaque', plan.opaque)}`,
			);
		}

		for (const {path: relative, name} of plan.staleXattrs) {
			lines.push(`${shellQuote(tools.setfattr)} -x ${shellQuote(name)} ${shellQuote(`./${relative}`)}`);
		}
	}

	return `${lines.join('\n')}\n`;
}

/** Build the flattened tree of `layers` (bottom first) at `tree`, using `workDirectory` for lists and scripts. */
async function buildSquashedTree(
	store: Store,
	layers: string[],
	{tree, workDirectory, what}: {tree: string; workDirectory: string; what: string},
): Promise<void> {
	const tools = findTools();
	const trees = layers.map((id) => layerTreePath(store, id));
	const listsDirectory = path.join(workDirectory, 'lists');
	mkdirSync(listsDirectory, {mode: 0o700});
	const listingPath = path.join(workDirectory, 'list.sh');
	const listing = listingScript(tools, {layersDirectory: store.layersDir, layers, listsDirectory});
	writeFileSync(listingPath, Buffer.from(listing, 'latin1'));
	await runScript(tools, listingPath, {
		failure: `cannot squash ${what}: listing its layers failed`,
		advice: `nothing was changed; the store may be damaged: see scratch inspect ${what}`,
	});

	const read = (name: string) => readFileSync(path.join(listsDirectory, name), 'latin1');
	const format = store.layerFormat;
	const entries = parseEntryListing(read('entries'), format);
	const xattrs = parseXattrDump(read('xattrs'));
	const model = createSquashTree();
	const plans = layers.map((id) =>
		planLayer(model, entries.get(id) ?? [], xattrs.get(id) ?? new Map(), format),
	);
	const applyPath = path.join(workDirectory, 'apply.sh');
	writeFileSync(
		applyPath,
		Buffer.from(applyScript(tools, {tree, trees, plans, listsDirectory, format}), 'latin1'),
	);
	await runScript(tools, applyPath, {
		failure: `cannot squash ${what}: copying its layers failed`,
		advice: `nothing was changed; if the disk is full, free space in ${store.root} and try again`,
	});
}

/**
`scratch squash NAME --as NEW`: flatten NAME's stack (its lowers and itself) into one new layer with the
same content over any source tree, and point NEW at it (NEW may be NAME, or replace another name). The
layers are copied, not moved: NAME and its layers are left as they are. Whiteouts are kept unless a
higher layer re-creates the path, since they may hide files of the source tree. The store is held
(use-lock.ts) throughout, so gc waits rather than sweep a layer being read. On failure nothing is
changed: no name is written and the half-built tree is removed.
*/
export async function squashLayer(options: SquashOptions): Promise<Squash> {
	checkName(options.as, '--as');
	const store = await openExistingStore(options.store);
	const hold = await holdStoreUse(store);
	try {
		const {layer: top} = resolveLayer(store, options.name, 'NAME');
		const layers = stackOf(top);
		for (const id of layers) {
			requireLayer(store, id, options.name);
		}

		const workDirectory = path.join(store.tmpDir, leaseName('squash', currentProcessIdentity(), randomId(6)));
		const tree = path.join(workDirectory, 'tree');
		let squash: Squash;
		try {
			mkdirSync(workDirectory, {mode: 0o700});
			mkdirSync(tree, {mode: 0o755});
			await buildSquashedTree(store, layers, {tree, workDirectory, what: options.name});
			const {layer, ref} = await commitAndName(store, {
				tree,
				name: options.as,
				record: {
					parent: null,
					lowers: [],
					created: new Date().toISOString(),
					origin: 'squash',
					squashed: top.id,
					...(top.source === undefined ? {} : {source: top.source}),
					...(top.command === undefined ? {} : {command: top.command}),
				},
			});
			squash = {layer, ref, squashedLayers: layers.length};
		} catch (error) {
			await discardWorkDirectory(store, workDirectory);
			throw error;
		}

		try {
			// Only the lists and scripts are left: the tree is the layer now.
			rmSync(workDirectory, {recursive: true, force: true});
		} catch {
			// Its lease dies with this process: scratch gc frees it.
		}

		return squash;
	} finally {
		hold.release();
	}
}
