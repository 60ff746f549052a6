import {mkdirSync, readdirSync, readFileSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import test, {type ExecutionContext} from 'ava';
import {buildOverlayOptions, maxMountOptionsLength} from '../src/run/namespace-plan.js';
import {createLayerId, type LayerRecord, maxLowerLayers, maxStackedLayers} from '../src/store/layers.js';
import {writeRef} from '../src/store/refs.js';
import {openStore} from '../src/store/store.js';
import {
	chownTree,
	eventually,
	hostMountsUnder,
	makeSandbox,
	nobodyId,
	processesWith,
	type Sandbox,
	scratch,
	scratchRun,
	storeLeftovers,
	type User,
	users,
} from './helpers/scratch.js';
import {checkStoreConsistency, completeLayers, refTarget} from './helpers/store-check.js';

/*
Stacks at the kernel's limit, and many runs, promotions and collections on one store at once.
*/

/**
Build a chain of `depth` layers straight into the sandbox's store, as promotions would have left it
(layer i holds the file `fI` and stacks on layers 0..i-1), and name its top `top`. Writing the files
directly takes a second where 499 promotions would take minutes.
*/
async function buildChain(sandbox: Sandbox, depth: number): Promise<string[]> {
	const store = await openStore(sandbox.store);
	const ids: string[] = [];
	const used = new Set<string>();
	for (let index = 0; index < depth; index++) {
		let id = createLayerId();
		while (used.has(id)) {
			id = createLayerId();
		}

		used.add(id);
		mkdirSync(path.join(store.layersDir, id), {mode: 0o755});
		writeFileSync(path.join(store.layersDir, id, `f${index}`), `${index}\n`);
		const record: LayerRecord = {
			id,
			parent: ids.at(-1) ?? null,
			lowers: [...ids],
			created: new Date().toISOString(),
			origin: 'run',
			command: ['sh', '-c', `echo ${index} > f${index}`],
		};
		writeFileSync(path.join(store.layersDir, `${id}.json`), `${JSON.stringify(record)}\n`, {mode: 0o600});
		ids.push(id);
	}

	await writeRef(store, 'top', ids.at(-1) as string);
	if (sandbox.user === 'nobody') {
		chownTree(sandbox.store, nobodyId);
	}

	return ids;
}

/** The overlay's mount options as the kernel shows them inside the run (the super options of mountinfo). */
const printOverlayOptions = `grep ' - overlay scratch ' /proc/self/mountinfo | sed 's/.* - overlay scratch //'`;

for (const user of users) {
	test(`a run stacks ${maxStackedLayers} layers over the source: the kernel's limit of ${maxLowerLayers} lower layers (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const ids = await buildChain(sandbox, maxStackedLayers);
		const result = await scratchRun(sandbox, [
			'--base',
			'top',
			'--',
			'sh',
			'-c',
			`ls | wc -l; cat f0 f${maxStackedLayers - 1}; ${printOverlayOptions}`,
		]);
		t.is(result.exitCode, 0, String(result.stderr));
		const [count, first, last, options] = String(result.stdout).split('\n');
		t.is(Number(count), maxStackedLayers + readdirSync(sandbox.src).length);
		t.is(first, '0');
		t.is(last, String(maxStackedLayers - 1));

		// Top layer first, the source (fd 5) last: 500 lower layers, named by their short ids.
		const lowerdir = /(?:^|,)lowerdir=([^,]*)/.exec(options ?? '')?.[1] ?? '';
		t.deepEqual(lowerdir.split(':'), [...[...ids].reverse(), '/proc/self/fd/5']);
		const passed = buildOverlayOptions({volatile: true, layers: ids, runId: 'x'.repeat(12)});
		t.true(passed.length <= maxMountOptionsLength, `${passed.length} bytes`);

		t.deepEqual(hostMountsUnder(sandbox.root), []);
		t.deepEqual(readdirSync(path.join(sandbox.store, 'runs')), []);
		t.deepEqual(checkStoreConsistency(sandbox.store), []);
	});

	test(`a stack one layer deeper than the kernel allows fails before mounting, with one line that points to squash (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		await buildChain(sandbox, maxStackedLayers + 1);
		const result = await scratchRun(sandbox, ['--base', 'top', '--', 'sh', '-c', 'echo ran > ran']);
		t.is(result.exitCode, 125);
		t.is(result.stdout, '');
		const lines = String(result.stderr).split('\n');
		t.is(lines.length, 1, String(result.stderr));
		t.regex(lines[0] ?? '', /^scratch: .*500 layers.*scratch squash/);
		t.deepEqual(readdirSync(path.join(sandbox.store, 'runs')), []);
		t.deepEqual(readdirSync(path.join(sandbox.store, 'tmp')), []);
		t.deepEqual(hostMountsUnder(sandbox.root), []);
	});
}

/**
A shell snippet that checks in at a barrier (a directory shared by every command of the test, outside
the views) and waits until `count` entries are there, so all commands run at the same time. Bounded: it
gives up with status 99 after about a minute rather than hanging the test.
*/
function barrierScript(barrier: string, me: string, count: number): string {
	return [
		`mkdir '${barrier}/${me}' || exit 98`,
		'i=0',
		`while set -- '${barrier}'/*; [ "$#" -lt ${count} ]; do`,
		'i=$((i + 1)); [ "$i" -le 3000 ] || { echo "barrier: only $# arrived" >&2; exit 99; }',
		'sleep 0.02',
		'done',
	].join('\n');
}

/**
Run `gc` again and again until `stop()` says so, keeping every result. Once a whole collection has run
while all `count` commands were waiting at the barrier (so their runs were live and their bases in use),
it adds the barrier's last entry, which lets them go on.
*/
function gcLoop(
	sandbox: Sandbox,
	{barrier, count, stop}: {barrier: string; count: number; stop: () => boolean},
) {
	const results: Array<{exitCode?: number; stdout: unknown; stderr: unknown}> = [];
	const done = (async () => {
		while (!stop()) {
			const allArrived = readdirSync(barrier).length >= count;
			results.push(await scratch(sandbox, ['gc', '--store', sandbox.store, '--json']));
			if (allArrived) {
				mkdirSync(path.join(barrier, 'collected'), {recursive: true});
			}
		}
	})();
	return {results, done};
}

async function concurrentRunsAndPromotions(
	t: ExecutionContext,
	user: User,
	{runs, promotions}: {runs: number; promotions: number},
): Promise<void> {
	const sandbox = makeSandbox(t, user);
	for (const [name, file, bases] of [
		['b1', 'base1', []],
		['b2', 'base2', ['--base', 'b1']],
	] as const) {
		const made = await scratchRun(sandbox, [
			...bases,
			'--promote',
			name,
			'--',
			'sh',
			'-c',
			`echo ${file} > ${file}`,
		]);
		t.is(made.exitCode, 0, String(made.stderr));
	}

	const bases = [refTarget(sandbox.store, 'b1'), refTarget(sandbox.store, 'b2')];
	const barrier = path.join(sandbox.root, 'barrier');
	mkdirSync(barrier);
	if (user === 'nobody') {
		chownTree(barrier, nobodyId);
	}

	const total = runs + promotions;
	const baseArguments = ['--base', 'b1', '--base', 'b2'];
	let finished = false;
	const collector = gcLoop(sandbox, {barrier, count: total, stop: () => finished});
	const runResults = Array.from({length: runs}, (_, index) =>
		scratchRun(sandbox, [
			...baseArguments,
			'--',
			'sh',
			'-c',
			`${barrierScript(barrier, `run-${index}`, total + 1)}\ncat base1 base2; echo junk > junk-${index}; ls`,
		]),
	);
	const promotionResults = Array.from({length: promotions}, (_, index) =>
		scratchRun(sandbox, [
			...baseArguments,
			'--promote',
			'shared',
			'--',
			'sh',
			'-c',
			`${barrierScript(barrier, `promotion-${index}`, total + 1)}\necho ${index} > marker-${index}`,
		]),
	);
	let all: Awaited<(typeof runResults)[number]>[];
	try {
		all = await Promise.all([...runResults, ...promotionResults]);
	} finally {
		finished = true;
		await collector.done;
	}

	t.is(readdirSync(barrier).length, total + 1, 'every command and one whole collection reached the barrier');
	const sourceEntries = readdirSync(sandbox.src);
	for (const [index, result] of all.slice(0, runs).entries()) {
		t.is(result.exitCode, 0, String(result.stderr));
		const listing = ['base1', 'base2', `junk-${index}`, ...sourceEntries].sort();
		t.is(result.stdout, ['base1', 'base2', ...listing].join('\n'));
	}

	const promotedBy = new Map<string, number>();
	for (const [index, result] of all.slice(runs).entries()) {
		t.is(result.exitCode, 0, String(result.stderr));
		const layer = /promoted the run's writes as shared \(layer ([\da-z]{6})\)/.exec(
			String(result.stderr),
		)?.[1];
		t.truthy(layer, String(result.stderr));
		promotedBy.set(layer as string, index);
	}

	t.is(promotedBy.size, promotions, 'every promotion made its own layer');

	// The name ends on one of them, whole: exactly that promoter's marker, on top of both bases.
	const winner = refTarget(sandbox.store, 'shared') as string;
	const index = promotedBy.get(winner);
	t.not(index, undefined, `shared points at ${winner}, which no promotion reported`);
	const layerTree = path.join(sandbox.store, 'layers', winner);
	t.deepEqual(readdirSync(layerTree), [`marker-${index}`]);
	t.is(readFileSync(path.join(layerTree, `marker-${index}`), 'utf8'), `${index}\n`);
	const record = JSON.parse(readFileSync(`${layerTree}.json`, 'utf8')) as LayerRecord;
	t.deepEqual(record.lowers, bases);

	// Every collection succeeded; together with a last one, they freed exactly the layers that lost.
	const final = await scratch(sandbox, ['gc', '--store', sandbox.store, '--json']);
	const collections = [...collector.results, final];
	t.true(collector.results.length > 0, 'gc ran while the runs did');
	const freed: string[] = [];
	for (const collection of collections) {
		t.is(collection.exitCode, 0, String(collection.stderr));
		if (collection.exitCode !== 0) {
			continue;
		}

		const report = JSON.parse(String(collection.stdout)) as {layers: string[]; halfMadeLayers: string[]};
		freed.push(...report.layers);
		t.deepEqual(report.halfMadeLayers, []);
	}

	t.log(
		`${collector.results.length} collections ran with the runs; the last one freed ${JSON.stringify(JSON.parse(String(final.stdout)).layers)}`,
	);
	const losers = [...promotedBy.keys()].filter((id) => id !== winner).sort();
	t.deepEqual(freed.sort(), losers);
	t.deepEqual(completeLayers(sandbox.store), [...bases, winner].sort());
	t.deepEqual(checkStoreConsistency(sandbox.store), []);

	t.deepEqual(hostMountsUnder(sandbox.root), []);
	t.true(await eventually(() => processesWith(barrier).length === 0), 'no command outlived its run');
	t.true(await eventually(() => processesWith(sandbox.store).length === 0), 'no scratch outlived its run');
	t.true(
		await eventually(() => storeLeftovers(sandbox.store).length === 0, 20_000),
		storeLeftovers(sandbox.store).join(),
	);
}

test('32 runs over the same stacked bases, 8 promotions to one name and a gc loop all at once leave one whole winner and a consistent store (root)', async (t) => {
	await concurrentRunsAndPromotions(t, 'root', {runs: 32, promotions: 8});
});

test('8 runs, 4 promotions to one name and a gc loop at once leave one whole winner and a consistent store (nobody)', async (t) => {
	await concurrentRunsAndPromotions(t, 'nobody', {runs: 8, promotions: 4});
});
