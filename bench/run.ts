/*
Side-by-side benchmark of `scratch run`. Every ratio is measured in one process run with the compared
commands interleaved (A, B, A, B, ...) after warmups, so drift on a noisy machine hits both sides alike.
Prints a markdown table on stdout, progress on stderr; BENCH_JSON=FILE also writes the raw samples.
*/
import {spawnSync} from 'node:child_process';
import {
	closeSync,
	constants,
	cpSync,
	existsSync,
	mkdirSync,
	mkdtempSync,
	openSync,
	readFileSync,
	rmSync,
	writeFileSync,
} from 'node:fs';
import {open} from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {performance} from 'node:perf_hooks';
import {exportMemoryRow, exportThroughputRow} from './export-rows.js';
import {fusePromoteRow, fuseStartupRow, fuseWriteIterations, fuseWriteRow} from './fuse-rows.js';
import {
	describeFailure,
	describeFileSystem,
	integerFromEnvironment,
	interleave,
	iterations,
	type Measured,
	median,
	progress,
	pseudoRandomBytes,
	type Row,
	ratioRow,
	runChild,
	scratchArguments,
	shellQuote,
	timeCommand,
	timeScratch,
	type Workspace,
	waitForQuietStore,
	warmups,
} from './harness.js';
import {deepStackRow, gcIterations, gcRow, promoteCostRow, promoteIterations} from './layer-rows.js';
import {importMemoryRow, pushPullRow, registryIterations} from './registry-rows.js';
import {describeWorkspaceKnobs, workspaceRollbackRow, workspaceSnapshotRow} from './workspace-rows.js';

const repositoryRoot = path.resolve(import.meta.dirname, '..');
const builtDistribution = path.join(repositoryRoot, 'dist');

// `cp -a` of 200 MB takes seconds per sample, so that side gets far fewer samples.
const copyIterations = integerFromEnvironment('BENCH_CP_ITERATIONS', 3, 1);

// BENCH_ROWS=1,5 measures only those rows (the large tree is generated only when rows 2-4 are among them).
const selectedRows = process.env['BENCH_ROWS']
	? new Set(process.env['BENCH_ROWS'].split(',').map(Number))
	: undefined;

function isSelected(id: number): boolean {
	return selectedRows === undefined || selectedRows.has(id);
}

const largeTreeDirectories = 500;
const largeTreeFilesPerDirectory = 100;
const exitLatencyFileCount = 20_000;

/** 500 dirs x 100 files, 1-7 KiB each (4 KiB on average, ~200 MB), all slices of one buffer. */
function generateLargeTree(root: string): {files: number; bytes: number} {
	const content = pseudoRandomBytes(8192);
	let files = 0;
	let bytes = 0;
	for (let directoryIndex = 0; directoryIndex < largeTreeDirectories; directoryIndex++) {
		const directory = path.join(root, `d${String(directoryIndex).padStart(3, '0')}`);
		mkdirSync(directory, {recursive: true});
		for (let fileIndex = 0; fileIndex < largeTreeFilesPerDirectory; fileIndex++) {
			// Spread sizes over 1024..7168 bytes; the mean stays at 4096.
			const size = 1024 + ((files * 2_654_435_761) % 6145);
			const offset = files % 1024;
			writeFileSync(path.join(directory, `f${fileIndex}.dat`), content.subarray(offset, offset + size));
			files++;
			bytes += size;
		}

		if ((directoryIndex + 1) % 100 === 0) {
			progress(`generated ${directoryIndex + 1}/${largeTreeDirectories} directories`);
		}
	}

	return {files, bytes};
}

function planWorkspace(root: string): Workspace {
	return {
		root,
		largeTree: path.join(root, 'tree-large'),
		smallTree: path.join(root, 'tree-small'),
		store: path.join(root, 'store'),
		fifo: path.join(root, 'done.fifo'),
		cli: path.join(root, 'scratch-dist', 'cli.cjs'),
	};
}

function populateWorkspace(workspace: Workspace): void {
	// A snapshot, so a rebuild of dist/ while the benchmark runs cannot break it or mix two builds.
	cpSync(builtDistribution, path.dirname(workspace.cli), {recursive: true});
	writeFileSync(path.join(path.dirname(workspace.cli), 'package.json'), '{"type": "module"}\n');
	mkdirSync(workspace.smallTree);
	writeFileSync(path.join(workspace.smallTree, 'only-file.txt'), 'one file\n');
	mkdirSync(workspace.largeTree);
	if ([2, 3, 4].some((id) => isSelected(id))) {
		progress(`generating the large source tree in ${workspace.largeTree}`);
		const generated = generateLargeTree(workspace.largeTree);
		progress(`generated ${generated.files} files, ${(generated.bytes / 1e6).toFixed(1)} MB; syncing`);
	}

	// Flush the writes now so their writeback does not land in the first measurements.
	spawnSync('sync');
	const fifo = spawnSync('mkfifo', [workspace.fifo], {encoding: 'utf8'});
	if (fifo.status !== 0) {
		throw new Error(`mkfifo ${workspace.fifo} failed: ${fifo.stderr}`);
	}
}

async function startupRow(workspace: Workspace): Promise<Row> {
	progress('row 1: scratch run -- true vs node -e 0');
	const measured = await interleave('row 1', [
		{
			name: 'scratch run --src SMALL -- true',
			sample: () => timeScratch(workspace, workspace.smallTree, ['true']),
			settle: () => waitForQuietStore(workspace.store),
		},
		{name: 'node -e 0', sample: () => timeCommand(process.execPath, ['-e', '0'])},
	]);
	return ratioRow(1, '`scratch run -- true` (1-file src) vs `node -e 0`', measured, {
		maximum: 1.3,
		label: '<= 1.3',
	});
}

async function treeSizeRow(workspace: Workspace): Promise<Row> {
	progress('row 2: scratch run over the 50k-file tree vs the 1-file tree');
	const measured = await interleave('row 2', [
		{
			name: 'scratch run --src LARGE -- true',
			sample: () => timeScratch(workspace, workspace.largeTree, ['true']),
			settle: () => waitForQuietStore(workspace.store),
		},
		{
			name: 'scratch run --src SMALL -- true',
			sample: () => timeScratch(workspace, workspace.smallTree, ['true']),
			settle: () => waitForQuietStore(workspace.store),
		},
	]);
	return ratioRow(2, '`scratch run -- true`: 50k-file src vs 1-file src', measured, {
		maximum: 1.1,
		label: '<= 1.1',
	});
}

async function copyRow(workspace: Workspace): Promise<Row> {
	progress(`row 3: cp -a + rm -rf of the large tree (${copyIterations} samples) vs scratch run`);
	let copyNumber = 0;
	const measured = await interleave('row 3', [
		{
			name: 'scratch run --src LARGE -- true',
			sample: () => timeScratch(workspace, workspace.largeTree, ['true']),
			settle: () => waitForQuietStore(workspace.store),
		},
		{
			name: 'cp -a LARGE DEST && rm -rf DEST',
			sample() {
				const destination = path.join(workspace.root, `copy-${copyNumber++}`);
				const script = `cp -a ${shellQuote(workspace.largeTree)} ${shellQuote(destination)} && rm -rf ${shellQuote(destination)}`;
				return timeCommand('sh', ['-c', script]);
			},
			iterations: copyIterations,
			// A warmup would cost seconds and is not needed: cp has no start-up cost worth amortising.
			warmups: 0,
			// Journal and writeback of the copy would otherwise run during the next scratch samples.
			settle() {
				spawnSync('sync');
			},
		},
	]);
	const [scratch, copy] = measured;
	if (!scratch || !copy) {
		throw new Error('row 3: expected two measured sides');
	}

	const timesFaster = copy.medianMs / scratch.medianMs;
	return {
		id: 3,
		comparison: '`scratch run -- true` vs `cp -a` + `rm -rf` of the 50k-file, 200 MB tree',
		a: scratch,
		b: copy,
		ratio: timesFaster,
		ratioLabel: `${timesFaster.toFixed(0)}x faster (B/A)`,
		target: '>= 500x',
		met: timesFaster >= 500,
		note: `cp side: ${copy.samples.length} samples spread over the rounds (${copy.samples.map((sample) => sample.toFixed(0)).join(', ')} ms), \`sync\` after each; the tree's page cache is not controlled, and a cold cache makes cp disk-bound`,
	};
}

async function bareOverlayRow(workspace: Workspace): Promise<Row> {
	progress('row 4: scratch run vs bare unshare + mount -t overlay');
	const baselineRoot = path.join(workspace.root, 'bare');
	mkdirSync(baselineRoot);
	let baselineNumber = 0;
	const measured = await interleave('row 4', [
		{
			name: 'scratch run --src LARGE -- true',
			sample: () => timeScratch(workspace, workspace.largeTree, ['true']),
			settle: () => waitForQuietStore(workspace.store),
		},
		{
			name: 'unshare + mount overlay + true + rm -rf',
			sample() {
				const directory = path.join(baselineRoot, String(baselineNumber++));
				const [upper, work, merged] = ['upper', 'work', 'merged'].map((name) =>
					shellQuote(path.join(directory, name)),
				) as [string, string, string];
				const options = `lowerdir=${workspace.largeTree},upperdir=${path.join(directory, 'upper')},workdir=${path.join(directory, 'work')}`;
				const inner = `mkdir -p ${upper} ${work} ${merged} && mount -t overlay overlay -o ${shellQuote(options)} ${merged} && true`;
				const script = `unshare --mount --propagation private sh -c ${shellQuote(inner)} && rm -rf ${shellQuote(directory)}`;
				return timeCommand('sh', ['-c', script]);
			},
		},
	]);
	return ratioRow(
		4,
		'`scratch run -- true` vs bare `unshare --mount` + `mount -t overlay` + `true` + `rm -rf` (50k-file src)',
		measured,
		{label: 'report'},
		'baseline has no PID namespace, no store bookkeeping, and `true` is a shell builtin there',
	);
}

/**
One exit-latency sample: the command announces its end on the FIFO as its very last action; the latency
is the time from reading that line to scratch's own exit.
*/
async function sampleExitLatency(workspace: Workspace, script: string): Promise<number> {
	// Opening a FIFO for reading blocks until a writer opens it; fs.promises runs that in the threadpool.
	const opening = open(workspace.fifo, 'r');
	const args = scratchArguments(workspace, workspace.smallTree, ['sh', '-c', script]);
	const {exited} = runChild(process.execPath, args);
	let doneAt: number | undefined;
	void exited.then(
		() => {
			if (doneAt === undefined) {
				// scratch ended before the command wrote to the FIFO: unblock our open so the error surfaces.
				try {
					closeSync(openSync(workspace.fifo, constants.O_WRONLY | constants.O_NONBLOCK));
				} catch {}
			}
		},
		() => {},
	);

	const fifo = await opening;
	try {
		const buffer = Buffer.alloc(64);
		let received = '';
		while (!received.includes('done\n')) {
			const {bytesRead} = await fifo.read(buffer, 0, buffer.length);
			if (bytesRead === 0) {
				break;
			}

			received += buffer.toString('utf8', 0, bytesRead);
		}

		if (received.includes('done\n')) {
			doneAt = performance.now();
		}
	} finally {
		await fifo.close();
	}

	const exit = await exited;
	if (exit.code !== 0 || doneAt === undefined) {
		throw describeFailure(process.execPath, args, exit);
	}

	return exit.exitedAt - doneAt;
}

async function exitLatencyRow(workspace: Workspace): Promise<Row> {
	progress(`row 5: exit latency after writing ${exitLatencyFileCount} files vs none`);
	const announce = `echo done > ${shellQuote(workspace.fifo)}`;
	// awk writes all the small files from one process, so the command itself stays quick.
	const writeFiles = `mkdir -p out && cd out && awk 'BEGIN { for (i = 1; i <= ${exitLatencyFileCount}; i++) { f = "f" i; print i > f; close(f) } }'`;
	const measured = await interleave('row 5', [
		{
			name: `exit latency, ${exitLatencyFileCount} files written`,
			sample: () => sampleExitLatency(workspace, `${writeFiles} && ${announce}`),
			settle: () => waitForQuietStore(workspace.store),
		},
		{
			name: 'exit latency, nothing written',
			sample: () => sampleExitLatency(workspace, announce),
			settle: () => waitForQuietStore(workspace.store),
		},
	]);
	return ratioRow(
		5,
		`exit latency (command exit -> scratch exit): ${exitLatencyFileCount} files written vs none`,
		measured,
		{maximum: 1.5, label: '<= 1.5'},
		'measured from the command\'s last line on a FIFO to the "exit" event of scratch',
	);
}

/** Row 6, informational: scratch's own view of its setup and teardown, from `--json-file`. */
async function reportedDurationsRow(workspace: Workspace): Promise<Row> {
	progress('row 6: setupMs / teardownMs from --json-file');
	const jsonFile = path.join(workspace.root, 'summary.json');
	const args = scratchArguments(workspace, workspace.smallTree, ['true'], ['--json-file', jsonFile]);
	const setup: number[] = [];
	const teardown: number[] = [];
	const total: number[] = [];
	for (let index = 0; index < warmups + iterations; index++) {
		await timeCommand(process.execPath, args);
		await waitForQuietStore(workspace.store);
		if (index < warmups) {
			continue;
		}

		const summary = JSON.parse(readFileSync(jsonFile, 'utf8')) as {
			durations: {setupMs: number; teardownMs: number; totalMs: number};
		};
		setup.push(summary.durations.setupMs);
		teardown.push(summary.durations.teardownMs);
		total.push(summary.durations.totalMs);
	}

	return {
		id: 6,
		comparison: '`scratch run --json-file -- true` (1-file src): durations.setupMs (A) and teardownMs (B)',
		a: {name: 'setupMs', samples: setup, medianMs: median(setup)},
		b: {name: 'teardownMs', samples: teardown, medianMs: median(teardown)},
		ratioLabel: '-',
		target: 'report',
		note: `median durations.totalMs ${median(total).toFixed(1)} ms (in-process; excludes node start-up)`,
	};
}

/** Where the numbers were taken; printed above the table and saved with the samples. */
function describeEnvironment(workspace: Workspace): Record<string, string> {
	let cpu = 'unknown';
	try {
		const modelLine = readFileSync('/proc/cpuinfo', 'utf8')
			.split('\n')
			.find((line) => line.startsWith('model name'));
		cpu = modelLine?.split(':')[1]?.trim() ?? cpu;
	} catch {}

	const nproc = spawnSync('nproc', {encoding: 'utf8'}).stdout?.trim() || String(os.availableParallelism());
	return {
		Date: new Date().toISOString(),
		'Kernel (uname -r)': os.release(),
		Node: process.version,
		CPU: cpu,
		nproc,
		Iterations: `${iterations} per side after ${warmups} warmups (BENCH_ITERATIONS, BENCH_WARMUPS); cp side ${copyIterations} (BENCH_CP_ITERATIONS); promote row ${promoteIterations} (BENCH_PROMOTE_ITERATIONS); gc row ${gcIterations} (BENCH_GC_ITERATIONS); registry rows ${registryIterations} (BENCH_REGISTRY_ITERATIONS); fuse write and promote rows ${fuseWriteIterations} (BENCH_FUSE_ITERATIONS); ${describeWorkspaceKnobs()}`,
		// Trees, stores and copies all live here (os.tmpdir(), so TMPDIR moves them): it must be a disk fs.
		'Bench dir (trees, stores)': `${workspace.root} on ${describeFileSystem(workspace.root).label}`,
	};
}

function formatMeasured(measured: Measured): string {
	return `${measured.medianMs.toFixed(1)} (n=${measured.samples.length})`;
}

function formatTable(rows: readonly Row[]): string {
	const lines = [
		'| # | Comparison | A | B | A median ms | B median ms | Ratio A/B | Target | Met |',
		'|---|---|---|---|---:|---:|---:|---|---|',
	];
	for (const row of rows) {
		const met = row.met === undefined ? '-' : row.met ? 'yes' : 'NO';
		lines.push(
			`| ${row.id} | ${row.comparison} | ${row.a.name} | ${row.b.name} | ${formatMeasured(row.a)} | ${formatMeasured(row.b)} | ${row.ratioLabel} | ${row.target} | ${met} |`,
		);
	}

	const notes = rows.filter((row) => row.note).map((row) => `- Row ${row.id}: ${row.note}`);
	return [...lines, '', ...notes].join('\n');
}

async function main(): Promise<void> {
	if (!existsSync(path.join(builtDistribution, 'cli.cjs'))) {
		throw new Error(
			`${builtDistribution}/cli.cjs is missing; build first with \`node build.mjs\` (or \`npm run bench\`)`,
		);
	}

	const workspace = planWorkspace(mkdtempSync(path.join(os.tmpdir(), 'scratch-bench-')));
	const environment = describeEnvironment(workspace);
	const header = [
		'## scratch benchmark',
		'',
		...Object.entries(environment).map(([name, value]) => `- ${name}: ${value}`),
		'',
	];
	const fileSystem = describeFileSystem(workspace.root).type;
	if (fileSystem === 'tmpfs' || fileSystem === 'overlay') {
		progress(
			`warning: ${workspace.root} is on ${fileSystem}; set TMPDIR to a directory on a disk file system`,
		);
	}

	const cleanUp = () => {
		rmSync(workspace.root, {recursive: true, force: true, maxRetries: 5});
	};

	// try/finally does not run when the process is killed by a signal, so clean up here as well.
	const onSignal = (signal: NodeJS.Signals) => {
		progress(`${signal}: removing ${workspace.root}`);
		cleanUp();
		process.exit(128 + os.constants.signals[signal]);
	};

	process.once('SIGINT', onSignal);
	process.once('SIGTERM', onSignal);
	try {
		populateWorkspace(workspace);
		// The cp row runs last: its 600 MB of disk traffic slows the machine for a while afterwards. The
		// promote, gc and workspace rows write and delete 20,000 files per sample, so they come just before it.
		const rowFunctions: Array<[number, (workspace: Workspace) => Promise<Row>]> = [
			[1, startupRow],
			[2, treeSizeRow],
			[4, bareOverlayRow],
			[5, exitLatencyRow],
			[6, reportedDurationsRow],
			[8, deepStackRow],
			[7, promoteCostRow],
			[9, gcRow],
			[10, workspaceSnapshotRow],
			[11, workspaceRollbackRow],
			[12, exportThroughputRow],
			[13, exportMemoryRow],
			[14, (bench) => pushPullRow(bench, 14)],
			[15, (bench) => importMemoryRow(bench, 15)],
			[16, (bench) => fuseStartupRow(bench, 16)],
			[17, (bench) => fuseWriteRow(bench, 17)],
			[18, (bench) => fusePromoteRow(bench, 18)],
			[3, copyRow],
		];
		const rows: Row[] = [];
		for (const [id, measureRow] of rowFunctions) {
			if (isSelected(id)) {
				rows.push(await measureRow(workspace));
			}
		}

		rows.sort((left, right) => left.id - right.id);
		const output = [...header, formatTable(rows), ''].join('\n');
		process.stdout.write(output);

		const jsonPath = process.env['BENCH_JSON'];
		if (jsonPath) {
			writeFileSync(jsonPath, `${JSON.stringify({environment, rows}, undefined, '\t')}\n`);
			progress(`wrote ${jsonPath}`);
		}
	} finally {
		progress(`removing ${workspace.root}`);
		await waitForQuietStore(workspace.store);
		cleanUp();
	}
}

await main();
