import {spawn} from 'node:child_process';
import {findExecutable} from './executables.js';

/** syncfs(2) of the file system holding `directory` (Node has no binding; coreutils' sync does it). */
export async function syncFileSystem(directory: string): Promise<void> {
	await new Promise<void>((resolve, reject) => {
		const child = spawn(findExecutable('sync'), ['--file-system', directory], {stdio: 'ignore'});
		child.on('error', reject);
		child.on('close', (code) => {
			if (code === 0) {
				resolve();
			} else {
				reject(new Error(`sync --file-system ${directory} exited with status ${code}`));
			}
		});
	});
}
