import {spawn} from 'node:child_process';
import {closeSync, openSync, writeSync} from 'node:fs';
import os from 'node:os';
import type {Stream, Writable} from 'node:stream';
import {readChildPids} from '../system/process-identity.js';
import {releaseLater} from '../system/release-later.js';
import {
	buildNamespaceCommand,
	exitMarker,
	type NamespacePlan,
	type NamespaceTools,
	readyMarker,
} from './namespace-plan.js';

/** Where one of the command's standard streams goes: the caller's own, nowhere, or an open fd. */
export type StdioTarget = 'inherit' | 'ignore' | number;

/** How pid 1's teardown of the view went (see NamespaceExit). */
export type Teardown = 'clean' | 'died' | 'stuck' | 'unnormalized';

/** How the namespace ended, before scratch maps it to an exit status. */
export type NamespaceExit = {
	/** Whether the view was built and the command started. */
	started: boolean;
	code: number | null;
	signal: NodeJS.Signals | null;
	/** What the setup printed when it failed before the command started. */
	setupOutput: string;
	/**
	How pid 1's teardown went, when it reported: for a fuse view whose writes are kept, `died` when its
	daemon died before the command ended, `stuck` when it could not be unmounted, `unnormalized` when its
	upper could not be put in the store's layer format (in each case its writes must not be trusted).
	*/
	teardown?: Teardown;
};

/** A running namespace: wait for it, or pass a signal on to the command inside. */
export type NamespaceProcess = {
	/** Resolves when the view is mounted and the command is starting. */
	readonly ready: Promise<void>;
	/**
	Resolves when the command and everything it started are gone (pid 1's report), or when the
	namespace ended without one. The overlay may still be being torn down by the kernel.
	*/
	readonly commandExit: Promise<NamespaceExit>;
	/** Resolves when the namespace is gone completely, its mounts included. */
	readonly closed: Promise<NamespaceExit>;
	/** Let pid 1 exit now that the command is done, so the namespace closes. */
	release(): void;
	/** Stop holding on to the namespace: pid 1 exits once we are gone (or shortly), and the kernel's teardown runs then. */
	detach(): void;
	/** Forward a signal to the command; before the command starts, tear the namespace down instead. */
	signal(signal: NodeJS.Signals): void;
	/** A socket that reads EOF once every process of the namespace is gone (its mounts torn down). */
	readonly gone: (Stream & {destroy(): void}) | undefined;
};

// How long a forwarded signal waits for the command to appear after the view became ready.
const signalRetryMilliseconds = 5;
const signalRetryLimit = 400;

// The command's stderr travels as fd 3 of the chain, so it must be a real descriptor: Node leaves an
// 'ignore'd fd above 2 closed, and the setup's `exec 2>&3` would then fail.
function stderrFd(target: StdioTarget): {fd: number; close: boolean} {
	if (target === 'inherit') {
		return {fd: 2, close: false};
	}

	if (target === 'ignore') {
		return {fd: openSync('/dev/null', 'w'), close: true};
	}

	return {fd: target, close: false};
}

/**
Start the run's namespace (setpriv + unshare + sh + mount; see namespace-plan.ts). The chain's fd 2 is a
pipe that carries setup errors and the ready marker; the command's stderr is passed as fd 3.
*/
export function startNamespace(
	plan: NamespacePlan,
	tools: NamespaceTools,
	{
		runDirectory,
		stdio,
		environment,
	}: {runDirectory: string; stdio: [StdioTarget, StdioTarget, StdioTarget]; environment: NodeJS.ProcessEnv},
): NamespaceProcess {
	const {file, args} = buildNamespaceCommand(plan, tools);
	const {fd: errorTarget, close: closeErrorTarget} = stderrFd(stdio[2]);
	let child: ReturnType<typeof spawn>;
	try {
		child = spawn(file, args, {
			cwd: runDirectory,
			env: environment,
			// fd 6: pid 1 waits for EOF on it before exiting (see namespace-plan.ts). fd 7: held by the whole
			// chain, so its other end reads EOF once the namespace is gone, mounts and all.
			stdio: [stdio[0], stdio[1], 'pipe', errorTarget, 'ignore', 'ignore', 'pipe', 'pipe'],
		});
	} finally {
		if (closeErrorTarget) {
			closeSync(errorTarget);
		}
	}

	let started = false;
	let setupOutput = '';
	// pid 1 exits at EOF on its fd 6, the write end of which this is.
	const releasePipe = (child.stdio as unknown[])[6] as (Writable & {unref?: () => void}) | null;
	let afterReady = '';
	let resolveReady: () => void = () => {};
	const ready = new Promise<void>((resolve) => {
		resolveReady = resolve;
	});
	let resolveCommandExit: (exit: NamespaceExit) => void = () => {};
	const commandExit = new Promise<NamespaceExit>((resolve) => {
		resolveCommandExit = resolve;
	});

	const forward = (text: string) => {
		if (text) {
			try {
				writeSync(errorTarget, text);
			} catch {}
		}
	};

	// After the ready marker the pipe carries only pid 1's exit report (and anything unshare itself says).
	const readAfterReady = (chunk: string) => {
		afterReady += chunk;
		const index = afterReady.indexOf(exitMarker);
		const end = index === -1 ? -1 : afterReady.indexOf('\n', index);
		if (end === -1) {
			return;
		}

		forward(afterReady.slice(0, index) + afterReady.slice(end + 1));
		const [code, teardown] = afterReady.slice(index + exitMarker.length, end).split(' ');
		resolveCommandExit({
			started,
			code: Number(code),
			signal: null,
			setupOutput: '',
			teardown:
				teardown === 'died' || teardown === 'stuck' || teardown === 'unnormalized' ? teardown : 'clean',
		});
		afterReady = '';
	};

	child.stderr?.setEncoding('utf8');
	child.stderr?.on('data', (chunk: string) => {
		if (started) {
			readAfterReady(chunk);
			return;
		}

		setupOutput += chunk;
		const index = setupOutput.indexOf(readyMarker);
		if (index !== -1) {
			started = true;
			forward(setupOutput.slice(0, index));
			const rest = setupOutput.slice(index + readyMarker.length);
			setupOutput = '';
			resolveReady();
			readAfterReady(rest);
		}
	});

	const closed = new Promise<NamespaceExit>((resolve) => {
		child.on('error', (error) => {
			setupOutput += `${error.message}\n`;
		});
		child.on('close', (code, signal) => {
			forward(afterReady);
			const exit: NamespaceExit = {started, code, signal, setupOutput};
			resolveCommandExit(exit);
			void commandExit.then((reported) => {
				resolve(reported.teardown ? {...exit, teardown: reported.teardown} : exit);
			});
		});
	});

	let exited = false;
	void commandExit.then(() => {
		exited = true;
	});

	const deliver = (signal: NodeJS.Signals, attempt: number) => {
		if (exited || child.pid === undefined) {
			return;
		}

		if (!started) {
			// The command has not started: nothing to forward to, so end the whole namespace.
			child.kill('SIGKILL');
			return;
		}

		const [initPid] = readChildPids(child.pid);
		const commandPids = initPid === undefined ? [] : readChildPids(initPid);
		if (commandPids.length === 0) {
			if (attempt < signalRetryLimit) {
				setTimeout(() => deliver(signal, attempt + 1), signalRetryMilliseconds).unref();
			} else {
				child.kill('SIGKILL');
			}

			return;
		}

		for (const pid of commandPids) {
			try {
				process.kill(pid, signal);
			} catch {}
		}
	};

	return {
		ready,
		commandExit,
		closed,
		release() {
			releasePipe?.destroy();
		},
		detach() {
			// What is left is the kernel tearing the overlay down in unshare's exit: let it start after we
			// are gone, and yield the CPU.
			if (child.pid !== undefined) {
				try {
					os.setPriority(child.pid, 19);
				} catch {}
			}

			if (releasePipe) {
				releaseLater(releasePipe);
			}

			child.unref();
			child.stderr?.destroy();
		},
		signal(signal) {
			deliver(signal, 0);
		},
		gone: ((child.stdio as unknown[])[7] as (Stream & {destroy(): void}) | null) ?? undefined,
	};
}

/** Signal number for a signal name (SIGTERM -> 15). */
export function signalNumber(signal: NodeJS.Signals): number {
	return os.constants.signals[signal];
}
