import {readdirSync} from 'node:fs';

/** The names in a directory, or none when it cannot be read (missing in an older store, or gone). */
export function readDirectoryOrEmpty(directory: string): string[] {
	try {
		return readdirSync(directory);
	} catch {
		return [];
	}
}
