import {spawn} from 'node:child_process';
import {accessSync, constants, lstatSync, readdirSync, readFileSync, statfsSync} from 'node:fs';
import path from 'node:path';
import {describeSystemError} from '../errors.js';
import {
	type BackendName,
	backendProblem,
	filesystemOf,
	type HostFacts,
	type StoreFacts,
} from '../run/backend.js';
import {type LayerFormat, layerFormats} from '../store/layer-format.js';
import {layerFormatFor, nearestExistingDirectory, storeLayout} from '../store/store.js';
import {formatBytes} from '../system/format-bytes.js';
import {formatMode} from './host.js';
import {formatCount} from './limits.js';
import type {DoctorCheck, StoreReport} from './report.js';

const formatFileName = 'scratch-store.json';
const storeEntryNames = new Set(['runs', 'kept', 'trash', 'tmp', 'layers', 'refs', 'locks', 'workspaces']);

/** Below these, the free-space check warns: a run's writes and a layer's copy-ups need room. */
export const lowFreeBytes = 256 * 1024 * 1024;
export const lowFreeInodes = 10_000;

/** What doctor learns about a store by looking only (it creates and changes nothing). */
export type StoreInspection = {
	report: StoreReport;
	/** The store's directory, or its nearest existing ancestor when it does not exist. */
	existing: string;
	/** For backendProblem: the store's file system and layer format. */
	facts: StoreFacts;
};

function accessProblem(directory: string): string | undefined {
	try {
		accessSync(directory, constants.W_OK | constants.X_OK);
		return undefined;
	} catch (error) {
		return describeSystemError(error);
	}
}

function readRecordedFormat(root: string): {format?: LayerFormat; problem?: string; exists: boolean} {
	let text: string;
	try {
		text = readFileSync(path.join(root, formatFileName), 'utf8');
	} catch (error) {
		const {code} = error as NodeJS.ErrnoException;
		return code === 'ENOENT' || code === 'ENOTDIR'
			? {exists: false}
			: {exists: true, problem: `its ${formatFileName} cannot be read (${describeSystemError(error)})`};
	}

	try {
		const record = JSON.parse(text) as {scratchStore?: unknown; layerFormat?: unknown};
		if (record.scratchStore === 1 && layerFormats.includes(record.layerFormat as LayerFormat)) {
			return {exists: true, format: record.layerFormat as LayerFormat};
		}

		return {
			exists: true,
			problem: `its ${formatFileName} records format ${String(record.scratchStore)}/${String(record.layerFormat)}, which this scratch does not use; use another --store`,
		};
	} catch {
		return {
			exists: true,
			problem: `its ${formatFileName} is damaged; move the directory aside and let scratch make a new store`,
		};
	}
}

/** Look at a store (existing or not) without changing anything. */
export function inspectStore(storePath: string, euid: number): StoreInspection {
	const root = path.resolve(storePath);
	let rootStats: ReturnType<typeof lstatSync> | undefined;
	try {
		rootStats = lstatSync(root);
	} catch {}

	const isDirectory = rootStats?.isDirectory() ?? false;
	const existing = rootStats ? root : nearestExistingDirectory(root);
	const filesystem = filesystemOf(existing);
	const recorded = isDirectory ? readRecordedFormat(root) : {exists: false};
	const layerFormat = recorded.format ?? layerFormatFor(existing);
	const space = statfsSync(existing, {bigint: true});

	let problem: string | undefined;
	let writable = false;
	if (rootStats && !isDirectory) {
		problem = `${root} is not a directory; pass a directory with --store DIR`;
	} else if (recorded.problem) {
		problem = `the store ${root}: ${recorded.problem}`;
	} else if (recorded.exists) {
		const denied = accessProblem(root) ?? accessProblem(storeLayout(root).tmpDir);
		writable = denied === undefined;
		if (denied) {
			problem = `the store ${root} is not writable by uid ${euid} (${denied}); use a store you own on a writable file system with --store DIR`;
		}
	} else if (isDirectory) {
		let others: string[] = [];
		try {
			others = readdirSync(root).filter((name) => !storeEntryNames.has(name));
		} catch (error) {
			problem = `${root} cannot be read (${describeSystemError(error)}); use a store you own with --store DIR`;
		}

		const denied = accessProblem(root);
		writable = denied === undefined;
		if (others.length > 0) {
			problem = `${root} is not a scratch store: it holds other files and no ${formatFileName}; pass an empty or new directory with --store DIR`;
		} else if (denied) {
			problem ??= `the store ${root} cannot be made: ${root} is not writable by uid ${euid} (${denied}); use a writable place with --store DIR`;
		}
	} else {
		const denied = lstatSync(existing).isDirectory() ? accessProblem(existing) : 'not a directory';
		writable = denied === undefined;
		if (denied) {
			problem = `the store ${root} cannot be made: ${existing} is not writable by uid ${euid} (${denied}); use a writable place with --store DIR`;
		}
	}

	const report: StoreReport = {
		path: root,
		exists: recorded.exists,
		filesystem,
		onOverlayfs: filesystem === 'overlayfs',
		layerFormat,
		layerFormatSource: recorded.format ? 'recorded' : 'new',
		dType: null,
		userXattr: null,
		freeBytes: Number(space.bavail * space.bsize),
		freeInodes: space.files === 0n ? null : Number(space.ffree),
		writable,
		...(rootStats && isDirectory
			? {owner: {uid: Number(rootStats.uid), mode: formatMode(Number(rootStats.mode))}}
			: {}),
		...(problem ? {problem} : {}),
	};
	return {report, existing, facts: {root, filesystem, layerFormat}};
}

// Host facts under which every backend works, so that backendProblem can only blame the store.
const idealHost: HostFacts = {
	euid: 0,
	kernelRelease: '99.0.0',
	filesystems: 'nodev\toverlay\nnodev\tfuse\n',
	maxUserNamespaces: 1,
	unprivilegedUsernsClone: undefined,
	apparmorRestrictsUserns: undefined,
	fuseOverlayfs: '/usr/bin/fuse-overlayfs',
	devFuse: 'ok',
};

/** What a store's file system or layer format alone rules out for a backend (whatever the host). */
export function storeOnlyProblem(backend: BackendName, facts: StoreFacts): string | undefined {
	return backendProblem(backend, idealHost, facts);
}

/*
d_type: overlayfs needs readdir to tell entries' types. Node's readdir hides a missing type (it falls
back to lstat), so this asks Node's fs binding for the raw types: 0 is DT_UNKNOWN. Where the binding
is not there (another runtime), the answer is null: not checked.
*/
type FsBinding = {readdir(directory: string, encoding: string, withTypes: boolean): unknown};

/** Whether readdir gives entries' types in a directory (which must hold entries); null when unknown. */
export function readdirGivesTypes(directory: string): boolean | null {
	let binding: FsBinding;
	try {
		binding = (process as unknown as {binding(name: string): FsBinding}).binding('fs');
	} catch {
		return null;
	}

	let listing: unknown;
	try {
		listing = binding.readdir(directory, 'utf8', true);
	} catch {
		return null;
	}

	if (!Array.isArray(listing) || !Array.isArray(listing[1]) || listing[1].length === 0) {
		return null;
	}

	const types = listing[1] as unknown[];
	if (!types.every((type) => typeof type === 'number')) {
		return null;
	}

	return types.some((type) => type !== 0);
}

/** Whether a file takes a `user.*` extended attribute (set one with setfattr, read it back with getfattr, remove it). */
export async function takesUserXattr(
	file: string,
	tools: {setfattr: string; getfattr: string},
): Promise<{ok: boolean; reason?: string}> {
	const name = 'user.scratch-doctor';
	const set = await runQuiet(tools.setfattr, ['-n', name, '-v', 'y', '--', file]);
	if (set.code !== 0) {
		return {ok: false, reason: set.output.trim().split('\n')[0] || `setfattr exit status ${set.code}`};
	}

	const read = await runQuiet(tools.getfattr, ['--absolute-names', '--only-values', '-n', name, '--', file]);
	await runQuiet(tools.setfattr, ['-x', name, '--', file]);
	return read.code === 0 && read.output === 'y'
		? {ok: true}
		: {ok: false, reason: `the attribute set could not be read back (${read.output.trim() || read.code})`};
}

/** Run a small program to its end; its stdout and stderr together. */
export async function runQuiet(file: string, args: string[]): Promise<{code: number; output: string}> {
	return new Promise((resolve) => {
		const child = spawn(file, args, {stdio: ['ignore', 'pipe', 'pipe'], env: {...process.env, LC_ALL: 'C'}});
		let output = '';
		child.stdout.on('data', (chunk: Buffer) => {
			output += chunk.toString();
		});
		child.stderr.on('data', (chunk: Buffer) => {
			output += chunk.toString();
		});
		child.on('error', (error) => {
			resolve({code: -1, output: error.message});
		});
		child.on('close', (code) => {
			resolve({code: code ?? -1, output});
		});
	});
}

const formatDescriptions: Record<LayerFormat, string> = {
	'overlay-userxattr-1': 'whiteouts are 0/0 character devices, opaque dirs carry user.overlay.opaque',
	'whiteout-files-1':
		'whiteouts are .wh. files, as on overlayfs where no 0/0 device can be made; only fuse-overlayfs reads it',
};

/**
Checks of the store (pure). `fileSystemProblem` is what its file system rules out for the kernel
backends, `formatProblem` what its recorded layer format does; `probeNote` why d_type or user xattrs
could not be checked.
*/
export function storeChecks(
	store: StoreReport,
	{
		euid,
		fileSystemProblem,
		formatProblem,
		unchecked,
	}: {
		euid: number;
		fileSystemProblem: string | undefined;
		formatProblem: string | undefined;
		unchecked: {dType?: string; userXattr?: string};
	},
): DoctorCheck[] {
	const checks: DoctorCheck[] = [];
	const add = (id: string, label: string, ok: boolean | null, detail: string) => {
		checks.push({id, group: 'store', label, ok, detail});
	};

	add(
		'store-filesystem',
		'file system',
		fileSystemProblem === undefined,
		fileSystemProblem
			? `${store.filesystem}: ${fileSystemProblem}; the kernel and userns backends cannot be used, auto takes fuse`
			: store.filesystem,
	);
	add(
		'store-d-type',
		'd_type',
		store.dType,
		store.dType === true
			? "readdir tells entries' types (d_type), as overlayfs needs"
			: store.dType === false
				? `readdir does not tell entries' types (no d_type; XFS made with ftype=0 is one such): overlayfs cannot keep an upper dir there; put the store on another file system with --store DIR`
				: `could not be checked: ${unchecked.dType ?? 'unknown'}`,
	);
	add(
		'store-user-xattr',
		'user xattrs',
		store.userXattr,
		store.userXattr === true
			? 'takes user.* extended attributes (the layer format marks opaque dirs with one)'
			: store.userXattr === false
				? `does not take user.* extended attributes (${unchecked.userXattr ?? 'refused'}): layers there cannot mark opaque dirs; put the store on another file system with --store DIR`
				: `could not be checked: ${unchecked.userXattr ?? 'unknown'}`,
	);

	const lowSpace = store.freeBytes < lowFreeBytes;
	const lowInodes = store.freeInodes !== null && store.freeInodes < lowFreeInodes;
	add(
		'store-space',
		'free space',
		!lowSpace && !lowInodes,
		`${formatBytes(store.freeBytes)} and ${store.freeInodes === null ? 'no fixed limit of inodes' : `${formatCount(store.freeInodes)} inodes`} free${lowSpace || lowInodes ? `; runs write their files there: free some ${lowSpace ? 'space' : 'inodes'} or use another --store` : ''}`,
	);
	add(
		'store-writable',
		'writable',
		store.writable && !store.problem,
		store.problem ??
			(store.exists
				? `uid ${euid} can write to it`
				: `does not exist yet; uid ${euid} can make it (scratch run does, doctor does not)`),
	);

	if (store.owner) {
		const mine = store.owner.uid === euid;
		const private0700 = store.owner.mode === '0700';
		add(
			'store-owner',
			'owner and mode',
			mine && private0700,
			`mode ${store.owner.mode}, owned by uid ${store.owner.uid}${mine ? ' (you)' : ''}${
				mine && private0700
					? ''
					: `; a store should be mode 0700 and yours: ${mine ? `chmod 0700 ${store.path}` : 'use a store of your own with --store DIR'}`
			}`,
		);
	} else {
		add(
			'store-owner',
			'owner and mode',
			null,
			`no directory yet; scratch run makes it mode 0700, owned by uid ${euid}`,
		);
	}

	add(
		'store-layer-format',
		'layer format',
		formatProblem === undefined,
		`${store.layerFormat} (${store.layerFormatSource === 'recorded' ? 'recorded in the store' : store.onOverlayfs ? 'what a new store gets on overlayfs' : 'what a new store gets here'}): ${formatDescriptions[store.layerFormat]}${formatProblem ? `; ${formatProblem}` : ''}`,
	);
	return checks;
}
