import path from 'node:path';
import {measureDiskUsage} from '../system/disk-usage.js';
import {findAbandoned} from './runs.js';
import {assertStoreExists, openStore} from './store.js';
import {deleteTrashNow, listTrash, moveToTrash} from './trash.js';

/** What `gc` freed (or, with `dryRun`, would free). */
export type GcReport = {
	dryRun: boolean;
	/** Directories of runs whose scratch died (killed, crashed) without cleaning up. */
	deadRuns: string[];
	/** Half-prepared entries whose owner died. */
	abandonedTemporary: string[];
	/** Entries that were already waiting in the trash. */
	trashEntries: string[];
	/** Files and directories freed. */
	entriesFreed: number;
	/** Bytes of disk freed (allocated blocks). */
	bytesFreed: number;
};

/**
Free everything no live run needs: dead runs' leftovers, abandoned preparations and the trash. Live runs
(their owner's pid and start time still match) and kept runs are never touched.
*/
export async function collectGarbage({
	store: storePath,
	dryRun = false,
}: {
	store: string;
	dryRun?: boolean;
}): Promise<GcReport> {
	assertStoreExists(storePath);
	const store = await openStore(storePath);
	const abandoned = findAbandoned(store);
	const trashEntries = listTrash(store);
	const report: GcReport = {
		dryRun,
		deadRuns: abandoned
			.filter(({trashName}) => trashName.startsWith('run-'))
			.map(({directory}) => path.basename(directory)),
		abandonedTemporary: abandoned
			.filter(({trashName}) => trashName.startsWith('tmp-'))
			.map(({directory}) => path.basename(directory)),
		trashEntries,
		entriesFreed: 0,
		bytesFreed: 0,
	};

	const doomed = [
		...abandoned.map(({directory}) => directory),
		...trashEntries.map((name) => path.join(store.trashDir, name)),
	];
	for (const directory of doomed) {
		const usage = await measureDiskUsage(directory);
		report.entriesFreed += usage.entries;
		report.bytesFreed += usage.bytes;
	}

	if (!dryRun) {
		const moved = abandoned.flatMap(
			({directory, trashName}) => moveToTrash(store, directory, trashName) ?? [],
		);
		await deleteTrashNow(store, [...new Set([...trashEntries, ...moved])]);
	}

	return report;
}
