import type {Dirent} from 'node:fs';
import {lstat, readdir} from 'node:fs/promises';
import path from 'node:path';
import {defaultLayerFormat, isOpaqueMarker, type LayerFormat, whiteoutTarget} from '../store/layer-format.js';

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

/**
Walk an upper dir in layer format `format` (the store's). A whiteout counts as a deletion, an opaque
directory's marker file (whiteout-files format) as nothing. Entries the walk cannot read (a mode-000 dir
made by the command) are skipped.
*/
export async function measureUpper(
	upperDirectory: string,
	format: LayerFormat = defaultLayerFormat,
): Promise<WriteStats> {
	const stats: WriteStats = {files: 0, directories: 0, deletions: 0, bytes: 0};
	const pending = [upperDirectory];
	while (pending.length > 0) {
		const directory = pending.pop() as string;
		let entries: Dirent[];
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
				continue;
			}

			// Whiteouts and markers are character devices or regular files, whose sizes are counted anyway.
			const info =
				entry.isFile() || entry.isCharacterDevice()
					? await lstat(entryPath).catch(() => undefined)
					: undefined;
			if (info && whiteoutTarget(format, entry.name, info) !== undefined) {
				stats.deletions++;
			} else if (!(info && isOpaqueMarker(format, entry.name, info))) {
				// Anything else, a device node the command made included.
				stats.files++;
				if (entry.isFile()) {
					stats.bytes += info?.size ?? 0;
				}
			}
		}
	}

	return stats;
}
