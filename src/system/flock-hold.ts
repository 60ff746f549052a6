import {spawn} from 'node:child_process';
import {findExecutable} from './executables.js';

/**
Hold an exclusive flock(2) on `file` (created if missing) until `release()`. Node has no flock, so a
small flock(1) process holds it for us: it prints a line once it has the lock and keeps it until its
stdin closes, which also happens when this process dies, so a dead holder never blocks anyone.
*/
export async function holdFileLock(file: string): Promise<{release(): void}> {
	const child = spawn(
		findExecutable('flock'),
		['--exclusive', file, findExecutable('sh'), '-c', 'echo locked; read -r _ || :'],
		{
			stdio: ['pipe', 'pipe', 'pipe'],
		},
	);
	await new Promise<void>((resolve, reject) => {
		let stderr = '';
		child.stderr.on('data', (chunk: Buffer) => {
			stderr += chunk.toString();
		});
		child.stdout.once('data', () => {
			resolve();
		});
		child.on('error', reject);
		child.on('close', (code) => {
			reject(new Error(`flock ${file} exited with status ${code}: ${stderr.trim()}`));
		});
	});
	child.removeAllListeners('close');
	child.stdout.destroy();
	child.stderr.destroy();
	return {
		release() {
			child.stdin.end();
		},
	};
}
