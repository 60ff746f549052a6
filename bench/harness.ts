/*
What every benchmark row shares: environment knobs, interleaved sampling, timing of child processes,
the workspace layout and the row type the table is printed from.
*/
import {spawn, spawnSync} from 'node:child_process';
import {readdirSync} from 'node:fs';
import path from 'node:path';
import {performance} from 'node:perf_hooks';

export function integerFromEnvironment(name: string, fallback: number, minimum: number): number {
	const raw = process.env[name];
	if (raw === undefined || raw === '') {
		return fallback;
	}

	const value = Number(raw);
	if (!Number.isInteger(value) || value < minimum) {
		throw new Error(`${name}=${raw} must be an integer >= ${minimum}`);
	}

	return value;
}

export const iterations = integerFromEnvironment('BENCH_ITERATIONS', 20, 1);
export const warmups = integerFromEnvironment('BENCH_WARMUPS', 3, 0);

/** One side of a comparison: `sample` returns one measurement in milliseconds. */
export type Side = {
	name: string;
	sample: () => Promise<number>;
	iterations?: number;
	warmups?: number;
	/** Untimed, after each sample: lets background work of that sample finish before the next one. */
	settle?: () => Promise<void> | void;
};

export type Measured = {name: string; samples: number[]; medianMs: number};

export type Row = {
	id: number;
	comparison: string;
	a: Measured;
	b: Measured;
	ratio?: number;
	ratioLabel: string;
	target: string;
	met?: boolean;
	note?: string;
};

/** Paths of the benchmark's scratch space, all under one temp dir removed at the end. */
export type Workspace = {
	root: string;
	largeTree: string;
	smallTree: string;
	store: string;
	fifo: string;
	/** Entry point of the snapshot of dist/ the whole benchmark runs. */
	cli: string;
};

export function progress(message: string): void {
	process.stderr.write(`bench: ${message}\n`);
}

export function median(values: readonly number[]): number {
	if (values.length === 0) {
		return Number.NaN;
	}

	const sorted = values.toSorted((left, right) => left - right);
	const middle = Math.floor(sorted.length / 2);
	return sorted.length % 2 === 1
		? (sorted[middle] as number)
		: ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

export function shellQuote(value: string): string {
	return `'${value.replaceAll("'", String.raw`'\''`)}'`;
}

/** Whether a side with `count` samples runs in `round` of `rounds`: spreads sparse sides evenly. */
function runsInRound(round: number, count: number, rounds: number): boolean {
	return Math.floor(((round + 1) * count) / rounds) > Math.floor((round * count) / rounds);
}

/** Warm up, then sample the sides in alternation; a side with fewer iterations is spread over the rounds. */
export async function interleave(label: string, sides: readonly Side[]): Promise<Measured[]> {
	const warmupRounds = Math.max(...sides.map((side) => side.warmups ?? warmups));
	for (let round = 0; round < warmupRounds; round++) {
		for (const side of sides) {
			if (round < (side.warmups ?? warmups)) {
				await side.sample();
				await side.settle?.();
			}
		}
	}

	const samples = sides.map(() => [] as number[]);
	const rounds = Math.max(...sides.map((side) => side.iterations ?? iterations));
	for (let round = 0; round < rounds; round++) {
		for (const [index, side] of sides.entries()) {
			if (runsInRound(round, side.iterations ?? iterations, rounds)) {
				samples[index]?.push(await side.sample());
				await side.settle?.();
			}
		}

		if ((round + 1) % 5 === 0 || round + 1 === rounds) {
			progress(`${label}: round ${round + 1}/${rounds}`);
		}
	}

	return sides.map((side, index) => {
		const sideSamples = samples[index] ?? [];
		return {name: side.name, samples: sideSamples, medianMs: median(sideSamples)};
	});
}

export type ChildExit = {
	code: number | null;
	signal: NodeJS.Signals | null;
	exitedAt: number;
	stderr: string;
};

/** Spawn a program; resolves at its 'exit' with the time it happened and whatever it wrote to stderr. */
export function runChild(file: string, args: readonly string[]): {exited: Promise<ChildExit>} {
	const child = spawn(file, args, {stdio: ['ignore', 'ignore', 'pipe']});
	let stderr = '';
	child.stderr.on('data', (chunk: Buffer) => {
		stderr += chunk.toString();
	});
	const exited = new Promise<ChildExit>((resolve, reject) => {
		let exit: Omit<ChildExit, 'stderr'> | undefined;
		child.on('error', reject);
		child.on('exit', (code, signal) => {
			// Timestamp at the exit itself; 'close' may come later, once stderr is drained.
			exit = {code, signal, exitedAt: performance.now()};
		});
		child.on('close', () => {
			if (exit) {
				resolve({...exit, stderr});
			}
		});
	});
	return {exited};
}

export function describeFailure(file: string, args: readonly string[], exit: ChildExit): Error {
	const status = exit.signal ? `signal ${exit.signal}` : `status ${exit.code}`;
	return new Error(`${file} ${args.join(' ')} failed (${status}): ${exit.stderr.trim()}`);
}

/** Wall time of one program run, from spawn to exit; a failure aborts the benchmark. */
export async function timeCommand(file: string, args: readonly string[]): Promise<number> {
	const startedAt = performance.now();
	const exit = await runChild(file, args).exited;
	if (exit.code !== 0) {
		throw describeFailure(file, args, exit);
	}

	return exit.exitedAt - startedAt;
}

/** `scratch run` arguments; `store` defaults to the workspace's shared store. */
export function scratchArguments(
	workspace: Workspace,
	source: string,
	command: readonly string[],
	extra: readonly string[] = [],
	store = workspace.store,
) {
	return [workspace.cli, 'run', '--store', store, '--src', source, ...extra, '--', ...command];
}

export function timeScratch(
	workspace: Workspace,
	source: string,
	command: readonly string[],
	extra: readonly string[] = [],
	store = workspace.store,
): Promise<number> {
	return timeCommand(process.execPath, scratchArguments(workspace, source, command, extra, store));
}

/** Run another scratch command (`gc`, `ls`, ...) on a store, untimed; a failure aborts the benchmark. */
export async function scratchCommand(workspace: Workspace, args: readonly string[]): Promise<void> {
	await timeCommand(process.execPath, [workspace.cli, ...args]);
}

/*
scratch deletes a discarded run's writes in a detached process after it exits. Wait for that to finish
(untimed) so one sample's cleanup does not run during the next sample.
*/
export async function waitForQuietStore(store: string): Promise<void> {
	const trash = path.join(store, 'trash');
	const deadline = performance.now() + 60_000;
	while (performance.now() < deadline) {
		let entries: string[];
		try {
			entries = readdirSync(trash);
		} catch {
			return;
		}

		if (entries.length === 0) {
			return;
		}

		await new Promise((resolve) => {
			setTimeout(resolve, 5);
		});
	}

	progress(`warning: ${trash} still not empty after 60 s; continuing`);
}

/** Write back everything dirty, untimed, so one sample's writeback does not land in the next. */
export function syncAll(): void {
	spawnSync('sync');
}

/** Cheap pseudo-random bytes (no crypto needed, just content that is not all zeros). */
export function pseudoRandomBytes(length: number): Buffer {
	const bytes = Buffer.alloc(length);
	let state = 0x9e_37_79_b9;
	for (let index = 0; index < length; index++) {
		state = (Math.imul(state, 1_664_525) + 1_013_904_223) >>> 0;
		bytes[index] = state >>> 24;
	}

	return bytes;
}

/** The file system a directory is on, e.g. `ext4 (/dev/vda)`, from findmnt. */
export function describeFileSystem(directory: string): {type: string; label: string} {
	const found = spawnSync('findmnt', ['--noheadings', '--output', 'FSTYPE,SOURCE', '--target', directory], {
		encoding: 'utf8',
	});
	const [type = 'unknown', source = '?'] = (found.stdout ?? '').trim().split(/\s+/);
	return {type, label: `${type} (${source})`};
}

export function ratioRow(
	id: number,
	comparison: string,
	[a, b]: Measured[],
	target: {maximum?: number; label: string},
	note?: string,
): Row {
	if (!a || !b) {
		throw new Error(`row ${id}: expected two measured sides`);
	}

	const ratio = a.medianMs / b.medianMs;
	return {
		id,
		comparison,
		a,
		b,
		ratio,
		ratioLabel: ratio.toFixed(2),
		target: target.label,
		...(target.maximum === undefined ? {} : {met: ratio <= target.maximum}),
		...(note === undefined ? {} : {note}),
	};
}
