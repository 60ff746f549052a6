import {existsSync, lstatSync, readdirSync, readFileSync} from 'node:fs';
import path from 'node:path';
import type {ExecutionContext} from 'ava';
import {isLayerId, type LayerRecord} from '../../src/store/layers.js';
import {isLeaseNameAlive} from '../../src/store/lease-names.js';
import {nameFromRefFile} from '../../src/store/names.js';
import type {RunRecord} from '../../src/store/runs.js';
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

/**
Everything wrong with a store at rest, one line each; empty when it is consistent. Call it after `gc`,
once no scratch runs in the store: names point at complete layers, layers stack only on complete
layers, nothing is half-made or half-written, no dead run, preparation, lock or interrupted promotion is
left, every kept run has its record and its upper, and every workspace is ready on complete layers.
*/
export function checkStoreConsistency(storeRoot: string): string[] {
	const problems: string[] = [];
	if (!existsSync(path.join(storeRoot, 'scratch-store.json'))) {
		return [`${storeRoot} has no scratch-store.json`];
	}

	const layers = checkLayers(path.join(storeRoot, 'layers'), problems);
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
*/
export async function assertStoreAtRest(t: ExecutionContext, sandbox: Sandbox): Promise<void> {
	t.deepEqual(checkStoreConsistency(sandbox.store), []);
	t.deepEqual(entriesOf(path.join(sandbox.store, 'runs')), []);
	t.deepEqual(hostMountsUnder(sandbox.root), []);
	t.true(
		await eventually(() => processesWith(sandbox.store).length === 0),
		'no process of the store is left',
	);
	t.true(
		await eventually(() => storeLeftovers(sandbox.store).length === 0, 20_000),
		storeLeftovers(sandbox.store).join(),
	);
}
