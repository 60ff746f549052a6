import {spawn} from 'node:child_process';
import path from 'node:path';
import type {ExecutionContext} from 'ava';
import type {NamespaceSetup} from './scratch.js';

/**
A private mount namespace the test holds for its whole length: a process started with
`unshare --mount` runs SCRIPT (as root) to mount what the test needs (a small tmpfs under the store, a
read-only bind), then sleeps; it dies with the test's process, whatever kills that. Scratch processes enter it (`setup`), so its mounts last from one of them
to the next; the test reads what they see through `/proc/PID/root`. The process is stopped, by its
pid, when the test ends, and the namespace and its mounts die with it: nothing reaches the host.
*/
export type HeldNamespace = {
	pid: number;
	/** Pass as `setup` to scratch(). */
	setup: NamespaceSetup;
	/** A path as the test reads it inside the namespace. */
	inside(target: string): string;
	/** Run a shell script as root inside the namespace; resolves with its status and output. */
	sh(script: string): Promise<{status: number | null; output: string}>;
};

export async function holdMountNamespace(t: ExecutionContext, script: string): Promise<HeldNamespace> {
	// setpriv makes it die with the test's process even when that is killed (a timed-out worker).
	const child = spawn(
		'setpriv',
		[
			'--pdeathsig',
			'KILL',
			'unshare',
			'--mount',
			'--propagation',
			'private',
			'sh',
			'-c',
			`set -e\n${script}\necho ready\nexec sleep 86400`,
		],
		{stdio: ['ignore', 'pipe', 'pipe']},
	);
	const pid = child.pid as number;
	t.teardown(() => {
		child.kill('SIGKILL');
	});
	await new Promise<void>((resolve, reject) => {
		let output = '';
		child.stdout.on('data', (chunk: Buffer) => {
			output += chunk.toString();
			if (output.includes('ready\n')) {
				resolve();
			}
		});
		child.stderr.on('data', (chunk: Buffer) => {
			output += chunk.toString();
		});
		child.once('exit', () => reject(new Error(`the namespace holder ended: ${output}`)));
	});
	return {
		pid,
		setup: {enter: pid},
		inside: (target) => path.join(`/proc/${pid}/root`, target),
		sh: async (command) =>
			new Promise((resolve) => {
				const runner = spawn('nsenter', [`--target=${pid}`, '--mount', '--', 'sh', '-c', command], {
					stdio: ['ignore', 'pipe', 'pipe'],
				});
				let output = '';
				runner.stdout.on('data', (chunk: Buffer) => {
					output += chunk.toString();
				});
				runner.stderr.on('data', (chunk: Buffer) => {
					output += chunk.toString();
				});
				runner.on('close', (status) => resolve({status, output}));
			}),
	};
}
