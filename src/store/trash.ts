import {spawn} from 'node:child_process';
import {readdirSync, renameSync} from 'node:fs';
import path from 'node:path';
import {findExecutable} from '../system/executables.js';
import type {Store} from './store.js';

/*
Deletion runs as a shell loop over trash entries. Each entry is locked with flock(1) while it is being
removed: a second deleter skips it (background) or waits for it (foreground), and a deleter that died
releases its lock with its last file descriptor, so an interrupted deletion is finished by the next one.
Rootless stores are deleted inside a user namespace, where the owner is root and so can remove the
mode-000 directories overlayfs (or the command) leaves in upper and work dirs.
*/
const backgroundScript = 'for entry; do "$0" -n -E 0 "$entry" rm -rf -- "$entry"; done';
const foregroundScript = 'for entry; do "$0" "$entry" rm -rf -- "$entry"; done';

/** Move a directory into the trash under a unique name; returns that name, or undefined if it was gone. */
export function moveToTrash(store: Store, directory: string, name: string): string | undefined {
	try {
		renameSync(directory, path.join(store.trashDir, name));
		return name;
	} catch (error) {
		if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
			return undefined;
		}

		throw error;
	}
}

/** Names currently in the trash. */
export function listTrash(store: Store): string[] {
	try {
		return readdirSync(store.trashDir);
	} catch {
		return [];
	}
}

function deleterCommand(entries: string[], script: string): [string, string[]] {
	const shArguments = ['-c', script, findExecutable('flock'), ...entries];
	if (process.geteuid?.() === 0) {
		return [findExecutable('sh'), shArguments];
	}

	return [
		findExecutable('unshare'),
		['--user', '--map-root-user', '--', findExecutable('sh'), ...shArguments],
	];
}

/**
Delete trash entries in a detached process and return at once: a run's exit never waits for the size
of what it wrote. Entries another deleter holds are skipped.
*/
export function deleteTrashInBackground(store: Store, entries: string[] = listTrash(store)): void {
	if (entries.length === 0) {
		return;
	}

	const [file, args] = deleterCommand(entries, backgroundScript);
	const child = spawn(file, args, {cwd: store.trashDir, detached: true, stdio: 'ignore'});
	child.on('error', () => {
		// Nothing lost: the next run or `scratch gc` deletes what is left.
	});
	child.unref();
}

/** Delete trash entries now, waiting for background deleters that hold some of them. */
export async function deleteTrashNow(store: Store, entries: string[] = listTrash(store)): Promise<void> {
	if (entries.length === 0) {
		return;
	}

	const [file, args] = deleterCommand(entries, foregroundScript);
	await new Promise<void>((resolve, reject) => {
		const child = spawn(file, args, {cwd: store.trashDir, stdio: ['ignore', 'ignore', 'pipe']});
		let stderr = '';
		child.stderr.on('data', (chunk: Buffer) => {
			stderr += chunk.toString();
		});
		child.on('error', reject);
		child.on('close', (code) => {
			if (code === 0) {
				resolve();
			} else {
				reject(new Error(`deleting ${store.trashDir} failed: ${stderr.trim() || `exit status ${code}`}`));
			}
		});
	});
}
