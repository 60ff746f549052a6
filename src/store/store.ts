import {
	accessSync,
	chmodSync,
	constants,
	mkdirSync,
	readdirSync,
	readFileSync,
	statfsSync,
	statSync,
} from 'node:fs';
import {access} from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {describeSystemError, NotFoundError, PermissionError, StoreError} from '../errors.js';
import {writeFileAtomic} from '../system/atomic-file.js';
import {defaultLayerFormat, type LayerFormat, layerFormats} from './layer-format.js';

/**
The record at the top of every store; a store with another record is refused, never mixed. The layer
format is one of `layerFormats` (see layer-format.ts): the kernel's upper format as mounted with
userxattr, index=off and no metacopy or redirect_dir (for root and rootless alike), except on overlayfs,
which cannot hold whiteout devices.
*/
export const storeFormat = {
	scratchStore: 1,
	layerFormat: defaultLayerFormat,
} as const;

/** The store's format record: a directory with it is a store. */
export const storeRecordName = 'scratch-store.json';
const formatFileName = storeRecordName;
const storeDirectoryNames = ['runs', 'kept', 'trash', 'tmp', 'layers', 'refs', 'locks', 'workspaces'];
const overlayfsMagic = 0x79_4c_76_30;

/** Where everything of one store lives. Only the store module knows this layout. */
export type Store = {
	/** Absolute path of the store directory. */
	readonly root: string;
	/** How its layers record whiteouts and opaque directories (layer-format.ts). */
	readonly layerFormat: LayerFormat;
	/** Runs in progress (and runs whose scratch died), each `runs/ID` with a lease. */
	readonly runsDir: string;
	/** Runs kept with `--keep`, each `kept/ID`. */
	readonly keptDir: string;
	/** Whatever is being deleted in the background. */
	readonly trashDir: string;
	/** Entries being prepared; their names carry their owner's lease. */
	readonly tmpDir: string;
	/** Layers: `layers/ID` (the upper-format tree) and `layers/ID.json` (its record); runs mount from here. */
	readonly layersDir: string;
	/** Snapshot names, one file each (`/` in a name is stored as `+`). */
	readonly refsDir: string;
	/** Holders of the store (use-lock.ts). */
	readonly locksDir: string;
};

/** The default store: `/var/lib/scratch` for root, else under `$XDG_DATA_HOME` (or `~/.local/share`). */
export function defaultStorePath(environment: NodeJS.ProcessEnv = process.env): string {
	if (environment['SCRATCH_STORE']) {
		return path.resolve(environment['SCRATCH_STORE']);
	}

	if (process.geteuid?.() === 0) {
		return '/var/lib/scratch';
	}

	const dataHome =
		environment['XDG_DATA_HOME'] || path.join(environment['HOME'] || os.homedir(), '.local/share');
	return path.resolve(dataHome, 'scratch');
}

/** The paths of a store at `root` (nothing is created or read). */
export function storeLayout(root: string, layerFormat: LayerFormat = defaultLayerFormat): Store {
	return {
		root,
		layerFormat,
		runsDir: path.join(root, 'runs'),
		keptDir: path.join(root, 'kept'),
		trashDir: path.join(root, 'trash'),
		tmpDir: path.join(root, 'tmp'),
		layersDir: path.join(root, 'layers'),
		refsDir: path.join(root, 'refs'),
		locksDir: path.join(root, 'locks'),
	};
}

function storeDirectories(store: Store): string[] {
	return [
		store.runsDir,
		store.keptDir,
		store.trashDir,
		store.tmpDir,
		store.layersDir,
		store.refsDir,
		store.locksDir,
	];
}

/** The nearest existing ancestor of a path (the path itself when it exists). */
export function nearestExistingDirectory(target: string): string {
	let current = path.resolve(target);
	for (;;) {
		try {
			statfsSync(current);
			return current;
		} catch {
			const parent = path.dirname(current);
			if (parent === current) {
				return current;
			}

			current = parent;
		}
	}
}

/** Whether a directory sits on overlayfs (an upper dir there cannot be mounted: nested overlay). */
export function isOnOverlayfs(directory: string): boolean {
	return statfsSync(directory).type === overlayfsMagic;
}

/** The layer format a new store at `root` (an existing directory) gets: whiteout files on overlayfs. */
export function layerFormatFor(root: string): LayerFormat {
	return isOnOverlayfs(root) ? 'whiteout-files-1' : defaultLayerFormat;
}

/**
Open a store, creating it when the directory is missing or empty. Synchronous on purpose: it is a
handful of syscalls on the start-up path of every run.
*/
export async function openStore(
	storePath?: string,
	{readOnly = false}: {readOnly?: boolean} = {},
): Promise<Store> {
	const root = path.resolve(storePath ?? defaultStorePath());
	let recordText: string | undefined;
	try {
		recordText = readFileSync(path.join(root, formatFileName), 'utf8');
	} catch (error) {
		const {code} = error as NodeJS.ErrnoException;
		if (code === 'EACCES') {
			throw new PermissionError(
				`cannot open store ${root}: permission denied; use a store you own with --store DIR or SCRATCH_STORE`,
			);
		}

		if (code !== 'ENOENT' && code !== 'ENOTDIR') {
			throw new StoreError(
				`cannot open store ${root}: ${describeSystemError(error)}; pass a directory you can use with --store DIR`,
				{cause: error},
			);
		}
	}

	if (recordText === undefined) {
		return initializeStore(root);
	}

	const store = storeLayout(root, checkFormatRecord(root, recordText));
	if (!readOnly) {
		checkStoreOwner(root);
	}

	return store;
}

/**
Only its owner changes a store: what anyone else writes there (root's names, layers and runs in a user's
store) would belong to them, and break the store for its owner. Reading is open to whoever can.
*/
function checkStoreOwner(root: string): void {
	const euid = process.geteuid?.();
	let owner: number;
	try {
		owner = statSync(root).uid;
	} catch {
		return;
	}

	if (euid !== undefined && owner !== euid) {
		throw new PermissionError(
			`store ${root} belongs to uid ${owner}, and what uid ${euid} wrote there would break it for its owner; run scratch as uid ${owner}, or use your own store with --store DIR`,
		);
	}
}

/** The store's layer format, from its record; refuses a record of another scratch or a damaged one. */
function checkFormatRecord(root: string, recordText: string): LayerFormat {
	const damaged = (cause?: unknown) =>
		new StoreError(
			`store ${root} has a damaged ${formatFileName}; move the directory aside and let scratch create a new store`,
			{cause},
		);
	let record: {scratchStore?: unknown; layerFormat?: unknown};
	try {
		record = JSON.parse(recordText) as typeof record;
	} catch (error) {
		throw damaged(error);
	}

	if (typeof record !== 'object' || record === null) {
		throw damaged();
	}

	if (
		record.scratchStore !== storeFormat.scratchStore ||
		!layerFormats.includes(record.layerFormat as LayerFormat)
	) {
		throw new StoreError(
			`store ${root} has format ${String(record.scratchStore)}/${String(record.layerFormat)}, this scratch uses ${layerFormats.map((format) => `${storeFormat.scratchStore}/${format}`).join(' or ')}; use another --store`,
		);
	}

	return record.layerFormat as LayerFormat;
}

async function initializeStore(root: string): Promise<Store> {
	// A missing store on a read-only file system would fail below with a misleading ENOENT.
	try {
		accessSync(nearestExistingDirectory(root), constants.W_OK);
	} catch (error) {
		const {code} = error as NodeJS.ErrnoException;
		if (code === 'EROFS') {
			throw new PermissionError(
				`cannot create store ${root}: read-only file system; use a writable place with --store DIR`,
			);
		}
	}

	try {
		mkdirSync(root, {recursive: true, mode: 0o700});
	} catch (error) {
		const {code} = error as NodeJS.ErrnoException;
		if (code === 'EEXIST' || code === 'ENOTDIR') {
			throw new StoreError(`store ${root} is not a directory; pass a directory with --store DIR`);
		}

		if (code === 'EACCES' || code === 'EROFS') {
			throw new PermissionError(
				`cannot create store ${root}: ${describeSystemError(error)}; use a writable place with --store DIR`,
			);
		}

		throw new StoreError(`cannot create store ${root}: ${describeSystemError(error)}`, {cause: error});
	}

	const existing = readdirSync(root).filter((name) => !name.startsWith(`.${formatFileName}.`));
	// Another scratch may have finished creating the same store since we looked for its record.
	if (existing.includes(formatFileName)) {
		return storeLayout(root, checkFormatRecord(root, readFileSync(path.join(root, formatFileName), 'utf8')));
	}

	if (existing.some((name) => !storeDirectoryNames.includes(name))) {
		throw new StoreError(
			`${root} is not a scratch store: it holds other files and no ${formatFileName}; pass an empty or new directory with --store DIR`,
		);
	}

	const store = storeLayout(root, layerFormatFor(root));
	// A store is its owner's alone: others may not even list it (they could rename its dirs in a 0777 one).
	const {uid, mode} = statSync(root);
	const euid = process.geteuid?.() ?? uid;
	if (uid !== euid) {
		throw new PermissionError(
			`cannot make a store in ${root}: the directory belongs to uid ${uid}, who could change what the store holds; use a directory you own with --store DIR`,
		);
	}

	try {
		if ((mode & 0o077) !== 0) {
			chmodSync(root, 0o700);
		}

		await access(root, constants.W_OK | constants.X_OK);
		for (const directory of storeDirectories(store)) {
			mkdirSync(directory, {recursive: true, mode: 0o700});
		}

		// The record goes last: a store with a record is complete.
		await writeFileAtomic(
			path.join(root, formatFileName),
			`${JSON.stringify({...storeFormat, layerFormat: store.layerFormat}, undefined, '\t')}\n`,
			{
				mode: 0o600,
			},
		);
	} catch (error) {
		throw new PermissionError(
			`cannot initialise store ${root}: ${describeSystemError(error)}; use a store you own with --store DIR`,
			{cause: error},
		);
	}

	return store;
}

/** Open a store that must exist already (every command but `run`, which creates it): never creates one. */
export async function openExistingStore(
	storePath: string = defaultStorePath(),
	options: {readOnly?: boolean} = {},
): Promise<Store> {
	const root = path.resolve(storePath);
	assertStoreExists(root);
	return openStore(root, options);
}

/** Fail with a clear message unless the store exists already (for commands that only read it). */
export function assertStoreExists(storePath: string): void {
	try {
		readFileSync(path.join(storePath, formatFileName));
	} catch (error) {
		if ((error as NodeJS.ErrnoException).code === 'EACCES') {
			throw new PermissionError(
				`cannot open store ${storePath}: permission denied; use a store you own with --store DIR or SCRATCH_STORE`,
			);
		}

		throw new NotFoundError(`no scratch store at ${storePath}; pass the right one with --store DIR`);
	}
}
