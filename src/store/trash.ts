import {spawn} from 'node:child_process';
import {renameSync} from 'node:fs';
import path from 'node:path';
import type {Writable} from 'node:stream';
import {findExecutable} from '../system/executables.js';
import {readDirectoryOrEmpty} from '../system/read-directory.js';
import {releaseLater} from '../system/release-later.js';
import type {Store} from './store.js';

/*
Deletion runs as a shell loop over trash entries. Each entry is locked with flock(1) while it is being
removed: a second deleter skips it (background) or waits for it (foreground), and a deleter that died
releases its lock with its last file descriptor, so an interrupted deletion is finished by the next one.
Rootless stores are deleted inside a user namespace, where the owner is root and so can remove the
mode-000 directories overlayfs (or the command) leaves in upper and work dirs.
A run forks its background deleter while the namespace is being set up (the fork then costs no time
on the run's critical path); the deleter waits for EOF on its stdin, which comes when the run releases
it (see releaseLater), and then deletes whatever in the trash no other deleter holds.
*/
const backgroundScript =
	'read -r _ || :; { read -r _ <&3 || :; } 2>/dev/null; exec 3<&-; for entry in *; do [ -e "$entry" ] || continue; "$0" -n -E 0 "$entry" rm -rf -- "$entry"; done';
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
	return readDirectoryOrEmpty(store.trashDir);
}

// Rootless stores are read and deleted inside a user namespace, as the owner turned root.
function asStoreOwner(command: string[]): string[] {
	return process.geteuid?.() === 0
		? command
		: [findExecutable('unshare'), '--user', '--map-root-user', '--', ...command];
}

function deleterCommand(
	entries: string[],
	script: string,
	{background}: {background: boolean},
): [string, string[]] {
	const asOwner = asStoreOwner([findExecutable('sh'), '-c', script, findExecutable('flock'), ...entries]);
	// Background deletion yields the CPU and the disk to whatever runs next (the CI's next step).
	const command = background
		? [findExecutable('nice'), '-n', '19', findExecutable('ionice'), '-c', '3', ...asOwner]
		: asOwner;
	return [command[0] as string, command.slice(1)];
}

/** A detached deleter waiting to be released. */
export type BackgroundDeleter = {
	/** Let it start: when this process exits, or shortly in a long-lived one. */
	release(): void;
};

/**
Fork a background deleter now; it deletes the trash once released and, when given, once `alsoAfter` (a
socket whose other end a run's namespace holds) reaches EOF: a discarded upper is then deleted after the
kernel has torn its overlay down, so that teardown (which holds the caller's stdout and stderr open) only
evicts inodes, and the cost of freeing 20,000 files is the deleter's, at idle priority, with no one
waiting for it.
*/
export function startBackgroundDeleter(
	store: Store,
	{alsoAfter}: {alsoAfter?: import('node:stream').Stream | undefined} = {},
): BackgroundDeleter {
	const [file, args] = deleterCommand([], backgroundScript, {background: true});
	const child = spawn(file, args, {
		cwd: store.trashDir,
		detached: true,
		stdio: ['pipe', 'ignore', 'ignore', alsoAfter ?? 'ignore'],
	});
	child.on('error', () => {
		// Nothing lost: the next run or `scratch gc` deletes what is left.
	});
	child.unref();
	let released = false;
	return {
		release() {
			if (!released && child.stdin) {
				released = true;
				releaseLater(child.stdin as Writable & {unref?: () => void});
			}
		},
	};
}

/** Delete trash entries now, waiting for background deleters that hold some of them. */
export async function deleteTrashNow(store: Store, entries: string[] = listTrash(store)): Promise<void> {
	if (entries.length === 0) {
		return;
	}

	const [file, args] = deleterCommand(entries, foregroundScript, {background: false});
	await runToEnd(file, args, store.trashDir, `deleting ${store.trashDir}`);
}

async function runToEnd(file: string, args: string[], cwd: string, what: string): Promise<string> {
	return new Promise<string>((resolve, reject) => {
		const child = spawn(file, args, {cwd, stdio: ['ignore', 'pipe', 'pipe']});
		let stdout = '';
		let stderr = '';
		child.stdout.on('data', (chunk: Buffer) => {
			stdout += chunk.toString();
		});
		child.stderr.on('data', (chunk: Buffer) => {
			stderr += chunk.toString();
		});
		child.on('error', reject);
		child.on('close', (code) => {
			if (code === 0) {
				resolve(stdout);
			} else {
				reject(new Error(`${what} failed: ${stderr.trim().split('\n')[0] || `exit status ${code}`}`));
			}
		});
	});
}

/**
Delete whole trees now, in one `rm` (trees outside the trash, which no background deleter knows), and
the named trash entries (locked one by one, see above).
*/
export async function deleteTreesNow(store: Store, trees: string[], trashEntries: string[]): Promise<void> {
	if (trees.length > 0) {
		const command = asStoreOwner([findExecutable('rm'), '-rf', '--', ...trees]);
		await runToEnd(command[0] as string, command.slice(1), store.root, `deleting ${trees.join(' ')}`);
	}

	await deleteTrashNow(store, trashEntries);
}

/** Entries and allocated bytes of some trees, like `du`: what deleting them frees. Missing ones count 0. */
export async function measureTrees(store: Store, trees: string[]): Promise<{entries: number; bytes: number}> {
	if (trees.length === 0) {
		return {entries: 0, bytes: 0};
	}

	// du walks in C; two passes (blocks, inodes) over the same trees cost less than one walk in Node.
	const script =
		'"$0" -s -c -B1 -- "$@" 2>/dev/null | tail -n 1; "$0" -s -c --inodes -- "$@" 2>/dev/null | tail -n 1; :';
	const command = asStoreOwner([findExecutable('sh'), '-c', script, findExecutable('du'), ...trees]);
	const output = await runToEnd(command[0] as string, command.slice(1), store.root, 'measuring the trash');
	const [bytes, entries] = output
		.trim()
		.split('\n')
		.map((line) => Number.parseInt(line, 10) || 0);
	return {entries: entries ?? 0, bytes: bytes ?? 0};
}

/**
Remove a work directory under `tmp/` (a squash's or an import's, named with its owner's lease) that
did not become a layer: through the trash, now if possible. Anything left is garbage gc frees once
the owner is gone.
*/
export async function discardWorkDirectory(store: Store, workDirectory: string): Promise<void> {
	try {
		const trashName = moveToTrash(store, workDirectory, `tmp-${path.basename(workDirectory)}`);
		if (trashName) {
			await deleteTrashNow(store, [trashName]);
		}
	} catch {
		// The entry's lease dies with this process: scratch gc frees it.
	}
}
