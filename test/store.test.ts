import {spawnSync} from 'node:child_process';
import {mkdirSync, readdirSync, readFileSync, statSync, writeFileSync} from 'node:fs';
import {open} from 'node:fs/promises';
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import test, {type ExecutionContext} from 'ava';
import {dir} from 'tmp-promise';
import {StoreError} from '../src/errors.js';
import {defaultStorePath, openStore, storeFormat} from '../src/store/store.js';
import {writeFileAtomic} from '../src/system/atomic-file.js';

const recordName = 'scratch-store.json';
const repositoryRoot = fileURLToPath(new URL('..', import.meta.url));
const storeModule = fileURLToPath(new URL('../src/store/store.ts', import.meta.url));

async function temporaryDirectory(t: ExecutionContext): Promise<string> {
	const temporary = await dir({unsafeCleanup: true});
	t.teardown(temporary.cleanup);
	return temporary.path;
}

/** This process's umask, read from /proc (process.umask() without an argument is deprecated). */
function currentUmask(): number {
	const line = readFileSync('/proc/self/status', 'utf8')
		.split('\n')
		.find((entry) => entry.startsWith('Umask:'));
	return Number.parseInt(line?.split(/\s+/)[1] ?? '022', 8);
}

/** The permission bits a file created with `mode` gets. */
function createdMode(mode: number): number {
	return mode & ~currentUmask();
}

function permissions(file: string): number {
	return statSync(file).mode & 0o7777;
}

/** Every name in a directory tree, relative and sorted, to compare before and after. */
function listTree(root: string): string[] {
	return (readdirSync(root, {recursive: true}) as string[]).sort();
}

function writeRecord(root: string, text: string): void {
	mkdirSync(root, {recursive: true});
	writeFileSync(path.join(root, recordName), text);
}

test('openStore creates a missing store: private runs, kept, trash, tmp, layers, refs and locks dirs and a format record', async (t) => {
	const root = path.join(await temporaryDirectory(t), 'nested', 'store');

	const store = await openStore(root);

	t.deepEqual(store, {
		root,
		layerFormat: 'overlay-userxattr-1',
		runsDir: path.join(root, 'runs'),
		keptDir: path.join(root, 'kept'),
		trashDir: path.join(root, 'trash'),
		tmpDir: path.join(root, 'tmp'),
		layersDir: path.join(root, 'layers'),
		refsDir: path.join(root, 'refs'),
		locksDir: path.join(root, 'locks'),
	});
	t.deepEqual(readdirSync(root).sort(), [
		'kept',
		'layers',
		'locks',
		'refs',
		'runs',
		recordName,
		'tmp',
		'trash',
	]);
	for (const directory of [
		root,
		store.runsDir,
		store.keptDir,
		store.trashDir,
		store.tmpDir,
		store.layersDir,
		store.refsDir,
		store.locksDir,
	]) {
		t.true(statSync(directory).isDirectory());
		t.is(permissions(directory), createdMode(0o700), directory);
	}

	t.deepEqual(JSON.parse(readFileSync(path.join(root, recordName), 'utf8')), {...storeFormat});
	t.is(permissions(path.join(root, recordName)), createdMode(0o600));
});

test('openStore resolves a relative store path to an absolute root', async (t) => {
	const parent = await temporaryDirectory(t);
	const relative = path.relative(process.cwd(), path.join(parent, 'store'));
	const store = await openStore(relative);
	t.is(store.root, path.join(parent, 'store'));
	t.true(path.isAbsolute(store.runsDir));
});

test('openStore makes an existing empty directory into a store', async (t) => {
	const root = await temporaryDirectory(t);
	await openStore(root);
	t.deepEqual(readdirSync(root).sort(), [
		'kept',
		'layers',
		'locks',
		'refs',
		'runs',
		recordName,
		'tmp',
		'trash',
	]);
});

test('openStore opens an existing store again without changing it', async (t) => {
	const root = path.join(await temporaryDirectory(t), 'store');
	const first = await openStore(root);
	writeFileSync(path.join(first.keptDir, 'marker'), 'kept run');
	const recordBefore = statSync(path.join(root, recordName));
	const listingBefore = listTree(root);

	const second = await openStore(root);

	t.deepEqual(second, first);
	t.deepEqual(listTree(root), listingBefore);
	const recordAfter = statSync(path.join(root, recordName));
	t.is(recordAfter.ino, recordBefore.ino);
	t.is(recordAfter.mtimeMs, recordBefore.mtimeMs);
});

test('openStore completes a store whose creation stopped before the format record was written', async (t) => {
	const root = await temporaryDirectory(t);
	mkdirSync(path.join(root, 'runs'));
	mkdirSync(path.join(root, 'kept'));

	await openStore(root);

	t.deepEqual(readdirSync(root).sort(), [
		'kept',
		'layers',
		'locks',
		'refs',
		'runs',
		recordName,
		'tmp',
		'trash',
	]);
});

test('openStore refuses a non-empty directory that is not a store and leaves it unchanged', async (t) => {
	const root = await temporaryDirectory(t);
	writeFileSync(path.join(root, 'notes.txt'), 'mine');
	mkdirSync(path.join(root, 'src'));
	writeFileSync(path.join(root, 'src', 'main.c'), 'int main;');
	const listingBefore = listTree(root);

	await t.throwsAsync(openStore(root), {
		instanceOf: StoreError,
		message: `${root} is not a scratch store: it holds other files and no ${recordName}; pass an empty or new directory with --store DIR`,
	});

	t.deepEqual(listTree(root), listingBefore);
	t.is(readFileSync(path.join(root, 'notes.txt'), 'utf8'), 'mine');
});

test('openStore refuses a directory holding store-like dirs next to other files', async (t) => {
	const root = await temporaryDirectory(t);
	mkdirSync(path.join(root, 'runs'));
	writeFileSync(path.join(root, '.hidden'), '');
	const listingBefore = listTree(root);

	await t.throwsAsync(openStore(root), {instanceOf: StoreError, message: /is not a scratch store/});
	t.deepEqual(listTree(root), listingBefore);
});

const foreignRecords: Array<{title: string; record: unknown; format: string}> = [
	{
		title: 'a newer store format',
		record: {scratchStore: 2, layerFormat: storeFormat.layerFormat},
		format: '2/overlay-userxattr-1',
	},
	{
		title: 'another layer format',
		record: {scratchStore: 1, layerFormat: 'overlay-trusted-1'},
		format: '1/overlay-trusted-1',
	},
	{
		title: 'a record of the right shape with string numbers',
		record: {scratchStore: '1', layerFormat: storeFormat.layerFormat},
		format: '1/overlay-userxattr-1',
	},
	{title: 'an empty object', record: {}, format: 'undefined/undefined'},
	{title: 'a JSON array', record: [1], format: 'undefined/undefined'},
];

for (const {title, record, format} of foreignRecords) {
	test(`openStore refuses a store whose record has ${title}`, async (t) => {
		const root = await temporaryDirectory(t);
		writeRecord(root, JSON.stringify(record));
		const listingBefore = listTree(root);

		const error = await t.throwsAsync(openStore(root), {
			instanceOf: StoreError,
			message: `store ${root} has format ${format}, this scratch uses 1/overlay-userxattr-1 or 1/whiteout-files-1; use another --store`,
		});

		t.false(error?.message.includes('\n'));
		t.deepEqual(listTree(root), listingBefore);
	});
}

for (const damaged of ['', '{"scratchStore": 1,', 'not json at all', '\u0000\u0000']) {
	test(`openStore refuses a damaged record ${JSON.stringify(damaged)} and tells how to recover`, async (t) => {
		const root = await temporaryDirectory(t);
		writeRecord(root, damaged);

		await t.throwsAsync(openStore(root), {
			instanceOf: StoreError,
			message: `store ${root} has a damaged ${recordName}; move the directory aside and let scratch create a new store`,
		});
		t.is(readFileSync(path.join(root, recordName), 'utf8'), damaged);
	});
}

test('openStore refuses a store path that is a regular file and leaves the file alone', async (t) => {
	const file = path.join(await temporaryDirectory(t), 'store');
	writeFileSync(file, 'data');

	await t.throwsAsync(openStore(file), {
		instanceOf: StoreError,
		message: `store ${file} is not a directory; pass a directory with --store DIR`,
	});
	t.is(readFileSync(file, 'utf8'), 'data');
});

test('openStore refuses a store path below a regular file', async (t) => {
	const file = path.join(await temporaryDirectory(t), 'file');
	writeFileSync(file, 'data');

	await t.throwsAsync(openStore(path.join(file, 'store')), {
		instanceOf: StoreError,
		message: /is not a directory/,
	});
});

test('defaultStorePath prefers SCRATCH_STORE, made absolute, over everything else', (t) => {
	t.is(defaultStorePath({SCRATCH_STORE: '/srv/store', XDG_DATA_HOME: '/x', HOME: '/h'}), '/srv/store');
	t.is(defaultStorePath({SCRATCH_STORE: '/srv/store/../other/'}), '/srv/other');
	t.is(defaultStorePath({SCRATCH_STORE: 'relative/store'}), path.resolve('relative/store'));
});

test.serial('defaultStorePath reads process.env when given no environment', (t) => {
	const saved = process.env['SCRATCH_STORE'];
	t.teardown(() => {
		if (saved === undefined) {
			delete process.env['SCRATCH_STORE'];
		} else {
			process.env['SCRATCH_STORE'] = saved;
		}
	});
	process.env['SCRATCH_STORE'] = '/srv/from-process-env';
	t.is(defaultStorePath(), '/srv/from-process-env');
});

const userCases: Array<{title: string; environment: Record<string, string>; expected: string}> = [
	{title: 'XDG_DATA_HOME', environment: {XDG_DATA_HOME: '/data', HOME: '/home/u'}, expected: '/data/scratch'},
	{
		title: 'HOME when XDG_DATA_HOME is unset',
		environment: {HOME: '/home/u'},
		expected: '/home/u/.local/share/scratch',
	},
	{
		title: 'HOME when XDG_DATA_HOME is empty',
		environment: {XDG_DATA_HOME: '', HOME: '/home/u'},
		expected: '/home/u/.local/share/scratch',
	},
	{
		title: 'SCRATCH_STORE over XDG_DATA_HOME',
		environment: {SCRATCH_STORE: '/srv/s', XDG_DATA_HOME: '/data'},
		expected: '/srv/s',
	},
	{
		title: 'an empty SCRATCH_STORE as unset',
		environment: {SCRATCH_STORE: '', HOME: '/home/u'},
		expected: '/home/u/.local/share/scratch',
	},
];

/** defaultStorePath for a non-root user: run here when not root, else in a child running as nobody. */
function defaultStorePathsAsUser(environments: Array<Record<string, string>>): string[] {
	if (process.geteuid?.() !== 0) {
		return environments.map((environment) => defaultStorePath(environment));
	}

	const script = `const {defaultStorePath} = await import(process.argv[1]);
process.stdout.write(JSON.stringify([process.geteuid(), JSON.parse(process.argv[2]).map((environment) => defaultStorePath(environment))]));`;
	const result = spawnSync(
		process.execPath,
		['--import=tsx', '--input-type=module', '-e', script, storeModule, JSON.stringify(environments)],
		{cwd: repositoryRoot, uid: 65_534, gid: 65_534, encoding: 'utf8', env: {PATH: process.env['PATH']}},
	);
	if (result.status !== 0) {
		throw new Error(`child as nobody failed: ${result.stderr}`);
	}

	const [euid, paths] = JSON.parse(result.stdout) as [number, string[]];
	if (euid !== 65_534) {
		throw new Error(`child ran as uid ${euid}, not nobody`);
	}

	return paths;
}

test('defaultStorePath for a normal user is under XDG_DATA_HOME, else ~/.local/share', (t) => {
	const paths = defaultStorePathsAsUser(userCases.map(({environment}) => environment));
	for (const [index, {title, expected}] of userCases.entries()) {
		t.is(paths[index], expected, title);
	}
});

test('defaultStorePath for root is /var/lib/scratch whatever XDG_DATA_HOME and HOME say', (t) => {
	if (process.geteuid?.() !== 0) {
		t.pass('only checkable as root');
		return;
	}

	t.is(defaultStorePath({}), '/var/lib/scratch');
	t.is(defaultStorePath({XDG_DATA_HOME: '/data', HOME: '/home/u'}), '/var/lib/scratch');
	t.is(defaultStorePath({SCRATCH_STORE: '', HOME: '/root'}), '/var/lib/scratch');
});

test('writeFileAtomic creates a file with the content and the default mode 0644', async (t) => {
	const directory = await temporaryDirectory(t);
	const file = path.join(directory, 'record.json');

	await writeFileAtomic(file, '{"a":1}\n');

	t.is(readFileSync(file, 'utf8'), '{"a":1}\n');
	t.is(permissions(file), createdMode(0o644));
	t.deepEqual(readdirSync(directory), ['record.json']);
});

test('writeFileAtomic replaces a file by renaming a new one over it, so readers of the old one are undisturbed', async (t) => {
	const directory = await temporaryDirectory(t);
	const file = path.join(directory, 'record.json');
	writeFileSync(file, 'old content');
	const before = statSync(file);
	const reader = await open(file, 'r');
	t.teardown(async () => reader.close());

	await writeFileAtomic(file, 'new content');

	t.is(readFileSync(file, 'utf8'), 'new content');
	t.not(statSync(file).ino, before.ino);
	t.is((await reader.readFile('utf8')).toString(), 'old content');
	t.deepEqual(readdirSync(directory), ['record.json']);
});

test('writeFileAtomic gives the new file the mode asked for, not the old file mode', async (t) => {
	const directory = await temporaryDirectory(t);
	const file = path.join(directory, 'secret');
	writeFileSync(file, 'old', {mode: 0o644});

	await writeFileAtomic(file, 'new', {mode: 0o600});

	t.is(permissions(file), createdMode(0o600));
	t.is(readFileSync(file, 'utf8'), 'new');
});

test('writeFileAtomic without durability writes the same result', async (t) => {
	const directory = await temporaryDirectory(t);
	const file = path.join(directory, 'summary.json');

	await writeFileAtomic(file, 'x'.repeat(100_000), {durable: false, mode: 0o640});

	t.is(readFileSync(file, 'utf8'), 'x'.repeat(100_000));
	t.is(permissions(file), createdMode(0o640));
	t.deepEqual(readdirSync(directory), ['summary.json']);
});

test('writeFileAtomic rewrites a file many times in a row and leaves only the last content', async (t) => {
	const directory = await temporaryDirectory(t);
	const file = path.join(directory, 'counter');
	for (let count = 0; count < 20; count++) {
		await writeFileAtomic(file, String(count), {durable: false});
	}

	t.is(readFileSync(file, 'utf8'), '19');
	t.deepEqual(readdirSync(directory), ['counter']);
});

test('writeFileAtomic fails without leaving a temporary file when the target is a directory', async (t) => {
	const directory = await temporaryDirectory(t);
	const target = path.join(directory, 'taken');
	mkdirSync(target);
	writeFileSync(path.join(target, 'inside'), '');

	await t.throwsAsync(writeFileAtomic(target, 'content'), {code: 'EISDIR'});

	t.deepEqual(readdirSync(directory), ['taken']);
	t.deepEqual(readdirSync(target), ['inside']);
});

test('writeFileAtomic fails with ENOENT when the directory does not exist', async (t) => {
	const directory = await temporaryDirectory(t);
	await t.throwsAsync(writeFileAtomic(path.join(directory, 'missing', 'file'), 'content'), {code: 'ENOENT'});
	t.deepEqual(readdirSync(directory), []);
});
