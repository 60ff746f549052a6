import {mkdirSync, readFileSync, renameSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import {syncDirectory, writeFileAtomic} from '../system/atomic-file.js';
import {crashPoint} from '../system/crash-point.js';
import {isProcessAlive, type ProcessIdentity} from '../system/process-identity.js';
import {randomId} from '../system/random-id.js';
import {readDirectoryOrEmpty} from '../system/read-directory.js';
import {syncFileSystem} from '../system/sync-file-system.js';
import {isLeaseNameAlive, leaseName} from './lease-names.js';
import type {Store} from './store.js';
import {moveToTrash} from './trash.js';

/** Run ids: 12 lowercase letters and digits, so they never look like a flag or need quoting. */
export function createRunId(): string {
	return randomId(12);
}

/** What the store records about a run; `lease.json` while it runs, `run.json` once kept. */
export type RunRecord = {
	id: string;
	state: 'running' | 'kept';
	/** The scratch process responsible for the run; while it lives, nobody else touches the run. */
	owner: ProcessIdentity;
	created: string;
	src: string;
	command: string[];
	inPlace: boolean;
	backend: string;
	/** Layers stacked over the source, bottom first: gc keeps them while the run lives or is kept. */
	layers: string[];
	/** The names given with --base. */
	bases: string[];
	finished?: string;
	exitCode?: number;
	/** The workspace whose upper the run writes to (`scratch ws run`). */
	workspace?: string;
	/** A promotion of this kept run in progress: the layer its upper becomes and the name to point at it. */
	promotion?: {layer: string; name: string};
};

/** Paths inside one run's directory, relative to it: the namespace mounts from inside the run dir. */
export const runEntries = {
	upper: 'upper',
	work: 'work',
	merged: 'merged',
	lease: 'lease.json',
	record: 'run.json',
};

/**
Create a run's directory with its lease, upper, work and mount point. It is built under `tmp/` with
the owner's identity in its name and renamed into `runs/` complete, so `gc` never sees a run without a
lease and never mistakes a run being prepared for a dead one.
*/
export function createRunDirectory(store: Store, record: RunRecord): string {
	const preparing = path.join(store.tmpDir, leaseName(record.id, record.owner));
	mkdirSync(preparing, {mode: 0o700});
	for (const entry of [runEntries.upper, runEntries.work, runEntries.merged]) {
		mkdirSync(path.join(preparing, entry), {mode: 0o755});
	}

	// Not fsynced: a lease only matters while this boot lasts.
	writeFileSync(path.join(preparing, runEntries.lease), JSON.stringify(record));
	const runDirectory = path.join(store.runsDir, record.id);
	renameSync(preparing, runDirectory);
	return runDirectory;
}

/** A run's lease (`runEntries.lease`) or a kept run's record (`runEntries.record`); undefined if unreadable. */
export function readRunRecord(runDirectory: string, entry: string): RunRecord | undefined {
	try {
		return JSON.parse(readFileSync(path.join(runDirectory, entry), 'utf8')) as RunRecord;
	} catch {
		return undefined;
	}
}

/**
Runs whose scratch died while keeping them, after their durable record was written but before they
moved to `kept/`: they are kept runs (the record is written only once the upper is synced), so they are
finished rather than thrown away. Returns their ids; with `dryRun` nothing is moved.
*/
export function finishInterruptedKeeps(store: Store, {dryRun = false}: {dryRun?: boolean} = {}): string[] {
	const finished: string[] = [];
	for (const id of readDirectoryOrEmpty(store.runsDir)) {
		const directory = path.join(store.runsDir, id);
		const lease = readRunRecord(directory, runEntries.lease);
		const record = readRunRecord(directory, runEntries.record);
		if (record?.state !== 'kept' || record.id !== id || (lease && isProcessAlive(lease.owner))) {
			continue;
		}

		if (!dryRun) {
			const keptDirectory = path.join(store.keptDir, id);
			try {
				renameSync(directory, keptDirectory);
			} catch (error) {
				// Another run or gc finished it first.
				if (['ENOENT', 'ENOTEMPTY', 'EEXIST'].includes((error as NodeJS.ErrnoException).code ?? '')) {
					continue;
				}

				throw error;
			}

			trashAllButKept(store, keptDirectory, id);
		}

		finished.push(id);
	}

	// Kept runs whose scratch died after the move but before the rest of the run's dir went.
	if (!dryRun) {
		for (const id of readDirectoryOrEmpty(store.keptDir)) {
			trashAllButKept(store, path.join(store.keptDir, id), id);
		}
	}

	return finished;
}

/**
A kept run is its upper and its record: what else its run dir held (work, mount point, lease, the fuse
backend's logs) goes. Only those by name: a promotion of the kept run may be writing its record's
temporary file beside them.
*/
const runLeftovers = [
	runEntries.work,
	runEntries.merged,
	runEntries.lease,
	'fuse.log',
	'fuse.log.xattrs',
	'fuse.log.files',
];

function trashAllButKept(store: Store, keptDirectory: string, id: string): void {
	for (const entry of runLeftovers) {
		moveToTrash(store, path.join(keptDirectory, entry), `kept-${id}-${entry}`);
	}
}

/** What dead runs and abandoned preparations left behind, without touching it. */
export function findAbandoned(store: Store): Array<{directory: string; trashName: string}> {
	const abandoned: Array<{directory: string; trashName: string}> = [];
	for (const id of readDirectoryOrEmpty(store.runsDir)) {
		const directory = path.join(store.runsDir, id);
		const lease = readRunRecord(directory, runEntries.lease);
		// A run dir always arrives with its lease, so one without a readable lease is debris; one with a
		// kept record is a keep to finish (finishInterruptedKeeps).
		if (
			(!lease || !isProcessAlive(lease.owner)) &&
			readRunRecord(directory, runEntries.record)?.state !== 'kept'
		) {
			abandoned.push({directory, trashName: `run-${id}`});
		}
	}

	for (const name of readDirectoryOrEmpty(store.tmpDir)) {
		if (!isLeaseNameAlive(name)) {
			abandoned.push({directory: path.join(store.tmpDir, name), trashName: `tmp-${name}`});
		}
	}

	return abandoned;
}

/**
Move what dead runs left into the trash. Mounts need no cleanup: they lived in the dead run's mount
namespace, which the kernel tore down with its last process. Returns the trash names used.
*/
export function reclaimAbandoned(store: Store): string[] {
	finishInterruptedKeeps(store);
	const moved: string[] = [];
	for (const {directory, trashName} of findAbandoned(store)) {
		const name = moveToTrash(store, directory, trashName);
		if (name) {
			moved.push(name);
		}
	}

	return moved;
}

/**
Keep a finished run for later: record it durably, move it to `kept/`, and drop its work dir. The
upper's data is flushed to disk first so a crash cannot lose what was kept.
*/
export async function keepRun(store: Store, runDirectory: string, record: RunRecord): Promise<string> {
	await syncFileSystem(runDirectory);
	crashPoint('keep-synced');
	await writeFileAtomic(
		path.join(runDirectory, runEntries.record),
		`${JSON.stringify(record, undefined, '\t')}\n`,
	);
	crashPoint('keep-recorded');
	const keptDirectory = path.join(store.keptDir, record.id);
	renameSync(runDirectory, keptDirectory);
	await syncDirectory(store.keptDir);
	crashPoint('keep-moved');
	trashAllButKept(store, keptDirectory, record.id);
	return keptDirectory;
}
