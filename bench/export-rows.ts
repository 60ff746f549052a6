/*
Rows 12-13: export. How fast `scratch export` turns a layer of 20,000 small files into a tar next to GNU
tar over the same layer tree, and how much memory it takes for a layer of 1 GiB. Each row has its own
store under the workspace dir, with one layer made by a promoted run.
*/
import {readFileSync, rmSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import {performance} from 'node:perf_hooks';
import {
	describeFileSystem,
	integerFromEnvironment,
	interleave,
	median,
	progress,
	type Row,
	scratchArguments,
	shellQuote,
	syncAll,
	timeCommand,
	type Workspace,
	waitForQuietStore,
} from './harness.js';

// A 1 GiB export takes seconds per sample, so the memory row gets few.
export const exportMemoryIterations = integerFromEnvironment('BENCH_EXPORT_MEMORY_ITERATIONS', 3, 1);

const exportFileCount = 20_000;
const exportDirectories = 200;
const exportFileSize = 4096;

/** Promote a run of `script` (sh) over the 1-file source as `name` in `store`; returns the layer's tree. */
async function promoteLayer(
	workspace: Workspace,
	store: string,
	name: string,
	script: string,
): Promise<string> {
	await timeCommand(
		process.execPath,
		scratchArguments(workspace, workspace.smallTree, ['sh', '-c', script], ['--promote', name], store),
	);
	await waitForQuietStore(store);
	const ref = JSON.parse(readFileSync(path.join(store, 'refs', name), 'utf8')) as {layer: string};
	return path.join(store, 'layers', ref.layer);
}

/** A shell script that writes `count` files of `size` bytes in `directories` directories under `under`/. */
function smallFilesScript(under: string, directories: number, count: number, size: number): string {
	const perDirectory = count / directories;
	// One awk writes them all: a shell loop would spend longer starting processes than writing.
	const awk = `BEGIN { s = sprintf("%${size}s", ""); gsub(/ /, "x", s); for (d = 0; d < ${directories}; d++) for (f = 0; f < ${perDirectory}; f++) { p = "d" d "/f" f; printf "%s", s > p; close(p) } }`;
	return `mkdir -p ${under} && cd ${under} && seq -f 'd%g' 0 ${directories - 1} | xargs mkdir && awk ${shellQuote(awk)}`;
}

/*
Row 12. Both sides write the tar of the same layer tree into a pipe that `cat` drains into /dev/null,
in a shell (`tar -f /dev/null` would not do: GNU tar then skips reading the files). scratch's side is
the whole command, node's start-up included, and it also hashes the tar (its DiffID); a third side
times that start-up alone (`scratch export --help`), shown in the note.
*/
export async function exportThroughputRow(workspace: Workspace): Promise<Row> {
	progress(`row 12: scratch export of a ${exportFileCount}-file layer vs tar -c of its tree`);
	const store = path.join(workspace.root, 'store-export');
	const tree = await promoteLayer(
		workspace,
		store,
		'files',
		smallFilesScript('data', exportDirectories, exportFileCount, exportFileSize),
	);
	syncAll();
	const fileSystem = describeFileSystem(workspace.root).label;
	const inShell = (script: string) => () => timeCommand('sh', ['-c', script]);
	const [scratch, tar, startup] = await interleave('row 12', [
		{
			name: 'scratch export NAME, piped to cat',
			sample: inShell(
				`${shellQuote(process.execPath)} ${shellQuote(workspace.cli)} export files --store ${shellQuote(store)} | cat > /dev/null`,
			),
		},
		{
			name: 'tar -cf - -C TREE ., piped to cat',
			sample: inShell(`tar -cf - -C ${shellQuote(tree)} . | cat > /dev/null`),
		},
		{
			name: 'scratch export --help',
			sample: () => timeCommand(process.execPath, [workspace.cli, 'export', '--help']),
		},
	]);
	if (!scratch || !tar || !startup) {
		throw new Error('row 12: expected three measured sides');
	}

	const throughput = tar.medianMs / scratch.medianMs;
	const withoutStartup = tar.medianMs / (scratch.medianMs - startup.medianMs);
	const megabytes = (exportFileCount * (exportFileSize + 512)) / 1e6;
	return {
		id: 12,
		comparison: `\`scratch export\` of a ${exportFileCount}-file layer (${exportFileCount / exportDirectories} files of ${exportFileSize / 1024} KiB in each of ${exportDirectories} dirs, about ${megabytes.toFixed(0)} MB of tar) vs GNU \`tar -c\` of its tree, both piped into \`cat > /dev/null\` (store on ${fileSystem})`,
		a: scratch,
		b: tar,
		ratio: throughput,
		ratioLabel: `${throughput.toFixed(2)}x tar's throughput (B/A)`,
		target: '>= 0.8x',
		met: throughput >= 0.8,
		note: `scratch's start-up alone (\`scratch export --help\`) has a median of ${startup.medianMs.toFixed(0)} ms; without it scratch reaches ${withoutStartup.toFixed(2)}x tar's throughput. scratch also hashes the whole tar (sha256), which tar does not`,
	};
}

const largeFileCount = 3;
const largeFileMebibytes = 256;
const largeSmallFileCount = 65_536;

/**
A layer of 1 GiB named `name` in `store`: 3 files of 256 MiB (random bytes) and 65,536 files of 4 KiB in
256 dirs; returns the layer's tree. For rows that need a large layer (export here; import could export
it with `scratch export -o` and measure the import of that tar).
*/
export async function createLargeLayer(workspace: Workspace, store: string, name: string): Promise<string> {
	const large = Array.from(
		{length: largeFileCount},
		(_, index) => `head -c ${largeFileMebibytes * 1024 * 1024} /dev/urandom > large-${index}`,
	).join(' && ');
	const tree = await promoteLayer(
		workspace,
		store,
		name,
		`${large} && ${smallFilesScript('small', 256, largeSmallFileCount, 4096)}`,
	);
	syncAll();
	return tree;
}

/**
Peak resident memory (VmHWM, all threads, in bytes) of `node ARGS...` run in a shell as
`node ARGS... SHELL_SUFFIX`, read from /proc/self/status by a preloaded hook as the process exits.
*/
export async function peakResidentMemory(
	workspace: Workspace,
	args: readonly string[],
	shellSuffix = '',
): Promise<number> {
	const hook = path.join(workspace.root, 'export-peak-memory-hook.cjs');
	const report = path.join(workspace.root, 'export-peak-memory.txt');
	writeFileSync(
		hook,
		`process.on('exit', () => { const fs = require('node:fs'); fs.writeFileSync(${JSON.stringify(report)}, /VmHWM:\\s+(\\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]); });\n`,
	);
	rmSync(report, {force: true});
	const command = [process.execPath, '--require', hook, ...args].map((part) => shellQuote(part)).join(' ');
	await timeCommand('sh', ['-c', `${command} ${shellSuffix}`]);
	return Number(readFileSync(report, 'utf8')) * 1024;
}

/*
Row 13. Peak memory of `scratch export` of the 1 GiB layer into a pipe (`| cat > /dev/null`), and of
`--gzip -o FILE` (zlib's buffers, and each slot copied into the stream) into a file in the workspace,
removed after each sample. The columns hold the commands' times; the memory is in the note and decides
the target.
*/
export async function exportMemoryRow(workspace: Workspace): Promise<Row> {
	progress('row 13: peak memory of scratch export of a 1 GiB layer');
	const store = path.join(workspace.root, 'store-export-large');
	await createLargeLayer(workspace, store, 'large');
	const gzipped = path.join(workspace.root, 'export-large.tar.gz');
	const peaks = {plain: [] as number[], gzip: [] as number[]};
	const exportArguments = (extra: string[]) => [workspace.cli, 'export', 'large', '--store', store, ...extra];
	const [plain, gzip] = await interleave('row 13', [
		{
			name: 'scratch export NAME, piped to cat',
			async sample() {
				const started = performance.now();
				peaks.plain.push(await peakResidentMemory(workspace, exportArguments([]), '| cat > /dev/null'));
				return performance.now() - started;
			},
			iterations: exportMemoryIterations,
			warmups: 0,
		},
		{
			name: 'scratch export NAME --gzip -o FILE',
			async sample() {
				const started = performance.now();
				peaks.gzip.push(await peakResidentMemory(workspace, exportArguments(['--gzip', '-o', gzipped])));
				return performance.now() - started;
			},
			settle() {
				rmSync(gzipped, {force: true});
				syncAll();
			},
			iterations: exportMemoryIterations,
			warmups: 0,
		},
	]);
	if (!plain || !gzip) {
		throw new Error('row 13: expected two measured sides');
	}

	rmSync(store, {recursive: true, force: true});
	const megabytes = (bytes: number) => (bytes / 1e6).toFixed(0);
	const highest = Math.max(...peaks.plain, ...peaks.gzip);
	return {
		id: 13,
		comparison: `\`scratch export\` of a 1 GiB layer (${largeFileCount} x ${largeFileMebibytes} MiB + ${largeSmallFileCount} x 4 KiB files): peak RSS (VmHWM); A and B are the commands' times`,
		a: plain,
		b: gzip,
		ratioLabel: '-',
		target: '< 150 MB RSS',
		met: highest < 150e6,
		note: `peak RSS: \`| cat\` median ${megabytes(median(peaks.plain))} MB (max ${megabytes(Math.max(...peaks.plain))}), \`--gzip -o\` median ${megabytes(median(peaks.gzip))} MB (max ${megabytes(Math.max(...peaks.gzip))}); read from /proc/self/status by a preloaded hook at exit (all threads)`,
	};
}
