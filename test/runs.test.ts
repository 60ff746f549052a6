import {existsSync, mkdirSync, readdirSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import test from 'ava';
import {
	createRunDirectory,
	findAbandoned,
	finishInterruptedKeeps,
	type RunRecord,
	reclaimAbandoned,
} from '../src/store/runs.js';
import {deleteTrashNow, listTrash} from '../src/store/trash.js';
import {currentProcessIdentity, type ProcessIdentity} from '../src/system/process-identity.js';
import {deadIdentity, temporaryStore} from './helpers/store-fixtures.js';

function record(id: string, owner: ProcessIdentity): RunRecord {
	return {
		id,
		state: 'running',
		owner,
		created: new Date().toISOString(),
		src: '/src',
		command: ['true'],
		inPlace: false,
		backend: 'kernel',
		layers: [],
		bases: [],
	};
}

test('a run directory arrives complete with its lease, upper, work and mount point', async (t) => {
	const store = await temporaryStore(t);
	const directory = createRunDirectory(store, record('aaaaaaaaaaaa', currentProcessIdentity()));
	t.deepEqual(readdirSync(directory).sort(), ['lease.json', 'merged', 'upper', 'work']);
	t.deepEqual(readdirSync(store.tmpDir), []);
});

test('runs and preparations of live owners are kept, those of dead owners are abandoned', async (t) => {
	const store = await temporaryStore(t);
	const dead = deadIdentity();
	createRunDirectory(store, record('liveliveliv1', currentProcessIdentity()));
	createRunDirectory(store, record('deaddeaddea1', dead));
	mkdirSync(path.join(store.runsDir, 'nolease00001'));
	mkdirSync(path.join(store.tmpDir, `prep00000001.${dead.bootId.slice(0, 8)}.${dead.pid}.${dead.startTime}`));
	const me = currentProcessIdentity();
	mkdirSync(path.join(store.tmpDir, `prep00000002.${me.bootId.slice(0, 8)}.${me.pid}.${me.startTime}`));
	writeFileSync(path.join(store.tmpDir, 'garbage-without-owner'), '');

	const abandoned = findAbandoned(store)
		.map(({trashName}) => trashName)
		.sort();
	t.deepEqual(abandoned, [
		'run-deaddeaddea1',
		'run-nolease00001',
		`tmp-garbage-without-owner`,
		`tmp-prep00000001.${dead.bootId.slice(0, 8)}.${dead.pid}.${dead.startTime}`,
	]);

	const moved = reclaimAbandoned(store).sort();
	t.deepEqual(moved, abandoned);
	t.deepEqual(readdirSync(store.runsDir), ['liveliveliv1']);
	await deleteTrashNow(store);
	t.deepEqual(listTrash(store), []);
	t.true(existsSync(path.join(store.runsDir, 'liveliveliv1', 'upper')));
});

test('a lease from another boot is dead even if the pid and start time match a live process', async (t) => {
	const store = await temporaryStore(t);
	createRunDirectory(
		store,
		record('otherboot001', {...currentProcessIdentity(), bootId: '00000000-0000-0000-0000-000000000000'}),
	);
	t.deepEqual(
		findAbandoned(store).map(({trashName}) => trashName),
		['run-otherboot001'],
	);
});

test("a dead run whose record says kept is finished into kept/ (its leftovers trashed), and a kept run's other files stay", async (t) => {
	const store = await temporaryStore(t);
	const dead = deadIdentity();
	const directory = createRunDirectory(store, record('keepkeepkee1', dead));
	writeFileSync(
		path.join(directory, 'run.json'),
		JSON.stringify({...record('keepkeepkee1', dead), state: 'kept'}),
	);
	writeFileSync(path.join(directory, 'fuse.log'), 'unknown argument ignored: lazytime\n');
	// A promotion of another kept run writing its record's temporary file: never trashed.
	const other = path.join(store.keptDir, 'otherother01');
	mkdirSync(path.join(other, 'upper'), {recursive: true});
	writeFileSync(path.join(other, 'run.json'), '{}');
	writeFileSync(path.join(other, '.run.json.123.abcdefghij.tmp'), '{}');

	t.deepEqual(findAbandoned(store), [], 'a keep to finish is not garbage');
	t.deepEqual(finishInterruptedKeeps(store, {dryRun: true}), ['keepkeepkee1']);
	t.true(existsSync(directory), 'a dry run moves nothing');
	reclaimAbandoned(store);
	t.false(existsSync(directory));
	t.deepEqual(readdirSync(path.join(store.keptDir, 'keepkeepkee1')).sort(), ['run.json', 'upper']);
	t.deepEqual(readdirSync(other).sort(), ['.run.json.123.abcdefghij.tmp', 'run.json', 'upper']);
	t.deepEqual(finishInterruptedKeeps(store), [], 'finished once');
});
