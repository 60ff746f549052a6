import {readdirSync, readFileSync, renameSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import test, {type ExecutionContext} from 'ava';
import {InvalidNameError, NotFoundError, StoreError} from '../src/errors.js';
import {
	createSquashTree,
	type DirectoryXattrs,
	type LayerEntry,
	parseEntryListing,
	parseXattrDump,
	planLayer,
	type Squash,
	squashLayer,
} from '../src/layer/squash.js';
import {type LayerRecord, layerTreePath, readLayer, scanLayers} from '../src/store/layers.js';
import {readRef} from '../src/store/refs.js';
import {storeLayout} from '../src/store/store.js';
import {unquoteGetfattr} from '../src/system/getfattr.js';
import {makeSandbox, type Sandbox, scratch, scratchRun, storeLeftovers, users} from './helpers/scratch.js';

// Everything about the view a squash must keep: types, modes, owners, sizes, link counts of
// non-directories, mtimes, link targets, content and user xattrs. Directory link counts are left out:
// overlayfs reports 1 for a directory merged from several layers, the real count for one from one layer.
const fingerprintScript = `set -e
find . -mindepth 1 \\( -type d -printf '%p d %m %U:%G %T@\\n' \\) -o -printf '%p %y %m %U:%G %n %s %T@ %l\\n' | LC_ALL=C sort
find . -type f -exec sha256sum {} + | LC_ALL=C sort -k 2
find . -mindepth 1 | LC_ALL=C sort | while IFS= read -r entry; do getfattr -h --absolute-names -d -m '^user\\.' -- "$entry"; done`;

/** Promote a run of `script` as `name` on `base` (if any), as the sandbox's user. */
async function promote(
	t: ExecutionContext,
	sandbox: Sandbox,
	name: string,
	base: string | undefined,
	script: string,
) {
	const result = await scratchRun(sandbox, [
		...(base ? ['--base', base] : []),
		'--promote',
		name,
		'--',
		'sh',
		'-c',
		`set -e; ${script}`,
	]);
	t.is(result.exitCode, 0, `${name}: ${String(result.stderr)}`);
}

/** What a run over `base` sees, as the sandbox's user. */
async function fingerprintView(t: ExecutionContext, sandbox: Sandbox, base: string): Promise<string> {
	const result = await scratchRun(sandbox, ['--base', base, '--', 'sh', '-c', fingerprintScript]);
	t.is(result.exitCode, 0, String(result.stderr));
	return String(result.stdout);
}

/** Squash as the sandbox's user: in this process as root, through the CLI (`scratch squash --json`) as nobody. */
async function squashAs(sandbox: Sandbox, name: string, as: string): Promise<Squash> {
	if (sandbox.user === 'root') {
		return squashLayer({store: sandbox.store, name, as});
	}

	const result = await scratch(sandbox, ['squash', name, '--as', as, '--store', sandbox.store, '--json']);
	if (result.exitCode !== 0) {
		throw new Error(`squash as nobody failed: ${String(result.stderr)}`);
	}

	return JSON.parse(String(result.stdout)) as Squash;
}

/** What squashes left in the store's working dirs (runs leave trash that their deleters free in the background). */
function squashLeftovers(sandbox: Sandbox): string[] {
	return storeLeftovers(sandbox.store).filter((entry) => entry.includes('squash'));
}

function layerOf(sandbox: Sandbox, name: string): LayerRecord {
	const store = storeLayout(sandbox.store);
	const ref = readRef(store, name);
	const layer = ref && readLayer(store, ref.layer);
	if (!layer) {
		throw new Error(`no layer named ${name}`);
	}

	return layer;
}

// Names getfattr has to quote (space, backslash, '=', UTF-8) and one that is not UTF-8 at all.
const oddDirectory = String.raw`"$(printf 'we ird\\dir=\303\251')"`;
const latin1Directory = String.raw`"$(printf 'bad\377')"`;

// A chain that exercises every rule: new, modified and deleted files (of the source and of lower layers),
// directories removed and re-created (opaque), a file replaced by a directory and a directory by a file,
// symlinks, hardlink pairs, modes, owners, user xattrs on files and directories, odd names.
const rootChain = [
	`echo new > new.txt; setfattr -n user.test -v 1 new.txt
mkdir -p build/out build/gone2; echo o > build/out/o.txt; chown 123:456 build/out/o.txt; chmod 750 build
setfattr -n user.dirattr -v 1 build
echo more >> README.md; rm lib/code.c; rm -rf gone; chmod 600 data.txt
echo h > h1; ln h1 h2; echo p > p1; ln p1 p2
ln -s README.md link; ln -s /nonexistent dangling
echo f > f2d; mkdir d2f; echo q > d2f/q; mkdir -p tmpdir/sub; echo t > tmpdir/sub/t
mkdir ${oddDirectory}; echo w > ${oddDirectory}/w; mkdir ${latin1Directory}; echo b > ${latin1Directory}/b`,
	`rm dangling; echo again >> build/out/o.txt; chmod 700 README.md
rm -rf lib/deep; mkdir lib/deep; echo y > lib/deep/y
rm -rf tmpdir; mkdir tmpdir; echo n > tmpdir/n
rm f2d; mkdir f2d; echo in > f2d/in; rm -rf d2f; echo nowfile > d2f
rm p1 p2; echo p2 > p1; ln p1 p2
rm -rf ${oddDirectory}; mkdir ${oddDirectory}; echo w2 > ${oddDirectory}/w2
rm -rf ${latin1Directory}; echo b > ${latin1Directory}
setfattr -x user.dirattr build`,
	`rm data.txt; mkdir data.txt; echo d > data.txt/inner
echo back > lib/code.c; mkdir gone; echo g2 > gone/g2; rm -rf build/gone2
setfattr -n user.late -v 2 lib; ln -s new.txt link2`,
];

test('a squashed stack shows exactly what the stack showed, over the same source', async (t) => {
	const sandbox = makeSandbox(t, 'root', {'data.txt': 'data\n', 'gone/g1': 'g1\n', 'keep/k': 'k\n'});
	await promote(t, sandbox, 'L1', undefined, rootChain[0] as string);
	await promote(t, sandbox, 'L2', 'L1', rootChain[1] as string);
	await promote(t, sandbox, 'L3', 'L2', rootChain[2] as string);
	const before = await fingerprintView(t, sandbox, 'L3');
	const top = layerOf(sandbox, 'L3');

	const squash = await squashLayer({store: sandbox.store, name: 'L3', as: 'flat'});

	t.is(await fingerprintView(t, sandbox, 'flat'), before);
	// The fingerprint saw what it had to: the rules' effects, not just an empty view.
	for (const expected of [
		'./lib/deep/y f',
		'./gone/g2 f',
		'./data.txt/inner f',
		'./f2d/in f',
		'./d2f f',
		'./h2 f 644 0:0 2 ',
		'./p2 f 644 0:0 2 ',
		'./build d 750 0:0',
		'./build/out/o.txt f 644 123:456 1 ',
		'./link l',
		'user.test="1"',
		'user.late="2"',
	]) {
		t.true(before.includes(expected), expected);
	}

	for (const hidden of ['x.txt', 'g1', 'dangling', 'tmpdir/sub', 'd2f/q', 'user.dirattr', 'build/gone2']) {
		t.false(before.includes(hidden), hidden);
	}

	t.like(squash, {squashedLayers: 3, ref: {name: 'flat', layer: squash.layer.id}});
	t.like(squash.layer, {parent: null, lowers: [], origin: 'squash', squashed: top.id, source: top.source});
	t.deepEqual(squash.layer.command, top.command);
	t.deepEqual(layerOf(sandbox, 'flat'), squash.layer);
	t.is(layerOf(sandbox, 'L3').id, top.id, 'the squashed name still points where it did');
	t.deepEqual(squashLeftovers(sandbox), []);
});

test('squashing a one-layer stack makes a copy with the same view and no lowers', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	await promote(t, sandbox, 'only', undefined, 'echo a > a; rm lib/code.c; rm -rf lib/deep; mkdir lib/deep');
	const before = await fingerprintView(t, sandbox, 'only');

	const squash = await squashLayer({store: sandbox.store, name: 'only', as: 'copy'});

	t.is(await fingerprintView(t, sandbox, 'copy'), before);
	t.like(squash, {squashedLayers: 1, layer: {lowers: [], parent: null}});
	t.not(squash.layer.id, layerOf(sandbox, 'only').id);
});

test('squashing a name as itself moves the name to the flat layer', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	await promote(t, sandbox, 'deps', undefined, 'echo 1 > one');
	await promote(t, sandbox, 'deps', 'deps', 'echo 2 > two; rm one');
	const old = layerOf(sandbox, 'deps');
	t.is(old.lowers.length, 1);
	const before = await fingerprintView(t, sandbox, 'deps');

	const squash = await squashLayer({store: sandbox.store, name: 'deps', as: 'deps'});

	t.is(layerOf(sandbox, 'deps').id, squash.layer.id);
	t.is(squash.layer.squashed, old.id);
	t.deepEqual(squash.layer.lowers, []);
	t.is(await fingerprintView(t, sandbox, 'deps'), before);
});

test('a stack of 60 layers squashed into one shows the same view', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	let base: string | undefined;
	for (let index = 1; index <= 60; index++) {
		// Adds, appends, deletes what three layers ago added, and every tenth layer empties d.
		const script = `echo ${index} > f${index}; echo ${index} >> shared; rm -f f${index - 3}; mkdir -p d/${index}; echo ${index} > d/${index}/x${index % 10 === 0 ? '; rm -rf d; mkdir d; echo fresh > d/fresh' : ''}`;
		await promote(t, sandbox, `chain/${index}`, base, script);
		base = `chain/${index}`;
	}

	t.is(layerOf(sandbox, 'chain/60').lowers.length, 59);
	const before = await fingerprintView(t, sandbox, 'chain/60');
	const started = Date.now();
	const squash = await squashLayer({store: sandbox.store, name: 'chain/60', as: 'flat'});
	t.log(`squashing 60 layers took ${Date.now() - started} ms`);

	t.is(squash.squashedLayers, 60);
	t.is(await fingerprintView(t, sandbox, 'flat'), before);
	t.true(before.includes('./f60 f'));
	t.false(before.includes('./f57 '));
	t.false(before.includes('./d/50'));
});

test('an unprivileged user squashes a stack with read-only and mode-000 directories', async (t) => {
	const sandbox = makeSandbox(t, 'nobody');
	await promote(
		t,
		sandbox,
		'L1',
		undefined,
		'mkdir ro; echo a > ro/a; chmod 555 ro; mkdir locked; echo s > locked/s; chmod 000 locked; echo x > new; setfattr -n user.test -v 1 new; rm lib/code.c; echo h > h1; ln h1 h2',
	);
	await promote(
		t,
		sandbox,
		'L2',
		'L1',
		'chmod 755 ro; echo b > ro/b; rm ro/a; chmod 555 ro; chmod 700 locked; rm locked/s; chmod 000 locked; rm -rf lib/deep; mkdir lib/deep; echo y > lib/deep/y',
	);
	const before = await fingerprintView(t, sandbox, 'L2');

	const squash = await squashAs(sandbox, 'L2', 'flat');

	t.is(squash.squashedLayers, 2);
	t.is(await fingerprintView(t, sandbox, 'flat'), before);
	for (const expected of ['./ro d 555', './ro/b f', './locked d 0', './h2 f 644 0:0 2 ', 'user.test="1"']) {
		t.true(before.includes(expected), expected);
	}

	t.false(before.includes('./ro/a'));
	t.false(before.includes('./lib/deep/x.txt'));
	t.deepEqual(squashLeftovers(sandbox), []);
});

test('squashing an unknown name fails clearly and changes nothing', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	await promote(t, sandbox, 'real', undefined, 'echo a > a');
	const layersBefore = readdirSync(path.join(sandbox.store, 'layers')).sort();

	const error = await t.throwsAsync(squashLayer({store: sandbox.store, name: 'missing', as: 'flat'}), {
		instanceOf: NotFoundError,
	});

	t.regex(error?.message ?? '', /no snapshot named missing/);
	t.deepEqual(readdirSync(path.join(sandbox.store, 'layers')).sort(), layersBefore);
	t.is(readRef(storeLayout(sandbox.store), 'flat'), undefined);
});

test('an invalid new name is refused before anything is read', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	await t.throwsAsync(squashLayer({store: path.join(sandbox.root, 'no-store'), name: 'x', as: '../up'}), {
		instanceOf: InvalidNameError,
		message: /invalid --as "\.\.\/up"/,
	});
});

test('squashing in a store that does not exist fails without creating it', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	await t.throwsAsync(squashLayer({store: sandbox.store, name: 'x', as: 'y'}), {instanceOf: NotFoundError});
	t.deepEqual(readdirSync(sandbox.root), ['src']);
});

test('a squash that fails while copying writes no name and leaves no half-built tree', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	await promote(t, sandbox, 'L1', undefined, 'echo a > a');
	await promote(t, sandbox, 'L2', 'L1', 'echo b > b');
	const store = storeLayout(sandbox.store);
	// Damage the store: the lower layer's tree is replaced by a file.
	const lowerTree = layerTreePath(store, layerOf(sandbox, 'L1').id);
	renameSync(lowerTree, `${lowerTree}.moved`);
	writeFileSync(lowerTree, 'not a tree\n');
	const layersBefore = scanLayers(store).complete;

	const error = await t.throwsAsync(squashLayer({store: sandbox.store, name: 'L2', as: 'flat'}), {
		instanceOf: StoreError,
	});

	t.regex(
		error?.message ?? '',
		/^cannot squash L2: copying its layers failed: .*Not a directory; nothing was changed/,
	);
	t.false(error?.message.includes('\n'));
	t.is(readRef(store, 'flat'), undefined);
	t.deepEqual(scanLayers(store).complete, layersBefore);
	t.deepEqual(squashLeftovers(sandbox), []);
});

// The planning rules, as tables: what the tree holds, what a layer holds, what must be done.

type PlanCase = {
	title: string;
	below: Array<[LayerEntry[], Record<string, DirectoryXattrs>]>;
	layer: [LayerEntry[], Record<string, DirectoryXattrs>];
	removals?: string[];
	opaque?: string[];
	staleXattrs?: Array<{path: string; name: string}>;
};

const file = (entryPath: string): LayerEntry => ({path: entryPath, directory: false});
const directory = (entryPath: string): LayerEntry => ({path: entryPath, directory: true});
const opaque: DirectoryXattrs = {opaque: true, names: ['user.overlay.opaque']};

const planCases: PlanCase[] = [
	{
		title: 'a whiteout over a directory removes the directory first',
		below: [[[directory('d'), file('d/f')], {}]],
		layer: [[file('d')], {}],
		removals: ['d'],
	},
	{
		title: 'a file over a file is left to the copy',
		below: [[[file('f')], {}]],
		layer: [[file('f')], {}],
	},
	{
		title: 'an opaque directory replaces the directory below with everything in it',
		below: [[[directory('d'), file('d/old')], {}]],
		layer: [[directory('d'), file('d/new')], {d: opaque}],
		removals: ['d'],
	},
	{
		title: 'a plain directory over a whiteout replaces it and becomes opaque',
		below: [[[file('d')], {}]],
		layer: [[directory('d'), file('d/new')], {}],
		removals: ['d'],
		opaque: ['d'],
	},
	{
		title: 'a plain directory merges with the directory below, whose xattrs it no longer has are removed',
		below: [[[directory('d'), file('d/old')], {d: {opaque: false, names: ['user.a', 'user.b']}}]],
		layer: [
			[directory('d'), file('d/new')],
			{d: {opaque: false, names: ['user.b', 'user.overlay.impure']}, '': {opaque: false, names: []}},
		],
		staleXattrs: [{path: 'd', name: 'user.a'}],
	},
	{
		title: 'an opaque directory below stays opaque under a plain one, and overlayfs xattrs are not removed',
		below: [[[directory('d')], {d: opaque}]],
		layer: [[directory('d'), directory('d/e'), file('d/e/f')], {}],
	},
	{
		title: 'entries inside a replaced directory are new, whatever was below',
		below: [[[directory('d'), directory('d/e'), file('d/e/f')], {}]],
		layer: [[directory('d'), directory('d/e'), directory('d/e/f')], {d: opaque}],
		removals: ['d'],
	},
	{
		title: 'a whiteout over nothing is kept: it may hide a file of the source',
		below: [[[directory('d')], {}]],
		layer: [[directory('d'), file('d/gone')], {}],
	},
	{
		title: 'a directory that replaced a file in an earlier layer is removed by a later whiteout',
		below: [
			[[file('x')], {}],
			[[directory('x'), file('x/y')], {}],
		],
		layer: [[file('x')], {}],
		removals: ['x'],
	},
];

for (const planCase of planCases) {
	test(`planLayer: ${planCase.title}`, (t) => {
		const tree = createSquashTree();
		for (const [entries, xattrs] of planCase.below) {
			planLayer(tree, entries, new Map(Object.entries(xattrs)));
		}

		const [entries, xattrs] = planCase.layer;
		t.deepEqual(planLayer(tree, entries, new Map(Object.entries(xattrs))), {
			removals: planCase.removals ?? [],
			opaque: planCase.opaque ?? [],
			staleXattrs: planCase.staleXattrs ?? [],
		});
	});
}

test('planLayer refuses a listing that names an entry before its directory', (t) => {
	t.throws(() => planLayer(createSquashTree(), [file('d/f')], new Map()), {message: /before its directory/});
});

test('getfattr quoting is undone byte for byte', (t) => {
	t.is(unquoteGetfattr(String.raw`a\040b\012c\134d\\e\075`), 'a b\nc\\d\\e=');
	t.is(unquoteGetfattr('\u00c3\u00a9'), '\u00c3\u00a9');
});

test('a getfattr dump gives each layer directory its xattr names and whether it is opaque', (t) => {
	const dump = [
		'# file: aaaaaa',
		'user.overlay.impure=0x79',
		'',
		String.raw`# file: aaaaaa/we\040ird\012`,
		'user.overlay.opaque=0x79',
		'user.test=0x31',
		'',
		'# file: bbbbbb/x/y',
		'user.overlay.opaque=0x78',
		'',
	].join('\n');
	t.deepEqual(
		parseXattrDump(dump),
		new Map([
			[
				'aaaaaa',
				new Map([
					['', {opaque: false, names: ['user.overlay.impure']}],
					['we ird\n', {opaque: true, names: ['user.overlay.opaque', 'user.test']}],
				]),
			],
			['bbbbbb', new Map([['x/y', {opaque: false, names: ['user.overlay.opaque']}]])],
		]),
	);
});

test('a find listing gives each layer its entries in order, without its root', (t) => {
	t.deepEqual(
		parseEntryListing(
			'aaaaaa d 4096 \0aaaaaa d 4096 dir\0aaaaaa f 12 dir/file\0aaaaaa c 0 dir/new\nline\0bbbbbb d 4096 \0bbbbbb l 4 link\0',
		),
		new Map([
			[
				'aaaaaa',
				[
					{path: 'dir', directory: true},
					{path: 'dir/file', directory: false},
					{path: 'dir/new\nline', directory: false},
				],
			],
			['bbbbbb', [{path: 'link', directory: false}]],
		]),
	);
	t.deepEqual(parseEntryListing(''), new Map());
});

test('the layers of a squash are left as they were', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	await promote(t, sandbox, 'L1', undefined, 'echo a > a; mkdir d; echo 1 > d/1');
	await promote(t, sandbox, 'L2', 'L1', 'rm -rf d; mkdir d; echo 2 > d/2');
	const store = storeLayout(sandbox.store);
	const listing = (id: string) => readdirSync(layerTreePath(store, id), {recursive: true}).sort();
	const records = (id: string) => readFileSync(path.join(store.layersDir, `${id}.json`), 'utf8');
	const ids = [...layerOf(sandbox, 'L2').lowers, layerOf(sandbox, 'L2').id];
	const before = ids.map((id) => [listing(id), records(id)]);

	await squashLayer({store: sandbox.store, name: 'L2', as: 'flat'});

	t.deepEqual(
		ids.map((id) => [listing(id), records(id)]),
		before,
	);
});

for (const user of users) {
	test(`a squashed layer stacks under new runs like any other (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		await promote(t, sandbox, 'L1', undefined, 'echo a > a; rm README.md');
		await promote(t, sandbox, 'L2', 'L1', 'echo b > b');
		await squashAs(sandbox, 'L2', 'flat');
		await promote(
			t,
			sandbox,
			'next',
			'flat',
			'test ! -e README.md; test "$(cat a)" = a; test "$(cat b)" = b; echo c > c',
		);

		const result = await scratchRun(sandbox, ['--base', 'next', '--', 'sh', '-c', 'ls; cat a b c']);

		t.is(result.exitCode, 0, String(result.stderr));
		t.is(String(result.stdout), 'a\nb\nc\nlib\na\nb\nc');
		t.deepEqual(layerOf(sandbox, 'next').lowers, [layerOf(sandbox, 'flat').id]);
	});
}
