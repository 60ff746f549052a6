import {spawn} from 'node:child_process';
import {closeSync, openSync, writeSync} from 'node:fs';
import os from 'node:os';
import {readChildPids} from '../system/process-identity.js';
import {
	buildNamespaceCommand,
	type NamespacePlan,
	type NamespaceTools,
	readyMarker,
} from './namespace-plan.js';

/** Where one of the command's standard streams goes: the caller's own, nowhere, or an open fd. */
export type StdioTarget = 'inherit' | 'ignore' | number;

/** How the namespace ended, before scratch maps it to an exit status. */
export type NamespaceExit = {
	/** Whether the view was built and the command started. */
	started: boolean;
	code: number | null;
	signal: NodeJS.Signals | null;
	/** What the setup printed when it failed before the command started. */
	setupOutput: string;
};

/** A running namespace: wait for it, or pass a signal on to the command inside. */
export type NamespaceProcess = {
	/** Resolves when the view is mounted and the command is starting. */
	readonly ready: Promise<void>;
	readonly exit: Promise<NamespaceExit>;
	/** Forward a signal to the command; before the command starts, tear the namespace down instead. */
	signal(signal: NodeJS.Signals): void;
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
			stdio: [stdio[0], stdio[1], 'pipe', errorTarget],
		});
	} finally {
		if (closeErrorTarget) {
			closeSync(errorTarget);
		}
	}

	let started = false;
	let setupOutput = '';
	let resolveReady: () => void = () => {};
	const ready = new Promise<void>((resolve) => {
		resolveReady = resolve;
	});

	const forward = (text: string) => {
		if (text) {
			try {
				writeSync(errorTarget, text);
			} catch {}
		}
	};

	child.stderr?.setEncoding('utf8');
	child.stderr?.on('data', (chunk: string) => {
		if (started) {
			forward(chunk);
			return;
		}

		setupOutput += chunk;
		const index = setupOutput.indexOf(readyMarker);
		if (index !== -1) {
			started = true;
			forward(setupOutput.slice(0, index) + setupOutput.slice(index + readyMarker.length));
			setupOutput = '';
			resolveReady();
		}
	});

	const exit = new Promise<NamespaceExit>((resolve) => {
		child.on('error', (error) => {
			setupOutput += `${error.message}\n`;
		});
		child.on('close', (code, signal) => {
			resolve({started, code, signal, setupOutput});
		});
	});

	let exited = false;
	void exit.then(() => {
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
		exit,
		signal(signal) {
			deliver(signal, 0);
		},
	};
}

/** Signal number for a signal name (SIGTERM -> 15). */
export function signalNumber(signal: NodeJS.Signals): number {
	return os.constants.signals[signal];
}
