/*
Rows 10-11: workspaces. What `ws snapshot` and `ws rollback` cost as the workspace's writable state
grows: 20,000 files written since the last snapshot vs 1. Both should be a rename and a few records,
whatever the upper holds. Each row has its own store under the workspace dir (the same file system as
every other row's) and one workspace in it, which both sides use in turn: after each sample it is put
back to its `postinit` snapshot with an empty upper, so the two sides start from the same state.
*/
import {readdirSync} from 'node:fs';
import path from 'node:path';
import {
	describeFileSystem,
	integerFromEnvironment,
	interleave,
	progress,
	type Row,
	ratioRow,
	syncAll,
	timeCommand,
	type Workspace,
	waitForQuietStore,
	warmups,
} from './harness.js';

// Each 20,000-file sample first writes the files with an untimed `ws run` and its settling waits for
// their deletion (a few seconds together, far more on a busy machine), so these rows get few samples.
export const workspaceIterations = integerFromEnvironment('BENCH_WS_ITERATIONS', 8, 1);

const workspaceFileCount = 20_000;
const workspaceName = 'bench';

type BenchWorkspace = {
	store: string;
	/** The workspace's writable state: what a snapshot freezes and a rollback drops. */
	upper: string;
	/** `scratch ws SUBCOMMAND bench --store STORE ARGS...`, untimed; a failure aborts the benchmark. */
	command: (subcommand: string, ...args: string[]) => Promise<void>;
	/** The same command's wall time. */
	time: (subcommand: string, ...args: string[]) => Promise<number>;
};

/** A store with one workspace on the 1-file source, with no init command: postinit is the source alone. */
async function createBenchWorkspace(workspace: Workspace, storeName: string): Promise<BenchWorkspace> {
	const store = path.join(workspace.root, storeName);
	const argumentsOf = (subcommand: string, args: string[]) => [
		workspace.cli,
		'ws',
		subcommand,
		workspaceName,
		'--store',
		store,
		...args,
	];
	const time = (subcommand: string, ...args: string[]) =>
		timeCommand(process.execPath, argumentsOf(subcommand, args));
	await time('init', '--src', workspace.smallTree);
	await waitForQuietStore(store);
	return {
		store,
		upper: path.join(store, 'workspaces', workspaceName, 'upper'),
		async command(subcommand, ...args) {
			await time(subcommand, ...args);
		},
		time,
	};
}

function countEntries(directory: string): number {
	try {
		return readdirSync(directory).length;
	} catch (error) {
		if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
			return 0;
		}

		throw error;
	}
}

function expectEntries(label: string, directory: string, expected: number, what: string): void {
	const found = countEntries(directory);
	if (found !== expected) {
		throw new Error(`${label}: ${directory} holds ${found} entries ${what}; expected ${expected}`);
	}
}

/*
The untimed preparation of a sample: a `ws run` writes `count` files into out/ (awk writes them all from
one process), they are checked to be in the workspace's upper, then any background deletion is let
finish and everything is written back, so the timed command starts with a quiet disk. (The `sync` finds
little to do: the run's overlay is not volatile, so its unmount, which `ws run` waits for, syncs the
upper's file system already.)
*/
async function writeFiles(label: string, bench: BenchWorkspace, count: number): Promise<void> {
	const script = `mkdir -p out && cd out && awk 'BEGIN { for (i = 1; i <= ${count}; i++) { f = "f" i; print i > f; close(f) } }'`;
	await bench.command('run', '--', 'sh', '-c', script);
	expectEntries(label, path.join(bench.upper, 'out'), count, 'after the ws run');
	await waitForQuietStore(bench.store);
	syncAll();
}

function sideName(count: number): string {
	return count === 1 ? '1 file' : `${count} files`;
}

const preparationNote = `each sample: an untimed \`ws run\` writes the files into out/ (checked in the upper), then \`sync\`; the sample is the wall time of the spawned \`scratch ws ...\` command (node start-up included); the upper is checked empty afterwards`;

/*
Row 10. After each sample (untimed): `ws rollback bench postinit` (the upper is already empty, so this
only puts the stack back, and a workspace's stack never grows from sample to sample), `ws rm` of the
sample's snapshot name (its layer, now unreachable, goes to the trash), a wait for the trash to empty
and a `sync`. Every sample takes a new name, so no snapshot name is ever reused.
*/
export async function workspaceSnapshotRow(workspace: Workspace): Promise<Row> {
	progress(`row 10: scratch ws snapshot: ${workspaceFileCount} files written vs 1`);
	const fileSystem = describeFileSystem(workspace.root).label;
	const bench = await createBenchWorkspace(workspace, 'store-ws-snapshot');
	let snapshotNumber = 0;
	const side = (count: number) => {
		let taken: string | undefined;
		return {
			name: `${sideName(count)}: scratch ws snapshot`,
			async sample() {
				await writeFiles('row 10', bench, count);
				taken = `s${snapshotNumber++}`;
				const elapsed = await bench.time('snapshot', taken);
				expectEntries('row 10', bench.upper, 0, 'after ws snapshot');
				return elapsed;
			},
			async settle() {
				await bench.command('rollback', 'postinit');
				if (taken !== undefined) {
					await bench.command('rm', taken);
				}

				await waitForQuietStore(bench.store);
				syncAll();
			},
			iterations: workspaceIterations,
			warmups: Math.min(warmups, 1),
		};
	};

	const measured = await interleave('row 10', [side(workspaceFileCount), side(1)]);
	return ratioRow(
		10,
		`\`scratch ws snapshot WS NAME\`: the workspace's writable state holds ${workspaceFileCount} files vs 1 file (store on ${fileSystem})`,
		measured,
		{maximum: 1.2, label: '<= 1.2'},
		`${preparationNote}; after each sample, untimed: \`ws rollback WS postinit\`, \`ws rm WS NAME\` (a new name per sample), wait for the trash to empty, \`sync\``,
	);
}

/*
Row 11. `ws rollback` moves the upper into the trash and returns; a detached, niced deleter removes the
dropped files after scratch exits (about a second for 20,000 files here). That deletion is not the
rollback's cost, but left running it would slow whatever comes next, the other side's sample included,
so each sample's settling waits (untimed) for the trash dir to empty, then syncs.
*/
export async function workspaceRollbackRow(workspace: Workspace): Promise<Row> {
	progress(`row 11: scratch ws rollback: ${workspaceFileCount} files written vs 1`);
	const fileSystem = describeFileSystem(workspace.root).label;
	const bench = await createBenchWorkspace(workspace, 'store-ws-rollback');
	const side = (count: number) => ({
		name: `${sideName(count)}: scratch ws rollback WS postinit`,
		async sample() {
			await writeFiles('row 11', bench, count);
			const elapsed = await bench.time('rollback', 'postinit');
			expectEntries('row 11', bench.upper, 0, 'after ws rollback');
			return elapsed;
		},
		async settle() {
			// The dropped writes are deleted in the background after rollback returns: let that finish.
			await waitForQuietStore(bench.store);
			syncAll();
		},
		iterations: workspaceIterations,
		warmups: Math.min(warmups, 1),
	});

	const measured = await interleave('row 11', [side(workspaceFileCount), side(1)]);
	return ratioRow(
		11,
		`\`scratch ws rollback WS postinit\`: the workspace's writable state holds ${workspaceFileCount} files vs 1 file (store on ${fileSystem})`,
		measured,
		{maximum: 1.2, label: '<= 1.2'},
		`${preparationNote}; the dropped upper goes to the trash and a background deleter removes it after scratch exits: each sample's settling waits (untimed) for the trash to empty, then syncs`,
	);
}

/** For the benchmark's header: what the rows' knobs are set to. */
export function describeWorkspaceKnobs(): string {
	return `ws rows ${workspaceIterations} (BENCH_WS_ITERATIONS)`;
}
