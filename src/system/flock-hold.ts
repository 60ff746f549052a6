import {spawn} from 'node:child_process';
import {PermissionError} from '../errors.js';
import {findExecutable} from './executables.js';

/** A held lock: give it back with `release()`. */
export type FileLock = {release(): void};

/**
Hold an exclusive flock(2) on `file` (created if missing) until `release()`. Node has no flock, so a
small flock(1) process holds it for us: it prints a line once it has the lock and keeps it until its
stdin closes, which also happens when this process dies, so a dead holder never blocks anyone.
*/
export async function holdFileLock(file: string): Promise<FileLock> {
	return (await lockFile(file, true)) as FileLock;
}

/** Like holdFileLock, but undefined at once when someone else holds the lock. */
export async function tryFileLock(file: string): Promise<FileLock | undefined> {
	return lockFile(file, false);
}

// flock(1) exits with this status when --nonblock finds the lock taken.
const busyStatus = 75;

async function lockFile(file: string, wait: boolean): Promise<FileLock | undefined> {
	const child = spawn(
		findExecutable('flock'),
		[
			'--exclusive',
			...(wait ? [] : ['--nonblock', '--conflict-exit-code', String(busyStatus)]),
			file,
			findExecutable('sh'),
			'-c',
			'echo locked; read -r _ || :',
		],
		{stdio: ['pipe', 'pipe', 'pipe']},
	);
	const locked = await new Promise<boolean>((resolve, reject) => {
		let stderr = '';
		child.stderr.on('data', (chunk: Buffer) => {
			stderr += chunk.toString();
		});
		child.stdout.once('data', () => {
			resolve(true);
		});
		child.on('error', reject);
		child.on('close', (code) => {
			if (code === busyStatus && !wait) {
				resolve(false);
			} else if (/Read-only file system/.test(stderr)) {
				reject(
					new PermissionError(
						`cannot lock ${file}: read-only file system, and this command changes the store (a read-only store can still be listed, inspected, diffed and exported); use a store on a writable file system with --store DIR`,
					),
				);
			} else if (/Permission denied/.test(stderr)) {
				reject(
					new PermissionError(`cannot lock ${file}: permission denied; use a store you own with --store DIR`),
				);
			} else {
				reject(new Error(`flock ${file} exited with status ${code}: ${stderr.trim()}`));
			}
		});
	});
	child.removeAllListeners('close');
	child.stdout.destroy();
	child.stderr.destroy();
	if (!locked) {
		return undefined;
	}

	return {
		release() {
			child.stdin.end();
		},
	};
}
