import {spawnSync} from 'node:child_process';
import {existsSync, lstatSync, readdirSync, readFileSync, type Stats} from 'node:fs';
import path from 'node:path';
import type {ExecutionContext} from 'ava';
import {
	isOpaqueMarker,
	type LayerFormat,
	layerFormats,
	opaqueMarker,
	whiteoutPrefix,
	whiteoutTarget,
} from '../../src/store/layer-format.js';
import {isLayerId, type LayerRecord} from '../../src/store/layers.js';
import {isLeaseNameAlive} from '../../src/store/lease-names.js';
import {nameFromRefFile} from '../../src/store/names.js';
import type {RunRecord} from '../../src/store/runs.js';
import {unquoteGetfattrPath} from '../../src/system/getfattr.js';
import {isProcessAlive, type ProcessIdentity} from '../../src/system/process-identity.js';
import {eventually, hostMountsUnder, processesWith, type Sandbox, storeLeftovers} from './scratch.js';

/*
What a store must look like once nothing runs in it and `gc` has been through: the invariants of
DESIGN.md ("Metadata changes are crash-safe", "A run's dirs carry a lease") checked from the files on
disk alone, independently of the code that writes them, so a test can call it after any fault.
*/

function entriesOf(directory: string): string[] {
	try {
		return readdirSync(directory).sort();
	} catch (error) {
		if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
			return [];
		}

		throw error;
	}
}

function isDirectory(entry: string): boolean {
	try {
		return lstatSync(entry).isDirectory();
	} catch {
		return false;
	}
}

function parseJson<T>(file: string): {value?: T; problem?: string} {
	let text: string;
	try {
		text = readFileSync(file, 'utf8');
	} catch (error) {
		return {problem: `cannot read ${file}: ${(error as Error).message}`};
	}

	try {
		return {value: JSON.parse(text) as T};
	} catch {
		return {problem: `${file} is not JSON: ${JSON.stringify(text.slice(0, 80))}`};
	}
}

const temporaryFile = /^\..*\.tmp$/;

/** The complete layers of a store (tree and record both present), checking every entry of `layers/`. */
function checkLayers(layersDirectory: string, problems: string[]): Map<string, LayerRecord> {
	const names = entriesOf(layersDirectory);
	const present = new Set(names);
	const complete = new Map<string, LayerRecord>();
	for (const name of names) {
		const entry = path.join(layersDirectory, name);
		if (temporaryFile.test(name)) {
			problems.push(`temporary file left in layers/: ${name}`);
		} else if (name.endsWith('.json') && isLayerId(name.slice(0, -5))) {
			const id = name.slice(0, -5);
			if (!isDirectory(path.join(layersDirectory, id))) {
				problems.push(`half-made layer ${id}: a record without a tree`);
				continue;
			}

			const {value, problem} = parseJson<LayerRecord>(entry);
			if (problem || !value) {
				problems.push(`layer ${id}: ${problem}`);
			} else if (value.id !== id) {
				problems.push(`layer ${id}: its record says id ${String(value.id)}`);
			} else if (!Array.isArray(value.lowers)) {
				problems.push(`layer ${id}: its record has no lowers list`);
			} else {
				complete.set(id, value);
			}
		} else if (isLayerId(name)) {
			if (!isDirectory(entry)) {
				problems.push(`layers/${name} is not a directory`);
			} else if (!present.has(`${name}.json`)) {
				problems.push(`half-made layer ${name}: a tree without a record`);
			}
		} else {
			problems.push(`unexpected entry in layers/: ${name}`);
		}
	}

	for (const [id, layer] of complete) {
		for (const lower of layer.lowers) {
			if (!complete.has(lower)) {
				problems.push(`layer ${id} stacks on layer ${lower}, which is not a complete layer`);
			}
		}

		if (layer.parent !== null && !complete.has(layer.parent)) {
			problems.push(`layer ${id} has parent ${String(layer.parent)}, which is not a complete layer`);
		}

		if (new Set(layer.lowers).size !== layer.lowers.length || layer.lowers.includes(id)) {
			problems.push(`layer ${id} lists a lower twice or itself: ${layer.lowers.join(' ')}`);
		}
	}

	return complete;
}

function checkRefs(refsDirectory: string, layers: Map<string, LayerRecord>, problems: string[]): void {
	for (const file of entriesOf(refsDirectory)) {
		if (temporaryFile.test(file)) {
			problems.push(`temporary file left in refs/: ${file}`);
			continue;
		}

		const name = nameFromRefFile(file);
		if (name === undefined) {
			problems.push(`refs/${file} is not a valid snapshot name`);
			continue;
		}

		const {value, problem} = parseJson<{layer?: unknown; updated?: unknown}>(path.join(refsDirectory, file));
		if (problem || !value) {
			problems.push(`name ${name}: ${problem}`);
		} else if (typeof value.layer !== 'string' || !layers.has(value.layer)) {
			problems.push(`name ${name} points at ${String(value.layer)}, which is not a complete layer`);
		}
	}
}

function checkRuns(store: string, problems: string[]): void {
	const runsDirectory = path.join(store, 'runs');
	for (const id of entriesOf(runsDirectory)) {
		const {value, problem} = parseJson<RunRecord>(path.join(runsDirectory, id, 'lease.json'));
		if (problem || !value) {
			problems.push(`run ${id} has no readable lease: ${problem}`);
		} else if (!isProcessAlive(value.owner)) {
			problems.push(`run ${id} is left over: its owner (pid ${value.owner.pid}) is dead`);
		}
	}

	for (const name of entriesOf(path.join(store, 'tmp'))) {
		problems.push(`tmp/${name} is left over`);
	}

	const keptDirectory = path.join(store, 'kept');
	for (const id of entriesOf(keptDirectory)) {
		const directory = path.join(keptDirectory, id);
		const {value, problem} = parseJson<RunRecord>(path.join(directory, 'run.json'));
		if (problem || !value) {
			problems.push(`kept run ${id}: ${problem}`);
			continue;
		}

		if (value.id !== id) {
			problems.push(`kept run ${id}: its record says id ${String(value.id)}`);
		}

		if (!isDirectory(path.join(directory, 'upper'))) {
			problems.push(`kept run ${id} has no upper dir`);
		}

		if (value.promotion) {
			problems.push(`kept run ${id} still records a promotion to ${value.promotion.name}`);
		}

		for (const name of entriesOf(directory)) {
			if (name !== 'run.json' && name !== 'upper') {
				problems.push(`kept run ${id} holds an unexpected entry: ${name}`);
			}
		}
	}
}

function checkLocks(store: string, problems: string[]): void {
	for (const name of entriesOf(path.join(store, 'locks'))) {
		// `collector` and `workspace.WS` are flock(2) files: they stay, and a dead holder's lock died with it.
		if (name.startsWith('workspace.')) {
			const text = readFileSync(path.join(store, 'locks', name), 'utf8');
			if (text !== '' && isProcessAlive(JSON.parse(text) as ProcessIdentity)) {
				problems.push(`locks/${name} is held by a live process`);
			}
		} else if (name !== 'collector' && !isLeaseNameAlive(name)) {
			problems.push(`locks/${name} is held by a dead process`);
		}
	}
}

type WorkspaceRecordOnDisk = {
	name?: unknown;
	state?: unknown;
	layers?: unknown;
	snapshotting?: unknown;
};

/** Workspaces at rest: a ready record, a stack of complete layers, and their upper, work and merged dirs. */
function checkWorkspaces(store: string, layers: Map<string, LayerRecord>, problems: string[]): void {
	const workspacesDirectory = path.join(store, 'workspaces');
	for (const name of entriesOf(workspacesDirectory)) {
		const directory = path.join(workspacesDirectory, name);
		const {value, problem} = parseJson<WorkspaceRecordOnDisk>(path.join(directory, 'workspace.json'));
		if (problem || !value) {
			problems.push(`workspace ${name}: ${problem}`);
			continue;
		}

		if (value.name !== name) {
			problems.push(`workspace ${name}: its record says name ${String(value.name)}`);
		}

		if (value.state !== 'ready') {
			problems.push(`workspace ${name} is not ready (state ${String(value.state)})`);
		}

		if (value.snapshotting) {
			problems.push(`workspace ${name} still records a snapshot in progress`);
		}

		const stack = Array.isArray(value.layers) ? (value.layers as string[]) : [];
		if (stack.length === 0) {
			problems.push(`workspace ${name} has no current snapshot`);
		}

		for (const id of stack) {
			if (!layers.has(id)) {
				problems.push(`workspace ${name} stacks on layer ${id}, which is not a complete layer`);
			}
		}

		const top = layers.get(stack.at(-1) ?? '');
		if (top && [...top.lowers, top.id].join(' ') !== stack.join(' ')) {
			problems.push(`workspace ${name}'s stack is not its current layer's stack`);
		}

		for (const entry of ['upper', 'work', 'merged']) {
			if (!isDirectory(path.join(directory, entry))) {
				problems.push(`workspace ${name} has no ${entry} dir`);
			}
		}

		for (const entry of entriesOf(directory)) {
			if (!['workspace.json', 'upper', 'work', 'merged'].includes(entry)) {
				problems.push(`workspace ${name} holds an unexpected entry: ${entry}`);
			}
		}
	}
}

/** The store's layer format, from its record; undefined (and a problem) when it is not one scratch reads. */
function checkFormatRecord(storeRoot: string, problems: string[]): LayerFormat | undefined {
	const {value, problem} = parseJson<{scratchStore?: unknown; layerFormat?: unknown}>(
		path.join(storeRoot, 'scratch-store.json'),
	);
	if (problem || !value) {
		problems.push(`scratch-store.json: ${problem}`);
		return undefined;
	}

	if (value.scratchStore !== 1 || !layerFormats.includes(value.layerFormat as LayerFormat)) {
		problems.push(
			`scratch-store.json records format ${String(value.scratchStore)}/${String(value.layerFormat)}, not one of ${layerFormats.map((format) => `1/${format}`).join(', ')}`,
		);
		return undefined;
	}

	return value.layerFormat as LayerFormat;
}

function lstatOrUndefined(entry: string): Stats | undefined {
	try {
		return lstatSync(entry);
	} catch {
		return undefined;
	}
}

/** The xattrs overlayfs and fuse-overlayfs keep for themselves, which no whiteout-files tree may carry. */
const overlayXattr = /^(user\.overlay\.|trusted\.overlay\.|user\.fuseoverlayfs\.)/;

/**
Problems of trees in the whiteout-files format (`what` names each tree by its path): no whiteout device
(overlayfs cannot hold one, and fuse-overlayfs would read it as a whiteout the format does not have),
every `.wh.` entry an empty regular file (a whiteout) or the opaque marker (a regular file), no whiteout
beside the name it deletes, and no overlay xattrs (opaqueness is the marker's). The kernel's format
reserves no names and its xattrs are the layers' own business, so its trees are not checked here.
*/
export function checkWhiteoutFilesTrees(trees: ReadonlyMap<string, string>, problems: string[]): void {
	const format: LayerFormat = 'whiteout-files-1';
	for (const [tree, what] of trees) {
		const pending = [''];
		while (pending.length > 0) {
			const relativeDirectory = pending.pop() as string;
			let names: string[];
			try {
				names = readdirSync(path.join(tree, relativeDirectory));
			} catch (error) {
				problems.push(`${what}: cannot read ${relativeDirectory || '.'}: ${(error as Error).message}`);
				continue;
			}

			const present = new Set(names);
			for (const name of names) {
				const relative = relativeDirectory === '' ? name : `${relativeDirectory}/${name}`;
				const info = lstatOrUndefined(path.join(tree, relative));
				if (!info) {
					continue;
				}

				if (info.isDirectory()) {
					pending.push(relative);
				}

				if (info.isCharacterDevice() && info.rdev === 0) {
					problems.push(`${what}: ${relative} is a 0/0 character device, a whiteout of the kernel's format`);
				} else if (name === opaqueMarker) {
					if (!isOpaqueMarker(format, name, info)) {
						problems.push(`${what}: ${relative} is named as the opaque marker but is not a regular file`);
					}
				} else if (name.startsWith(whiteoutPrefix)) {
					const deleted = whiteoutTarget(format, name, info);
					if (deleted === undefined) {
						problems.push(`${what}: ${relative} is named as a whiteout but is not an empty regular file`);
					} else if (present.has(deleted)) {
						problems.push(`${what}: ${relative} deletes ${deleted}, which is beside it`);
					}
				}
			}
		}
	}

	if (trees.size === 0) {
		return;
	}

	const dump = spawnSync(
		'getfattr',
		[
			'--recursive',
			'--physical',
			'--no-dereference',
			'--absolute-names',
			'--match',
			overlayXattr.source,
			'--',
			...trees.keys(),
		],
		{encoding: 'latin1', env: {...process.env, LC_ALL: 'C'}},
	);
	if (dump.error || (dump.status !== 0 && dump.stdout === '')) {
		problems.push(`cannot read the xattrs of the layer trees: ${dump.error?.message ?? dump.stderr}`);
		return;
	}

	let file = '';
	for (const line of dump.stdout.split('\n')) {
		if (line.startsWith('# file: ')) {
			file = unquoteGetfattrPath(line.slice('# file: '.length));
		} else if (line !== '') {
			const tree = [...trees.keys()].find((root) => file === root || file.startsWith(`${root}/`)) ?? '';
			const where = `${trees.get(tree) ?? file}: ${path.relative(tree, file) || '.'}`;
			problems.push(
				`${where} carries ${line.split('=')[0]}, an overlay xattr the whiteout-files format does not use`,
			);
		}
	}
}

/** Every tree in layer format in a store: complete layers, kept runs' and workspaces' uppers. */
function layerTreesOf(storeRoot: string, layers: ReadonlyMap<string, LayerRecord>): Map<string, string> {
	const trees = new Map<string, string>();
	for (const id of layers.keys()) {
		trees.set(path.join(storeRoot, 'layers', id), `layer ${id}`);
	}

	for (const id of entriesOf(path.join(storeRoot, 'kept'))) {
		const upper = path.join(storeRoot, 'kept', id, 'upper');
		if (isDirectory(upper)) {
			trees.set(upper, `kept run ${id}`);
		}
	}

	for (const name of entriesOf(path.join(storeRoot, 'workspaces'))) {
		const upper = path.join(storeRoot, 'workspaces', name, 'upper');
		if (isDirectory(upper)) {
			trees.set(upper, `workspace ${name}'s writes`);
		}
	}

	return trees;
}

/**
Everything wrong with a store at rest, one line each; empty when it is consistent. Call it after `gc`,
once no scratch runs in the store: names point at complete layers, layers stack only on complete
layers, nothing is half-made or half-written, no dead run, preparation, lock or interrupted promotion is
left, every kept run has its record and its upper, and every workspace is ready on complete layers.
The store's record names a layer format scratch reads, and in a whiteout-files store every layer tree
(layers, kept runs', workspaces' writes) is in that format (checkWhiteoutFilesTrees). For a store on
overlayfs, pass the path its files are read at (OverlayfsStore's `backing`).
*/
export function checkStoreConsistency(storeRoot: string): string[] {
	const problems: string[] = [];
	if (!existsSync(path.join(storeRoot, 'scratch-store.json'))) {
		return [`${storeRoot} has no scratch-store.json`];
	}

	const format = checkFormatRecord(storeRoot, problems);
	const layers = checkLayers(path.join(storeRoot, 'layers'), problems);
	if (format === 'whiteout-files-1') {
		checkWhiteoutFilesTrees(layerTreesOf(storeRoot, layers), problems);
	}

	checkRefs(path.join(storeRoot, 'refs'), layers, problems);
	checkRuns(storeRoot, problems);
	checkWorkspaces(storeRoot, layers, problems);
	checkLocks(storeRoot, problems);
	return problems;
}

/** The layer a name points at, read from the store's files (undefined when there is no such name). */
export function refTarget(storeRoot: string, name: string): string | undefined {
	try {
		const record = JSON.parse(
			readFileSync(path.join(storeRoot, 'refs', name.replaceAll('/', '+')), 'utf8'),
		) as {layer: string};
		return record.layer;
	} catch (error) {
		if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
			return undefined;
		}

		throw error;
	}
}

/** Complete layers of a store (ids with both a tree and a record), sorted. */
export function completeLayers(storeRoot: string): string[] {
	const layersDirectory = path.join(storeRoot, 'layers');
	const names = new Set(entriesOf(layersDirectory));
	return [...names].filter((name) => isLayerId(name) && names.has(`${name}.json`)).sort();
}

/**
A store at rest after its runs: consistent (checkStoreConsistency), no run dir, no mount on the host,
no process of the store, and (once the background deleters are done) nothing in runs, tmp or trash.
`files` is where the test reads the store's files when scratch sees them elsewhere (an OverlayfsStore's
`backing`); by default `sandbox.store`.
*/
export async function assertStoreAtRest(
	t: ExecutionContext,
	sandbox: Sandbox,
	{files = sandbox.store}: {files?: string} = {},
): Promise<void> {
	t.deepEqual(checkStoreConsistency(files), []);
	t.deepEqual(entriesOf(path.join(files, 'runs')), []);
	t.deepEqual(hostMountsUnder(sandbox.root), []);
	t.true(
		await eventually(() => processesWith(sandbox.store).length === 0),
		'no process of the store is left',
	);
	t.true(await eventually(() => storeLeftovers(files).length === 0, 20_000), storeLeftovers(files).join());
}
