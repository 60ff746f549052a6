import {existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import test from 'ava';
import {InvalidNameError, LimitError, NotFoundError} from '../src/errors.js';
import {
	checkStackDepth,
	combineStacks,
	commitLayer,
	createLayerId,
	isLayerId,
	type LayerRecord,
	maxStackedLayers,
	readLayer,
	scanLayers,
	stackOf,
} from '../src/store/layers.js';
import {leaseName} from '../src/store/lease-names.js';
import {writeRef} from '../src/store/refs.js';
import {resolveBases, resolveLayer} from '../src/store/resolve.js';
import type {Store} from '../src/store/store.js';
import {holdStoreCollection, holdStoreUse, type StoreHold} from '../src/store/use-lock.js';
import {currentProcessIdentity} from '../src/system/process-identity.js';
import {eventually} from './helpers/scratch.js';
import {deadIdentity, temporaryStore} from './helpers/store-fixtures.js';

/** Commit a layer with one file, on top of `lowers` (bottom first). */
async function makeLayer(store: Store, lowers: string[] = [], file = 'f'): Promise<LayerRecord> {
	const tree = mkdtempSync(path.join(store.tmpDir, 'tree-'));
	writeFileSync(path.join(tree, file), file);
	return commitLayer(store, tree, {
		parent: lowers.at(-1) ?? null,
		lowers,
		created: new Date().toISOString(),
		origin: 'run',
		command: ['true'],
	});
}

/** The store's holders' lock files (users' and collectors'). */
function holders(store: Store): string[] {
	return readdirSync(store.locksDir).filter((name) => name.startsWith('use.') || name.startsWith('gc.'));
}

/** Whether a promise has settled by now (settled ones resolve within a turn of the event loop). */
async function isSettled(promise: Promise<unknown>): Promise<boolean> {
	const pending = Symbol('pending');
	const winner = await Promise.race([promise.then(() => 'settled'), Promise.resolve(pending)]);
	return winner !== pending;
}

test('isLayerId accepts exactly six symbols of the run-id alphabet', (t) => {
	const table: Array<[string, boolean]> = [
		['abcdef', true],
		['012345', true],
		['zyxwvt', true],
		['a1b2c3', true],
		['abcde', false],
		['abcdefg', false],
		['', false],
		['ABCDEF', false],
		['abcdei', false],
		['abcdel', false],
		['abcdeo', false],
		['abcdeu', false],
		['abc-ef', false],
		['abc.ef', false],
		['../abc', false],
		['abcdef.json', false],
	];
	for (const [text, expected] of table) {
		t.is(isLayerId(text), expected, text);
	}

	for (let index = 0; index < 50; index++) {
		const id = createLayerId();
		t.true(isLayerId(id), id);
	}
});

test('combineStacks stacks in order and keeps a layer that appears twice at its highest place', (t) => {
	const table: Array<[string[][], string[]]> = [
		[[], []],
		[[[]], []],
		[[['a']], ['a']],
		[
			[['a'], ['b']],
			['a', 'b'],
		],
		[
			[['a', 'b'], ['c']],
			['a', 'b', 'c'],
		],
		// --base deps --base tools, tools built on deps: deps once, below tools.
		[
			[['deps'], ['deps', 'tools']],
			['deps', 'tools'],
		],
		// --base tools --base deps: deps is asked for higher, so it goes above tools.
		[
			[['deps', 'tools'], ['deps']],
			['tools', 'deps'],
		],
		[
			[
				['a', 'b'],
				['a', 'c'],
			],
			['b', 'a', 'c'],
		],
		[[['a'], ['a'], ['a']], ['a']],
		[
			[['x', 'y', 'z'], ['y'], ['w']],
			['x', 'z', 'y', 'w'],
		],
	];
	for (const [stacks, expected] of table) {
		t.deepEqual(combineStacks(stacks), expected, JSON.stringify(stacks));
	}
});

test('stackOf puts a layer above its lowers', (t) => {
	const layer = {id: 'cccccc', parent: 'bbbbbb', lowers: ['aaaaaa', 'bbbbbb']} as LayerRecord;
	t.deepEqual(stackOf(layer), ['aaaaaa', 'bbbbbb', 'cccccc']);
});

test('checkStackDepth accepts 499 layers over the source and refuses 500 with a pointer to scratch squash', (t) => {
	t.is(maxStackedLayers, 499);
	t.notThrows(() => checkStackDepth(0, '--base x'));
	t.notThrows(() => checkStackDepth(499, '--base x'));
	for (const count of [500, 501, 10_000]) {
		const error = t.throws(() => checkStackDepth(count, '--base deep'), {instanceOf: LimitError});
		t.is(error?.code, 'ERR_SCRATCH_LIMIT');
		t.regex(
			error?.message ?? '',
			new RegExp(`^--base deep stacks ${count} layers over the source, more than`),
		);
		t.regex(error?.message ?? '', /scratch squash NAME --as NEW$/);
	}
});

test('scanLayers tells complete layers from half-made ones and temporary entries', async (t) => {
	const store = await temporaryStore(t);
	t.deepEqual(scanLayers(store), {complete: [], halfMade: [], temporary: []});
	const layer = await makeLayer(store);
	mkdirSync(path.join(store.layersDir, 'ghjkmn'));
	writeFileSync(path.join(store.layersDir, 'pqrstv.json'), '{}');
	const temporaryNames = [
		`.${layer.id}.json.123.abcdefghij.tmp`,
		'notalayer',
		'ABCDEF',
		'junk.json',
		'abcdefg.json',
	];
	for (const name of temporaryNames) {
		writeFileSync(path.join(store.layersDir, name), '');
	}

	const scan = scanLayers(store);
	t.deepEqual(scan.complete, [layer.id]);
	t.deepEqual(scan.halfMade, ['ghjkmn', 'pqrstv']);
	t.deepEqual([...scan.temporary].sort(), [...temporaryNames].sort());
	t.is(readLayer(store, 'ghjkmn'), undefined, 'a tree without a record is no layer');
	t.is(readLayer(store, 'pqrstv'), undefined, 'a record without a tree is no layer');
	t.like(readLayer(store, layer.id), {id: layer.id, parent: null, lowers: []});
});

test('scanLayers of a store without a layers dir finds nothing', async (t) => {
	const store = await temporaryStore(t);
	rmSync(store.layersDir, {recursive: true});
	t.deepEqual(scanLayers(store), {complete: [], halfMade: [], temporary: []});
});

test('resolveBases stacks each base with its lowers, later bases higher, and names the top', async (t) => {
	const store = await temporaryStore(t);
	t.deepEqual(resolveBases(store, []), {layers: [], top: null});
	const deps = await makeLayer(store);
	const tools = await makeLayer(store, [deps.id]);
	const other = await makeLayer(store);
	await writeRef(store, 'deps', deps.id);
	await writeRef(store, 'ws/tools', tools.id);
	await writeRef(store, 'other', other.id);

	t.deepEqual(resolveBases(store, ['ws/tools']), {layers: [deps.id, tools.id], top: tools.id});
	t.deepEqual(resolveBases(store, ['deps', 'ws/tools']), {layers: [deps.id, tools.id], top: tools.id});
	t.deepEqual(resolveBases(store, ['ws/tools', 'other']), {
		layers: [deps.id, tools.id, other.id],
		top: other.id,
	});
	t.deepEqual(resolveBases(store, ['ws/tools', 'deps']), {layers: [tools.id, deps.id], top: deps.id});
	// A layer id works where a name does.
	t.deepEqual(resolveBases(store, [tools.id]), {layers: [deps.id, tools.id], top: tools.id});
});

test('a name that looks like a layer id means the layer it names, not the layer with that id', async (t) => {
	const store = await temporaryStore(t);
	const first = await makeLayer(store);
	const second = await makeLayer(store);
	await writeRef(store, first.id, second.id);
	t.like(resolveLayer(store, first.id), {layer: {id: second.id}, name: first.id});
	t.like(resolveLayer(store, second.id), {layer: {id: second.id}});
	t.is(resolveLayer(store, second.id).name, undefined);
});

test('resolveBases fails with NotFoundError for unknown names and missing layers, InvalidNameError for invalid names', async (t) => {
	const store = await temporaryStore(t);
	const lower = await makeLayer(store);
	const upper = await makeLayer(store, [lower.id]);
	await writeRef(store, 'upper', upper.id);

	const unknown = t.throws(() => resolveBases(store, ['upper', 'nope']), {instanceOf: NotFoundError});
	t.regex(unknown?.message ?? '', /^no snapshot named nope in store .*; see scratch ls$/);
	t.throws(() => resolveBases(store, ['zzzzzz']), {instanceOf: NotFoundError}, 'an unknown layer id');

	for (const invalid of ['a b', '..', '-x', 'a//b']) {
		const error = t.throws(() => resolveBases(store, [invalid]), {instanceOf: InvalidNameError});
		t.true(error?.message.startsWith(`invalid --base ${JSON.stringify(invalid)}: `), error?.message);
	}

	// A name pointing at a layer that is gone, and a layer whose lower is gone: a damaged store, said so.
	await writeRef(store, 'dangling', 'yyyyyy');
	const dangling = t.throws(() => resolveBases(store, ['dangling']), {instanceOf: NotFoundError});
	t.regex(dangling?.message ?? '', /^layer yyyyyy \(reached from name dangling\) is missing from store/);
	rmSync(path.join(store.layersDir, lower.id), {recursive: true});
	const missingLower = t.throws(() => resolveBases(store, ['upper']), {instanceOf: NotFoundError});
	t.regex(missingLower?.message ?? '', new RegExp(`^layer ${lower.id}, below --base upper, is missing`));
});

test('users of the store do not wait for each other', async (t) => {
	const store = await temporaryStore(t);
	const first = await holdStoreUse(store);
	const second = await holdStoreUse(store);
	t.is(holders(store).filter((name) => name.startsWith('use.')).length, 2);
	first.release();
	second.release();
	t.deepEqual(holders(store), []);
});

test('holdStoreUse waits while a collection is held and returns once it is released', async (t) => {
	const store = await temporaryStore(t);
	const collection = await holdStoreCollection(store);
	let use: StoreHold | undefined;
	const waiting = holdStoreUse(store).then((hold) => {
		use = hold;
	});
	// A waiting user looks at the collectors again and again, clearing dead ones as it goes: once it
	// has cleared this one, it has seen the live collection and waited.
	const deadCollector = path.join(store.locksDir, leaseName('gc', deadIdentity(), 'dead'));
	writeFileSync(deadCollector, '');
	t.true(await eventually(() => !existsSync(deadCollector)));
	t.false(await isSettled(waiting));
	t.is(use, undefined);
	t.false(
		holders(store).some((name) => name.startsWith('use.')),
		'a waiting user withdraws, so the collector is never blocked by it',
	);
	collection.release();
	await waiting;
	t.truthy(use);
	use?.release();
	t.deepEqual(holders(store), []);
});

test('holdStoreCollection waits for users of the store and holds off new ones until released', async (t) => {
	const store = await temporaryStore(t);
	const use = await holdStoreUse(store);
	let collection: StoreHold | undefined;
	const collecting = holdStoreCollection(store).then((hold) => {
		collection = hold;
	});
	const deadUser = path.join(store.locksDir, leaseName('use', deadIdentity(), 'dead'));
	writeFileSync(deadUser, '');
	t.true(await eventually(() => !existsSync(deadUser)));
	t.false(await isSettled(collecting));
	use.release();
	await collecting;
	t.truthy(collection);

	// While the collection is held, a new user waits.
	const nextUse = holdStoreUse(store);
	const deadCollector = path.join(store.locksDir, leaseName('gc', deadIdentity(), 'dead'));
	writeFileSync(deadCollector, '');
	t.true(await eventually(() => !existsSync(deadCollector)));
	t.false(await isSettled(nextUse));
	collection?.release();
	(await nextUse).release();
	t.deepEqual(holders(store), []);
});

test('a dead holder blocks nobody and its lock file is removed', async (t) => {
	const store = await temporaryStore(t);
	const dead = deadIdentity();
	const deadCollector = path.join(store.locksDir, leaseName('gc', dead));
	const deadUser = path.join(store.locksDir, leaseName('use', dead, 'abcdef'));
	writeFileSync(deadCollector, '');
	writeFileSync(deadUser, '');
	// Not a lease name at all: treated as dead too.
	const garbage = path.join(store.locksDir, 'gc.garbage');
	writeFileSync(garbage, '');

	const use = await holdStoreUse(store);
	t.false(existsSync(deadCollector));
	t.false(existsSync(garbage));
	use.release();

	const collection = await holdStoreCollection(store);
	t.false(existsSync(deadUser));
	collection.release();
	t.deepEqual(holders(store), []);
});

test('a holder from an earlier boot is dead even if its pid and start time match a live process', async (t) => {
	const store = await temporaryStore(t);
	const me = currentProcessIdentity();
	const otherBoot = path.join(
		store.locksDir,
		leaseName('gc', {...me, bootId: me.bootId.startsWith('0') ? '1'.repeat(36) : '0'.repeat(36)}),
	);
	writeFileSync(otherBoot, '');
	const use = await holdStoreUse(store);
	t.false(existsSync(otherBoot));
	use.release();
});
