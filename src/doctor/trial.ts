import {closeSync, lstatSync, mkdirSync, openSync, readFileSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import {describeSystemError} from '../errors.js';
import type {BackendName} from '../run/backend.js';
import {startRun} from '../run/run.js';
import {
	isOpaqueMarker,
	type LayerFormat,
	opaqueMarker,
	opaqueXattr,
	whiteoutName,
	whiteoutTarget,
} from '../store/layer-format.js';
import {openStore} from '../store/store.js';
import {findExecutableOrUndefined} from '../system/executables.js';
import {killChildrenUnder} from './probe.js';
import type {TrialReport} from './report.js';
import {runQuiet} from './store.js';

/*
A trial is a real run with a tiny source: the command writes a file, deletes a file of the source and
replaces a directory of it, so the kept upper must hold a written file, a whiteout and an opaque
directory in the store's layer format. Facts can lie (seccomp, an LSM, a container's policy); a run
cannot. Everything it makes stays inside its own dir under the probe dir, which doctor removes.
*/

/** The trial's command: run by `sh` inside the view. */
export const trialCommand = [
	'sh',
	'-c',
	'echo written > written && rm delete-me && rm -r replace-me && mkdir replace-me && echo new > replace-me/new',
];

/** After the timeout the trial is sent SIGKILL; after this much more, its processes are killed by pid. */
const killGraceMilliseconds = 5000;

export type TrialOptions = {
	backend: BackendName;
	/** The probe dir; the trial makes its own dir in it. */
	probeDirectory: string;
	/** The layer format the trial's store gets (the real store's), and its upper is checked against. */
	layerFormat: LayerFormat;
	/** Kill the trial when it has not finished after this long. */
	timeoutMs: number;
	/** Another command, for tests of the timeout. */
	command?: string[];
	/** Aborting it kills the trial at once, as the timeout does. */
	signal?: AbortSignal;
};

/** The promise's value, or undefined when it took longer than `milliseconds` (or `signal` was aborted). */
async function within<T>(
	promise: Promise<T>,
	milliseconds: number,
	signal?: AbortSignal,
): Promise<T | undefined> {
	let timer: NodeJS.Timeout | undefined;
	let stop = () => {};
	const expired = new Promise<undefined>((resolve) => {
		stop = () => resolve(undefined);
		timer = setTimeout(stop, milliseconds);
		signal?.addEventListener('abort', stop, {once: true});
		if (signal?.aborted) {
			stop();
		}
	});
	try {
		return await Promise.race([promise, expired]);
	} finally {
		clearTimeout(timer);
		signal?.removeEventListener('abort', stop);
	}
}

type UpperFindings = NonNullable<TrialReport['upper']>;

/** Check a kept upper for what the trial command must have left, in `format`. */
export async function inspectUpper(
	upper: string,
	format: LayerFormat,
): Promise<{upper: UpperFindings; missing: string[]}> {
	const lstatOrUndefined = (file: string) => {
		try {
			return lstatSync(file);
		} catch {
			return undefined;
		}
	};

	let written = false;
	try {
		written = readFileSync(path.join(upper, 'written'), 'utf8') === 'written\n';
	} catch {}

	const whiteoutFile = whiteoutName(format, 'delete-me');
	const whiteoutStats = lstatOrUndefined(path.join(upper, whiteoutFile));
	const whiteout =
		whiteoutStats !== undefined && whiteoutTarget(format, whiteoutFile, whiteoutStats) === 'delete-me';

	const replaced = path.join(upper, 'replace-me');
	let opaque = false;
	let opaqueProblem = '';
	if (lstatOrUndefined(replaced)?.isDirectory() && lstatOrUndefined(path.join(replaced, 'new'))?.isFile()) {
		if (format === 'whiteout-files-1') {
			const marker = lstatOrUndefined(path.join(replaced, opaqueMarker));
			opaque = marker !== undefined && isOpaqueMarker(format, opaqueMarker, marker);
		} else {
			const getfattr = findExecutableOrUndefined('getfattr');
			if (getfattr) {
				const read = await runQuiet(getfattr, [
					'--absolute-names',
					'--only-values',
					'-n',
					opaqueXattr,
					'--',
					replaced,
				]);
				opaque = read.code === 0 && read.output === 'y';
			} else {
				opaqueProblem = ' (getfattr is not installed to read it: install the attr package)';
			}
		}
	}

	const missing: string[] = [];
	if (!written) {
		missing.push('the file the command wrote');
	}

	if (!whiteout) {
		missing.push(
			format === 'whiteout-files-1'
				? 'a .wh.delete-me whiteout file for the deleted file'
				: 'a 0/0 character device (whiteout) for the deleted file',
		);
	}

	if (!opaque) {
		missing.push(
			`${format === 'whiteout-files-1' ? `a ${opaqueMarker} marker` : `${opaqueXattr}=y`} on the replaced directory${opaqueProblem}`,
		);
	}

	return {upper: {written, whiteout, opaque}, missing};
}

function firstLines(text: string): string {
	const lines = text.trim().split('\n').filter(Boolean);
	return lines.slice(0, 2).join(' / ');
}

/** Really run one backend in the probe dir, and check what its upper holds. */
export async function runTrial(options: TrialOptions): Promise<TrialReport> {
	const startedAt = performance.now();
	const elapsed = () => Math.round(performance.now() - startedAt);
	const directory = path.join(options.probeDirectory, options.backend);
	const source = path.join(directory, 'src');
	const storeRoot = path.join(directory, 'store');
	const failed = (problem: string, extra: Partial<TrialReport> = {}): TrialReport => ({
		ok: false,
		problem,
		layerFormat: options.layerFormat,
		durationMs: elapsed(),
		...extra,
	});

	let stderrFd: number;
	try {
		mkdirSync(path.join(source, 'replace-me'), {recursive: true, mode: 0o700});
		writeFileSync(path.join(source, 'delete-me'), 'lower\n');
		writeFileSync(path.join(source, 'replace-me', 'old'), 'old\n');
		// The trial's store gets the real store's layer format, whatever this file system would give it.
		const store = await openStore(storeRoot);
		if (store.layerFormat !== options.layerFormat) {
			writeFileSync(
				path.join(storeRoot, 'scratch-store.json'),
				`${JSON.stringify({scratchStore: 1, layerFormat: options.layerFormat}, undefined, '\t')}\n`,
			);
		}

		stderrFd = openSync(path.join(directory, 'stderr'), 'w');
	} catch (error) {
		return failed(`cannot prepare the trial in ${directory}: ${describeSystemError(error)}`);
	}

	try {
		const handle = startRun({
			command: options.command ?? trialCommand,
			src: source,
			cwd: source,
			store: storeRoot,
			backend: options.backend,
			keep: true,
			env: {PATH: '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin', LC_ALL: 'C'},
			stdio: ['ignore', 'ignore', stderrFd],
		});
		const outcome = handle.result.then(
			(result) => ({result}),
			(error: unknown) => ({error}),
		);
		let timedOut = false;
		let settled = await within(outcome, options.timeoutMs, options.signal);
		if (!settled) {
			timedOut = !options.signal?.aborted;
			handle.kill('SIGKILL');
			settled = await within(outcome, killGraceMilliseconds);
		}

		if (!settled) {
			killChildrenUnder(directory);
			settled = await within(outcome, killGraceMilliseconds);
		}

		if (options.signal?.aborted) {
			return failed('it was interrupted');
		}

		if (timedOut) {
			return failed(`it did not finish within ${options.timeoutMs} ms and was killed`, {
				timedOut: true,
			});
		}

		if (!settled || 'error' in settled) {
			const error = settled?.error;
			return failed(error instanceof Error ? error.message : String(error));
		}

		const {result} = settled;
		const stderr = readFileSync(path.join(directory, 'stderr'), 'utf8');
		if (result.exitCode !== 0) {
			return failed(
				`the trial command exited with status ${result.exitCode}${stderr.trim() ? `: ${firstLines(stderr)}` : ''}`,
			);
		}

		if (!result.keptUpper) {
			return failed('it kept no upper dir to check');
		}

		const {upper, missing} = await inspectUpper(result.keptUpper, options.layerFormat);
		if (missing.length > 0) {
			return failed(
				`the trial's upper dir is not in the ${options.layerFormat} layer format: it lacks ${missing.join(', ')}`,
				{upper},
			);
		}

		return {ok: true, layerFormat: options.layerFormat, upper, durationMs: elapsed()};
	} finally {
		closeSync(stderrFd);
	}
}
