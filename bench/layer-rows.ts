/*
Rows 7-9: layers. What promotion costs as the upper grows, what a stack of the kernel's maximum depth
costs a run, and how fast gc frees unreachable layers next to a plain `rm -rf`.
Each row has its own store under the workspace, so one row's layers never reach another's gc.
*/
import {spawnSync} from 'node:child_process';
import {mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import type {LayerRecord} from '../src/store/layers.js';
import {
	describeFileSystem,
	integerFromEnvironment,
	interleave,
	median,
	progress,
	pseudoRandomBytes,
	type Row,
	ratioRow,
	scratchArguments,
	scratchCommand,
	shellQuote,
	syncAll,
	timeCommand,
	timeScratch,
	type Workspace,
	waitForQuietStore,
	warmups,
} from './harness.js';

// Each promote sample writes 20,000 files and is followed by a gc and a sync, so it gets fewer samples.
export const promoteIterations = integerFromEnvironment('BENCH_PROMOTE_ITERATIONS', 10, 1);
// Samples per side of the --json-file breakdown printed in row 7's note.
const promoteDetailIterations = integerFromEnvironment('BENCH_PROMOTE_DETAIL', 3, 0);
// Each gc/rm sample first creates 20,000 files (untimed, about a second), so it gets fewer samples.
export const gcIterations = integerFromEnvironment('BENCH_GC_ITERATIONS', 5, 1);

const promoteFileCount = 20_000;
/** The kernel's 500 lower layers, less the source tree. */
const deepStackLayers = 499;
const gcLayerCount = 1000;
const gcDirectoriesPerLayer = 2;
const gcFilesPerDirectory = 10;
const gcFileCount = gcLayerCount * gcDirectoriesPerLayer * gcFilesPerDirectory;

/** Layer ids are 6 symbols of this alphabet (src/store/layers.ts); ours are a prefix plus a counter. */
const layerIdAlphabet = '0123456789abcdefghjkmnpqrstvwxyz';

function benchLayerId(prefix: string, index: number): string {
	let text = '';
	let rest = index;
	for (let position = 0; position < 6 - prefix.length; position++) {
		text = `${layerIdAlphabet[rest % layerIdAlphabet.length]}${text}`;
		rest = Math.floor(rest / layerIdAlphabet.length);
	}

	return `${prefix}${text}`;
}

/** Let scratch create a store (format record, dirs) with one discarded run, so rows can fill it directly. */
async function createStore(workspace: Workspace, store: string): Promise<void> {
	await timeScratch(workspace, workspace.smallTree, ['true'], [], store);
	await waitForQuietStore(store);
}

/** Write a layer the way commitLayer does (tree `layers/ID`, record `layers/ID.json`), minus the fsyncs. */
function writeLayer(store: string, record: LayerRecord, populate: (tree: string) => void): void {
	const tree = path.join(store, 'layers', record.id);
	mkdirSync(tree);
	populate(tree);
	writeFileSync(
		path.join(store, 'layers', `${record.id}.json`),
		`${JSON.stringify(record, undefined, '\t')}\n`,
	);
}

/** Point a name at a layer, in the format of src/store/refs.ts (plain names only: no `/`). */
function writeRefFile(store: string, name: string, layer: string): void {
	mkdirSync(path.join(store, 'refs'), {recursive: true});
	writeFileSync(
		path.join(store, 'refs', name),
		`${JSON.stringify({layer, updated: new Date().toISOString()})}\n`,
	);
}

function bareRecord(id: string, lowers: string[]): LayerRecord {
	return {
		id,
		parent: lowers.at(-1) ?? null,
		lowers,
		created: new Date().toISOString(),
		origin: 'run',
		command: ['bench'],
		exitCode: 0,
	};
}

function formatRate(filesPerSecond: number): string {
	return filesPerSecond >= 1000 ? `${(filesPerSecond / 1000).toFixed(1)}k` : filesPerSecond.toFixed(0);
}

/*
Row 7. The command times itself (`date +%s%N` before and after its work, written to a file outside the
view), and the sample is scratch's wall time minus that: everything scratch adds around the command,
including node's start-up, the namespace's teardown (for a promotion scratch waits for the overlay to be
unmounted) and the promotion itself. Not --json-file: with it scratch also walks the upper to report
what was written, a cost the plain command does not pay (shown separately in the note).
*/
export async function promoteCostRow(workspace: Workspace): Promise<Row> {
	progress(`row 7: scratch run --promote: ${promoteFileCount} files written vs 1`);
	const store = path.join(workspace.root, 'store-promote');
	const timesFile = path.join(workspace.root, 'command-times');
	const jsonFile = path.join(workspace.root, 'promote-summary.json');
	const fileSystem = describeFileSystem(workspace.root).label;
	await createStore(workspace, store);

	const script = (count: number) =>
		`s=$(date +%s%N) && mkdir -p out && cd out && awk 'BEGIN { for (i = 1; i <= ${count}; i++) { f = "f" i; print i > f; close(f) } }' && e=$(date +%s%N) && echo "$s $e" > ${shellQuote(timesFile)}`;
	const runArguments = (count: number, extra: string[] = []) =>
		scratchArguments(
			workspace,
			workspace.smallTree,
			['sh', '-c', script(count)],
			['--promote', 'bench-promoted', ...extra],
			store,
		);
	const commandMs = () => {
		const [start, end] = readFileSync(timesFile, 'utf8').trim().split(' ').map(BigInt);
		if (start === undefined || end === undefined) {
			throw new Error(`row 7: ${timesFile} does not hold two timestamps`);
		}

		return Number(end - start) / 1e6;
	};

	const timed = async (count: number, extra: string[] = []) => {
		rmSync(timesFile, {force: true});
		const wallMs = await timeCommand(process.execPath, runArguments(count, extra));
		return {wallMs, commandMs: commandMs()};
	};

	// Untimed: the previous layer (now unreachable, the name was moved) goes, and its deletion is on disk.
	const settle = async () => {
		await waitForQuietStore(store);
		await scratchCommand(workspace, ['gc', '--store', store]);
		syncAll();
	};

	const commandTimes = [[] as number[], [] as number[]];
	const side = (index: number, count: number) => ({
		name: `${count === 1 ? '1 file' : `${count} files`}: scratch wall - command's own time`,
		async sample() {
			const {wallMs, commandMs} = await timed(count);
			commandTimes[index]?.push(commandMs);
			return wallMs - commandMs;
		},
		settle,
		iterations: promoteIterations,
		warmups: Math.min(warmups, 1),
	});
	// The measured samples only: drop the warmups' command times.
	const measured = await interleave('row 7', [side(0, promoteFileCount), side(1, 1)]);
	for (const [index, times] of commandTimes.entries()) {
		times.splice(0, times.length - (measured[index]?.samples.length ?? 0));
	}

	// Where the time goes, from scratch's own --json-file durations (which add a walk of the upper).
	const detail = [promoteFileCount, 1].map(() => ({
		setup: [] as number[],
		unmountWait: [] as number[],
		teardown: [] as number[],
		outside: [] as number[],
	}));
	for (let round = 0; round < promoteDetailIterations; round++) {
		for (const [index, count] of [promoteFileCount, 1].entries()) {
			const {wallMs, commandMs} = await timed(count, ['--json-file', jsonFile]);
			const {durations} = JSON.parse(readFileSync(jsonFile, 'utf8')) as {
				durations: {setupMs: number; commandMs: number; teardownMs: number; totalMs: number};
			};
			const into = detail[index];
			into?.setup.push(durations.setupMs);
			into?.unmountWait.push(durations.commandMs - commandMs);
			into?.teardown.push(durations.teardownMs);
			into?.outside.push(wallMs - commandMs);
			await settle();
		}
	}

	// What a durable promotion would add: syncfs right after writing the same files outside scratch.
	const syncSamples: number[] = [];
	for (let round = 0; round < promoteDetailIterations; round++) {
		const directory = path.join(workspace.root, `sync-probe-${round}`);
		mkdirSync(directory);
		const write = spawnSync(
			'sh',
			['-c', script(promoteFileCount).replace(shellQuote(timesFile), '/dev/null')],
			{
				cwd: directory,
			},
		);
		if (write.status !== 0) {
			throw new Error(`row 7: writing ${promoteFileCount} files in ${directory} failed`);
		}

		syncSamples.push(await timeCommand('sync', ['--file-system', directory]));
		rmSync(directory, {recursive: true, force: true});
		syncAll();
	}

	const pair = (values: (part: (typeof detail)[number]) => number[]) =>
		detail.map((part) => median(values(part)).toFixed(1)).join(' / ');
	const detailNote =
		promoteDetailIterations === 0
			? ''
			: `; with --json-file (n=${promoteDetailIterations}, ${promoteFileCount} files / 1 file): setupMs ${pair((part) => part.setup)}, commandMs minus the command's own time (pid 1 reaping the run and reporting its exit) ${pair((part) => part.unmountWait)}, teardownMs (the walk of the upper for \`written\`, then the promotion: record, rename, ref; no data sync) ${pair((part) => part.teardown)}, wall minus command ${pair((part) => part.outside)} ms; \`sync --file-system\` right after writing the same ${promoteFileCount} files outside scratch: ${median(syncSamples).toFixed(1)} ms`;
	return ratioRow(
		7,
		`\`scratch run --promote NAME\`, scratch's own time (wall minus the command's self-timed run): command wrote ${promoteFileCount} files vs 1 file (store on ${fileSystem})`,
		measured,
		{maximum: 1.2, label: '<= 1.2'},
		`each command times itself with \`date +%s%N\` around its work; the sample is scratch's wall time minus that, so it includes node start-up, setup and the promotion (the kernel's unmount of the overlay runs after scratch exits, as for a discarded run); the same name each time, \`scratch gc\` + \`sync\` after each sample (untimed); the commands' own medians ${commandTimes.map((times) => median(times).toFixed(0)).join(' / ')} ms${detailNote}`,
	);
}

/*
Row 8. The 499-layer chain (and a 1-layer base beside it) is written straight into the store, in the
format commitLayer writes: 499 real promotions would take minutes and measure nothing more.
*/
export async function deepStackRow(workspace: Workspace): Promise<Row> {
	progress(`row 8: scratch run --base over a ${deepStackLayers}-layer chain vs a 1-layer base`);
	const store = path.join(workspace.root, 'store-stack');
	await createStore(workspace, store);
	const ids: string[] = [];
	for (let index = 0; index < deepStackLayers; index++) {
		const id = benchLayerId('b', index);
		writeLayer(store, bareRecord(id, [...ids]), (tree) => {
			writeFileSync(path.join(tree, `layer-${index}.txt`), `layer ${index}\n`);
		});
		ids.push(id);
	}

	const single = benchLayerId('c', 0);
	writeLayer(store, bareRecord(single, []), (tree) => {
		writeFileSync(path.join(tree, 'layer-single.txt'), 'single layer\n');
	});
	writeRefFile(store, 'deep', ids.at(-1) as string);
	writeRefFile(store, 'single', single);
	syncAll();

	// Untimed check that the whole chain is stacked: the source's one file plus one file per layer.
	const countFiles = (base: string, expected: number) =>
		timeScratch(
			workspace,
			workspace.smallTree,
			['sh', '-c', `test "$(ls | wc -l)" -eq ${expected}`],
			['--base', base],
			store,
		);
	await countFiles('deep', deepStackLayers + 1);
	await countFiles('single', 2);
	await waitForQuietStore(store);

	const side = (base: string, label: string) => ({
		name: `scratch run --base ${label} -- true`,
		sample: () => timeScratch(workspace, workspace.smallTree, ['true'], ['--base', base], store),
		settle: () => waitForQuietStore(store),
	});
	const measured = await interleave('row 8', [
		side('deep', `TOP (${deepStackLayers}-layer chain)`),
		side('single', 'ONE (1 layer)'),
	]);
	return ratioRow(
		8,
		`\`scratch run --base TOP -- true\` (1-file src): TOP on a ${deepStackLayers}-layer chain (500 lower dirs with the src) vs a 1-layer base`,
		measured,
		{maximum: 1.5, label: '<= 1.5'},
		`layers written directly in the store (tree with one file + record with parent and lowers, as commitLayer writes them); an untimed run first checks the view holds ${deepStackLayers + 1} files`,
	);
}

/** One gc-row tree: 2 dirs of 10 files, 100-1000 bytes each. */
function populateGcTree(tree: string, content: Buffer, layerIndex: number): void {
	for (let directoryIndex = 0; directoryIndex < gcDirectoriesPerLayer; directoryIndex++) {
		const directory = path.join(tree, `d${directoryIndex}`);
		mkdirSync(directory);
		for (let fileIndex = 0; fileIndex < gcFilesPerDirectory; fileIndex++) {
			const size = 100 + ((layerIndex * 31 + directoryIndex * 7 + fileIndex * 97) % 901);
			writeFileSync(path.join(directory, `f${fileIndex}`), content.subarray(fileIndex, fileIndex + size));
		}
	}
}

/*
Row 9. Each sample first creates (untimed, then synced) the 1,000 trees: as unreachable layers in a store
for gc, as plain directories for rm. Both sides delete the same 20,000 files in 3,000 directories; gc also
deletes the 1,000 records and starts node, and that is part of what a user waits for.
*/
export async function gcRow(workspace: Workspace): Promise<Row> {
	progress(`row 9: scratch gc of ${gcLayerCount} unreachable layers (${gcFileCount} files) vs rm -rf`);
	const store = path.join(workspace.root, 'store-gc');
	const layersDirectory = path.join(store, 'layers');
	const victims = path.join(workspace.root, 'rm-victims');
	await createStore(workspace, store);
	const content = pseudoRandomBytes(2048);
	const ids = Array.from({length: gcLayerCount}, (_, index) => benchLayerId('g', index));

	const expectEmpty = (directory: string, what: string) => {
		const left = readdirSync(directory);
		if (left.length > 0) {
			throw new Error(`row 9: ${what} left ${left.length} entries in ${directory}, e.g. ${left[0]}`);
		}
	};

	const measured = await interleave('row 9', [
		{
			name: `scratch gc (${gcLayerCount} unreachable layers)`,
			async sample() {
				for (const [index, id] of ids.entries()) {
					writeLayer(store, bareRecord(id, []), (tree) => {
						populateGcTree(tree, content, index);
					});
				}

				syncAll();
				const elapsed = await timeCommand(process.execPath, [workspace.cli, 'gc', '--store', store]);
				expectEmpty(layersDirectory, 'scratch gc');
				return elapsed;
			},
			settle: syncAll,
			iterations: gcIterations,
			warmups: Math.min(warmups, 1),
		},
		{
			name: `rm -rf (the same ${gcLayerCount} dirs)`,
			async sample() {
				mkdirSync(victims, {recursive: true});
				const trees = ids.map((id) => path.join(victims, id));
				for (const [index, tree] of trees.entries()) {
					mkdirSync(tree);
					populateGcTree(tree, content, index);
				}

				syncAll();
				const elapsed = await timeCommand('rm', ['-rf', '--', ...trees]);
				expectEmpty(victims, 'rm -rf');
				return elapsed;
			},
			settle: syncAll,
			iterations: gcIterations,
			warmups: Math.min(warmups, 1),
		},
	]);
	const [gc, remove] = measured;
	if (!gc || !remove) {
		throw new Error('row 9: expected two measured sides');
	}

	const rate = (ms: number) => formatRate(gcFileCount / (ms / 1000));
	const row = ratioRow(
		9,
		`\`scratch gc\` of ${gcLayerCount} unreachable layers (${gcFileCount} files in ${gcLayerCount * gcDirectoriesPerLayer} dirs, + ${gcLayerCount} records) vs \`rm -rf\` of the same ${gcLayerCount} dirs`,
		measured,
		{label: 'report'},
		`trees recreated and synced before each sample (untimed); gc's time includes node start-up; files/s counts the ${gcFileCount} files: gc ${rate(gc.medianMs)}/s, rm ${rate(remove.medianMs)}/s`,
	);
	return {
		...row,
		ratioLabel: `${row.ratioLabel} (gc ${rate(gc.medianMs)} files/s, rm ${rate(remove.medianMs)} files/s)`,
	};
}
