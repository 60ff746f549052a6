import {open, rename, rm} from 'node:fs/promises';
import path from 'node:path';
import {randomId} from './random-id.js';

/**
Write a file so that readers see either the old content or the new, never a torn one: write a
temporary sibling, optionally fsync it and its directory, then rename it into place.
*/
export async function writeFileAtomic(
	filePath: string,
	content: string,
	{durable = true, mode = 0o644}: {durable?: boolean; mode?: number} = {},
): Promise<void> {
	const temporaryPath = path.join(
		path.dirname(filePath),
		`.${path.basename(filePath)}.${process.pid}.${randomId(10)}.tmp`,
	);
	const handle = await open(temporaryPath, 'wx', mode);
	try {
		await handle.writeFile(content);
		if (durable) {
			await handle.sync();
		}
	} catch (error) {
		await handle.close();
		await rm(temporaryPath, {force: true});
		throw error;
	}

	await handle.close();
	try {
		await rename(temporaryPath, filePath);
	} catch (error) {
		await rm(temporaryPath, {force: true});
		throw error;
	}

	if (durable) {
		await syncDirectory(path.dirname(filePath));
	}
}

/** Make a rename or creation inside a directory durable. */
export async function syncDirectory(directory: string): Promise<void> {
	const handle = await open(directory, 'r');
	try {
		await handle.sync();
	} finally {
		await handle.close();
	}
}
