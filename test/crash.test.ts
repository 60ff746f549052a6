import {existsSync, readdirSync, readFileSync, watch} from 'node:fs';
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import test, {type ExecutionContext} from 'ava';
import type {ResultPromise} from 'execa';
import type {RunRecord} from '../src/store/runs.js';
import {openStore} from '../src/store/store.js';
import {holdStoreCollection} from '../src/store/use-lock.js';
import {promoteLayer} from './helpers/layers.js';
import {
	eventually,
	hostMountsUnder,
	makeSandbox,
	processesWith,
	type Sandbox,
	scratch,
	scratchRun,
	type User,
	uniqueSleep,
	users,
	waitForLine,
} from './helpers/scratch.js';
import {assertStoreAtRest, checkStoreConsistency, completeLayers, refTarget} from './helpers/store-check.js';

/*
Faults: `SCRATCH_CRASH_AT=STEP` makes scratch SIGKILL itself at that step (src/system/crash-point.ts),
as a power cut or the OOM killer would. Whatever the step, `gc` afterwards must leave a consistent store
in which every name points at either what it pointed at before or the new layer, whole, and nothing that
was recorded (a name, a layer something reaches, a kept run) is lost.
*/

type Result = Awaited<ReturnType<typeof scratch>>;

/** Run `--promote NAME` writing `files` (name -> content); returns the layer the name then points at. */
async function promote(
	t: ExecutionContext,
	sandbox: Sandbox,
	name: string,
	files: Record<string, string>,
	bases: string[] = [],
): Promise<string> {
	const script = Object.entries(files)
		.map(([file, content]) => `echo ${content} > ${file}`)
		.join('; ');
	await promoteLayer(t, sandbox, name, script, bases);
	return refTarget(sandbox.store, name) as string;
}

/** Keep a run that writes `content` = `text`; returns its id. */
async function keepRun(t: ExecutionContext, sandbox: Sandbox, text: string): Promise<string> {
	const result = await scratchRun(sandbox, ['--keep', '--', 'sh', '-c', `echo ${text} > content`]);
	t.is(result.exitCode, 0, String(result.stderr));
	const runId = /kept run ([\da-z]+)/.exec(String(result.stderr))?.[1];
	t.truthy(runId, String(result.stderr));
	return runId as string;
}

function crashEnvironment(step: string) {
	return {env: {SCRATCH_CRASH_AT: step}};
}

function assertKilled(t: ExecutionContext, result: Result, step: string): void {
	t.is(result.signal, 'SIGKILL', `scratch was to kill itself at ${step}: ${String(result.stderr)}`);
	t.is(result.exitCode, undefined);
}

function layerFile(sandbox: Sandbox, layer: string, file = 'content'): string {
	return readFileSync(path.join(sandbox.store, 'layers', layer, file), 'utf8');
}

function keptDirectory(sandbox: Sandbox, runId: string): string {
	return path.join(sandbox.store, 'kept', runId);
}

function keptRecord(sandbox: Sandbox, runId: string): RunRecord {
	return JSON.parse(readFileSync(path.join(keptDirectory(sandbox, runId), 'run.json'), 'utf8')) as RunRecord;
}

/** Layer records whose tree is missing: what a crash between record and rename leaves. */
function recordsWithoutTree(sandbox: Sandbox): string[] {
	const layersDirectory = path.join(sandbox.store, 'layers');
	return readdirSync(layersDirectory)
		.filter((name) => name.endsWith('.json') && !existsSync(path.join(layersDirectory, name.slice(0, -5))))
		.map((name) => name.slice(0, -5));
}

async function collect(
	t: ExecutionContext,
	sandbox: Sandbox,
): Promise<{
	layers: string[];
	halfMadeLayers: string[];
	repairedRuns: string[];
	deadRuns: string[];
	abandonedTemporary: string[];
}> {
	const gc = await scratch(sandbox, ['gc', '--store', sandbox.store, '--json']);
	t.is(gc.exitCode, 0, String(gc.stderr));
	return JSON.parse(String(gc.stdout)) as Awaited<ReturnType<typeof collect>>;
}

/** What `cat FILES` prints in a run on top of NAME. */
async function seenThrough(t: ExecutionContext, sandbox: Sandbox, name: string, files = ['content']) {
	const result = await scratchRun(sandbox, ['--base', name, '--', 'cat', ...files]);
	t.is(result.exitCode, 0, String(result.stderr));
	return String(result.stdout);
}

/** Where a crashed `run --promote` must leave the name: steps before the ref is written keep the old layer. */
const runPromotionSteps = [
	['layer-recorded', 'old'],
	['layer-committed', 'old'],
	['promote-before-ref', 'old'],
	['promote-ref-written', 'new'],
] as const;

/** Where a crashed `promote RUN-ID NAME` must leave things: the kept run as it was, or the name on its layer. */
const keptPromotionSteps = [
	['promote-intent-recorded', 'kept'],
	['layer-recorded', 'kept'],
	['layer-committed', 'kept'],
	['promote-before-ref', 'kept'],
	['promote-ref-written', 'named'],
] as const;

const gcSteps = ['gc-marked', 'gc-swept'] as const;

/** Which crash tests run as the unprivileged user (all of them run as root). */
const asNobody = new Set([
	'run:layer-recorded',
	'run:promote-before-ref',
	'run:promote-ref-written',
	'kept:promote-intent-recorded',
	'kept:layer-committed',
	'kept:promote-ref-written',
	'gc:gc-swept',
]);

function usersFor(key: string): User[] {
	return users.filter((user) => user === 'root' || asNobody.has(key));
}

test('every crash point in the source is exercised by a test here', (t) => {
	const sourceDirectory = fileURLToPath(new URL('../src', import.meta.url));
	const steps = new Set<string>();
	for (const entry of readdirSync(sourceDirectory, {recursive: true, withFileTypes: true})) {
		if (entry.isFile() && entry.name.endsWith('.ts')) {
			const text = readFileSync(path.join(entry.parentPath, entry.name), 'utf8');
			for (const match of text.matchAll(/crashPoint\('([\w-]+)'\)/g)) {
				steps.add(match[1] as string);
			}
		}
	}

	const exercised = new Set<string>([
		...runPromotionSteps.map(([step]) => step),
		...keptPromotionSteps.map(([step]) => step),
		...gcSteps,
	]);
	// The workspace steps (ws-*) are exercised by workspace-crash.test.ts, which checks them the same way,
	// the pull steps (pull-*) by registry.test.ts, against a real registry, and a run's own steps (run-*,
	// keep-*) by faults.test.ts, with every backend.
	t.deepEqual([...steps].filter((step) => !/^(ws|pull|run|keep)-/.test(step)).sort(), [...exercised].sort());
});

for (const [step, outcome] of runPromotionSteps) {
	for (const user of usersFor(`run:${step}`)) {
		test(`a run --promote killed at ${step} leaves the name on its ${outcome} layer once gc has run (${user})`, async (t) => {
			const sandbox = makeSandbox(t, user);
			const oldLayer = await promote(t, sandbox, 'app', {content: 'old'});
			const crash = await scratchRun(
				sandbox,
				['--promote', 'app', '--', 'sh', '-c', 'echo new > content'],
				crashEnvironment(step),
			);
			assertKilled(t, crash, step);

			// It died where it was told to, leaving its dead run and the layer in the making.
			t.true(checkStoreConsistency(sandbox.store).some((problem) => /^run \w+ is left over/.test(problem)));
			const others = completeLayers(sandbox.store).filter((id) => id !== oldLayer);
			if (step === 'layer-recorded') {
				t.is(recordsWithoutTree(sandbox).length, 1);
				t.deepEqual(others, []);
			} else {
				t.is(others.length, 1);
				t.is(layerFile(sandbox, others[0] as string), 'new\n');
			}

			t.is(refTarget(sandbox.store, 'app') === oldLayer, outcome === 'old');

			const report = await collect(t, sandbox);
			t.is(report.deadRuns.length, 1);
			await assertStoreAtRest(t, sandbox);
			const target = refTarget(sandbox.store, 'app') as string;
			if (outcome === 'old') {
				t.is(target, oldLayer);
				t.deepEqual(completeLayers(sandbox.store), [oldLayer]);
			} else {
				t.deepEqual(completeLayers(sandbox.store), [target], 'the replaced layer was freed');
			}

			t.is(layerFile(sandbox, target), `${outcome}\n`);
			t.is(await seenThrough(t, sandbox, 'app'), outcome);
		});
	}
}

/** Keep a run and crash `promote RUN-ID app` at `step`, `app` pointing at an older layer. */
async function crashKeptPromotion(t: ExecutionContext, sandbox: Sandbox, step: string) {
	const oldLayer = await promote(t, sandbox, 'app', {content: 'old'});
	const runId = await keepRun(t, sandbox, 'new');
	const crash = await scratch(
		sandbox,
		['promote', '--store', sandbox.store, runId, 'app'],
		crashEnvironment(step),
	);
	assertKilled(t, crash, step);
	return {oldLayer, runId};
}

for (const [step, outcome] of keptPromotionSteps) {
	for (const user of usersFor(`kept:${step}`)) {
		test(`promote of a kept run killed at ${step} leaves ${outcome === 'kept' ? 'the kept run whole and promotable' : 'the name on its layer'} once gc has run (${user})`, async (t) => {
			const sandbox = makeSandbox(t, user);
			const {oldLayer, runId} = await crashKeptPromotion(t, sandbox, step);

			// It died where it was told to.
			const upper = path.join(keptDirectory(sandbox, runId), 'upper');
			const upperMoved = ['layer-committed', 'promote-before-ref', 'promote-ref-written'].includes(step);
			t.is(existsSync(upper), !upperMoved);
			t.truthy(keptRecord(sandbox, runId).promotion, 'the intent was recorded');
			t.is(recordsWithoutTree(sandbox).length, step === 'layer-recorded' ? 1 : 0);
			t.is(refTarget(sandbox.store, 'app') === oldLayer, step !== 'promote-ref-written');

			const report = await collect(t, sandbox);
			t.deepEqual(report.repairedRuns, upperMoved && outcome === 'kept' ? [runId] : []);
			await assertStoreAtRest(t, sandbox);
			if (outcome === 'kept') {
				t.is(refTarget(sandbox.store, 'app'), oldLayer);
				t.deepEqual(completeLayers(sandbox.store), [oldLayer]);
				t.is(readFileSync(path.join(upper, 'content'), 'utf8'), 'new\n');
				t.is(keptRecord(sandbox, runId).promotion, undefined);

				const again = await scratch(sandbox, ['promote', '--store', sandbox.store, runId, 'app']);
				t.is(again.exitCode, 0, String(again.stderr));
				t.false(existsSync(keptDirectory(sandbox, runId)));
				await collect(t, sandbox);
				await assertStoreAtRest(t, sandbox);
			} else {
				t.false(existsSync(keptDirectory(sandbox, runId)), 'the promoted run is gone');
			}

			const target = refTarget(sandbox.store, 'app') as string;
			t.not(target, oldLayer);
			t.deepEqual(completeLayers(sandbox.store), [target]);
			t.is(layerFile(sandbox, target), 'new\n');
			t.is(await seenThrough(t, sandbox, 'app'), 'new');
		});
	}
}

for (const [step] of keptPromotionSteps) {
	test(`promoting a kept run again right after a promote killed at ${step} finishes the job (root)`, async (t) => {
		const sandbox = makeSandbox(t, 'root');
		const {oldLayer, runId} = await crashKeptPromotion(t, sandbox, step);
		const again = await scratch(sandbox, ['promote', '--store', sandbox.store, runId, 'app']);
		t.is(again.exitCode, 0, String(again.stderr));
		const target = refTarget(sandbox.store, 'app') as string;
		t.not(target, oldLayer);
		t.is(layerFile(sandbox, target), 'new\n');
		t.false(existsSync(keptDirectory(sandbox, runId)));

		await collect(t, sandbox);
		await assertStoreAtRest(t, sandbox);
		t.deepEqual(completeLayers(sandbox.store), [target]);
		t.is(await seenThrough(t, sandbox, 'app'), 'new');
	});
}

test('a promote of a kept run records its intent only once it holds the store, so gc never undoes a live one (root)', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	const oldLayer = await promote(t, sandbox, 'app', {content: 'old'});
	const runId = await keepRun(t, sandbox, 'new');
	const store = await openStore(sandbox.store);
	const announced: string[] = [];
	const watcher = watch(store.locksDir, (_event, name) => {
		announced.push(String(name));
	});
	t.teardown(() => watcher.close());
	// The test is the collector: between its mark and its sweep, as far as the promotion can tell.
	const collection = await holdStoreCollection(store);
	let held = true;
	const release = () => {
		if (held) {
			held = false;
			collection.release();
		}
	};
	t.teardown(release);

	const promotion = scratch(
		sandbox,
		['promote', '--store', sandbox.store, runId, 'app'],
		crashEnvironment('promote-before-ref'),
	);
	const announcedByPromotion = () =>
		announced.some((name) => name.startsWith('use.') && name.split('.')[2] === String(promotion.pid));
	t.true(await eventually(announcedByPromotion, 20_000), 'the promotion asked for the store');
	t.is(keptRecord(sandbox, runId).promotion, undefined, 'no intent while a collector holds the store');
	t.is(promotion.exitCode, null, 'the promotion waits for the collector');
	release();
	assertKilled(t, await promotion, 'promote-before-ref');

	const report = await collect(t, sandbox);
	t.deepEqual(report.repairedRuns, [runId]);
	await assertStoreAtRest(t, sandbox);
	t.is(refTarget(sandbox.store, 'app'), oldLayer);
	const again = await scratch(sandbox, ['promote', '--store', sandbox.store, runId, 'app']);
	t.is(again.exitCode, 0, String(again.stderr));
	t.is(await seenThrough(t, sandbox, 'app'), 'new');
});

/**
A store with something of everything gc deals with: named layers and a stack, a layer reached only as
another's lower, unreachable layers, dead runs (one with a half-made layer, one with a whole unnamed
one), a kept run and a kept run whose promotion was interrupted.
*/
async function untidyStore(t: ExecutionContext, sandbox: Sandbox) {
	const keep = await promote(t, sandbox, 'keep', {'keep.txt': 'keep'});
	const child = await promote(t, sandbox, 'child', {'child.txt': 'child'}, ['keep']);
	const lowerOnly = await promote(t, sandbox, 'base2', {'base2.txt': 'base2'});
	const onLowerOnly = await promote(t, sandbox, 'onbase2', {'on.txt': 'on'}, ['base2']);
	const gone = await promote(t, sandbox, 'gone', {content: 'gone'});
	const replaced = await promote(t, sandbox, 'again', {content: 'first'});
	const again = await promote(t, sandbox, 'again', {content: 'second'});
	const removed = await scratch(sandbox, ['rm', '--store', sandbox.store, 'base2', 'gone']);
	t.is(removed.exitCode, 0, String(removed.stderr));
	// Kept first: a run that finishes moves dead runs' leftovers to the trash on its way out.
	const kept = await keepRun(t, sandbox, 'kept');
	const interrupted = await keepRun(t, sandbox, 'interrupted');
	for (const step of ['layer-recorded', 'layer-committed']) {
		const crash = await scratchRun(
			sandbox,
			['--promote', 'dead', '--', 'sh', '-c', 'echo dead > content'],
			crashEnvironment(step),
		);
		assertKilled(t, crash, step);
	}

	const [unnamed] = completeLayers(sandbox.store).filter(
		(id) => ![keep, child, lowerOnly, onLowerOnly, gone, replaced, again].includes(id),
	);
	const crash = await scratch(
		sandbox,
		['promote', '--store', sandbox.store, interrupted, 'interrupted'],
		crashEnvironment('promote-before-ref'),
	);
	assertKilled(t, crash, 'promote-before-ref');
	return {
		names: {keep, child, onbase2: onLowerOnly, again},
		survivors: [keep, child, lowerOnly, onLowerOnly, again],
		garbage: [gone, replaced, unnamed as string, ...recordsWithoutTree(sandbox)],
		kept,
		interrupted,
	};
}

for (const step of gcSteps) {
	for (const user of usersFor(`gc:${step}`)) {
		test(`gc killed at ${step} and run again frees what is unreachable and keeps every name, stack and kept run (${user})`, async (t) => {
			const sandbox = makeSandbox(t, user);
			const {names, survivors, garbage, kept, interrupted} = await untidyStore(t, sandbox);
			t.is(garbage.length, 4);
			t.is(readdirSync(path.join(sandbox.store, 'runs')).length, 2);

			const crash = await scratch(sandbox, ['gc', '--store', sandbox.store], crashEnvironment(step));
			assertKilled(t, crash, step);
			// It died where it was told to: after repairing and marking, or after sweeping into tmp/.
			t.true(existsSync(path.join(keptDirectory(sandbox, interrupted), 'upper')), 'the repair came first');
			t.is(
				readdirSync(path.join(sandbox.store, 'tmp')).some((name) => name.startsWith('gc.')),
				step === 'gc-swept',
			);

			await collect(t, sandbox);
			await assertStoreAtRest(t, sandbox);
			for (const [name, layer] of Object.entries(names)) {
				t.is(refTarget(sandbox.store, name), layer, name);
			}

			t.is(refTarget(sandbox.store, 'base2'), undefined);
			t.is(refTarget(sandbox.store, 'dead'), undefined);
			t.is(refTarget(sandbox.store, 'interrupted'), undefined);
			t.deepEqual(completeLayers(sandbox.store), [...survivors].sort());
			for (const layer of garbage) {
				t.false(existsSync(path.join(sandbox.store, 'layers', layer)), layer);
			}

			t.is(await seenThrough(t, sandbox, 'child', ['keep.txt', 'child.txt']), 'keep\nchild');
			t.is(await seenThrough(t, sandbox, 'onbase2', ['base2.txt', 'on.txt']), 'base2\non');
			t.is(await seenThrough(t, sandbox, 'again'), 'second');
			for (const [runId, text] of [
				[kept, 'kept'],
				[interrupted, 'interrupted'],
			] as const) {
				t.is(readFileSync(path.join(keptDirectory(sandbox, runId), 'upper/content'), 'utf8'), `${text}\n`);
				const promoted = await scratch(sandbox, ['promote', '--store', sandbox.store, runId, text]);
				t.is(promoted.exitCode, 0, String(promoted.stderr));
				t.is(await seenThrough(t, sandbox, text), text);
			}

			await collect(t, sandbox);
			await assertStoreAtRest(t, sandbox);
		});
	}
}

for (const user of users) {
	test(`SIGKILL of a run --promote while its command runs leaves the name as it was, and gc cleans up (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const oldLayer = await promote(t, sandbox, 'app', {content: 'old'});
		const sleep = uniqueSleep();
		const run = scratchRun(
			sandbox,
			['--promote', 'app', '--', 'sh', '-c', `echo new > content; sleep ${sleep} & echo ready; wait`],
			{buffer: false},
		) as unknown as ResultPromise;
		await waitForLine(run, 'ready');
		run.kill('SIGKILL');
		const result = await run;
		t.is(result.signal, 'SIGKILL');
		t.true(await eventually(() => processesWith(sleep).length === 0), 'the command died with scratch');
		t.deepEqual(hostMountsUnder(sandbox.root), []);
		t.is(refTarget(sandbox.store, 'app'), oldLayer);

		const report = await collect(t, sandbox);
		t.is(report.deadRuns.length, 1);
		await assertStoreAtRest(t, sandbox);
		t.deepEqual(completeLayers(sandbox.store), [oldLayer]);
		t.is(await seenThrough(t, sandbox, 'app'), 'old');
	});
}
