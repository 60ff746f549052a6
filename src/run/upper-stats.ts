import {lstat, readdir} from 'node:fs/promises';
import path from 'node:path';

/** What a run wrote, read from its upper dir. */
export type WriteStats = {
	/** Regular files, symlinks and other non-directories created or modified. */
	files: number;
	directories: number;
	/** Paths deleted from the layers below (whiteouts). */
	deletions: number;
	/** Bytes of regular file content in the upper dir. */
	bytes: number;
};

/** Walk an upper dir. Entries the walk cannot read (a mode-000 dir made by the command) are skipped. */
export async function measureUpper(upperDirectory: string): Promise<WriteStats> {
	const stats: WriteStats = {files: 0, directories: 0, deletions: 0, bytes: 0};
	const pending = [upperDirectory];
	while (pending.length > 0) {
		const directory = pending.pop() as string;
		let entries: import('node:fs').Dirent[];
		try {
			entries = await readdir(directory, {withFileTypes: true});
		} catch {
			continue;
		}

		for (const entry of entries) {
			const entryPath = path.join(directory, entry.name);
			if (entry.isDirectory()) {
				stats.directories++;
				pending.push(entryPath);
			} else if (entry.isCharacterDevice()) {
				// A whiteout is a 0/0 character device; anything else is a device node the command made.
				const info = await lstat(entryPath).catch(() => undefined);
				if (info && info.rdev === 0) {
					stats.deletions++;
				} else {
					stats.files++;
				}
			} else {
				stats.files++;
				if (entry.isFile()) {
					const info = await lstat(entryPath).catch(() => undefined);
					stats.bytes += info?.size ?? 0;
				}
			}
		}
	}

	return stats;
}
