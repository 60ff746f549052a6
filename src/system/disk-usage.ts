import {lstat, readdir} from 'node:fs/promises';
import path from 'node:path';

/** Entries and allocated bytes of a tree, like `du`: what deleting it frees. Unreadable parts are skipped. */
export async function measureDiskUsage(root: string): Promise<{entries: number; bytes: number}> {
	const usage = {entries: 0, bytes: 0};
	const pending = [root];
	while (pending.length > 0) {
		const current = pending.pop() as string;
		const info = await lstat(current).catch(() => undefined);
		if (!info) {
			continue;
		}

		usage.entries++;
		usage.bytes += info.blocks * 512;
		if (info.isDirectory()) {
			const names = await readdir(current).catch(() => [] as string[]);
			for (const name of names) {
				pending.push(path.join(current, name));
			}
		}
	}

	return usage;
}
