import {lstatSync, mkdirSync, readdirSync, readFileSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import test, {type ExecutionContext} from 'ava';
import {execa} from 'execa';
import type {LayerDiff} from '../src/layer/diff.js';
import {
	createSquashTree,
	type DirectoryXattrs,
	type LayerEntry,
	type LayerPlan,
	parseEntryListing,
	planLayer,
	type Squash,
} from '../src/layer/squash.js';
import {measureUpper} from '../src/run/upper-stats.js';
import type {LayerFormat} from '../src/store/layer-format.js';
import type {LayerRecord} from '../src/store/layers.js';
import type {SnapshotEntry} from '../src/store/snapshots.js';
import {overlayfsStore} from './helpers/fuse.js';
import {
	makeSandbox,
	type NamespaceSetup,
	type Sandbox,
	scratch,
	scratchRun,
	type User,
	users,
	writeTree,
} from './helpers/scratch.js';
import {assertStoreAtRest, checkStoreConsistency, checkWhiteoutFilesTrees} from './helpers/store-check.js';

/*
Stores on overlayfs (as inside a container) keep layers in the whiteout-files format: a whiteout is an
empty file `.wh.NAME`, an opaque directory holds `.wh..wh..opq`. Every reader and writer of layer trees
must give the same answers there as in a store in the kernel's format: the tests run the same commands
in both, over one source tree, and compare.
*/

/** One store a test uses: the sandbox scratch is given, how to run it, and where the test reads its files. */
type StoreUnderTest = {
	sandbox: Sandbox;
	/** The namespace setup every scratch process of this store needs (undefined for a plain store). */
	setup: NamespaceSetup | undefined;
	/** Where the test reads the store's files. */
	files: string;
};

/** A sandbox with two stores over one source tree: a plain one, and one on overlayfs (whiteout-files). */
function twoStores(
	t: ExecutionContext,
	user: User,
	files: Record<string, string> = {},
): {plain: StoreUnderTest; container: StoreUnderTest} {
	const sandbox = makeSandbox(t, user, files);
	const container = overlayfsStore(sandbox);
	return {
		plain: {sandbox, setup: undefined, files: sandbox.store},
		container: {
			sandbox: {...sandbox, store: container.store},
			setup: container.setup,
			files: container.backing,
		},
	};
}

/** `scratch ARGS --store STORE` as the store's user; fails the test unless it exits 0. */
async function cli(t: ExecutionContext, store: StoreUnderTest, args: string[]): Promise<string> {
	const result = await scratch(store.sandbox, [...args, '--store', store.sandbox.store], {
		setup: store.setup,
	});
	t.is(result.exitCode, 0, `scratch ${args.join(' ')}: ${String(result.stderr)}`);
	return String(result.stdout);
}

/** `scratch run ARGS -- sh -c SCRIPT` over the sandbox's source; its stderr (for kept run ids). */
async function run(t: ExecutionContext, store: StoreUnderTest, args: string[], script: string) {
	const result = await scratchRun(store.sandbox, [...args, '--', 'sh', '-c', `set -e; ${script}`], {
		setup: store.setup,
	});
	t.is(result.exitCode, 0, `run ${args.join(' ')}: ${String(result.stderr)}`);
	if (store.setup) {
		// The overlayfs store is served by fuse-overlayfs, and says so.
		t.regex(String(result.stderr), /using the fuse backend/);
	}

	return {stdout: String(result.stdout), stderr: String(result.stderr)};
}

async function promote(
	t: ExecutionContext,
	store: StoreUnderTest,
	name: string,
	base: string | undefined,
	script: string,
) {
	await run(t, store, [...(base ? ['--base', base] : []), '--promote', name], script);
}

async function keep(
	t: ExecutionContext,
	store: StoreUnderTest,
	base: string,
	script: string,
): Promise<string> {
	const {stderr} = await run(t, store, ['--base', base, '--keep'], script);
	const runId = /scratch: kept run ([\da-z]{12});/.exec(stderr)?.[1];
	if (!runId) {
		throw new Error(`no kept run id in: ${stderr}`);
	}

	return runId;
}

function layerFormatOf(store: StoreUnderTest): LayerFormat {
	return (
		JSON.parse(readFileSync(path.join(store.files, 'scratch-store.json'), 'utf8')) as {
			layerFormat: LayerFormat;
		}
	).layerFormat;
}

function refTargetOf(store: StoreUnderTest, name: string): string {
	return (JSON.parse(readFileSync(path.join(store.files, 'refs', name), 'utf8')) as {layer: string}).layer;
}

/** One line per change: change, path, type and `opaque` when set. */
async function diffLines(t: ExecutionContext, store: StoreUnderTest, reference: string): Promise<string[]> {
	const diff = JSON.parse(await cli(t, store, ['diff', reference, '--json'])) as LayerDiff;
	return diff.changes.map(
		(change) => `${change.change} ${change.path} ${change.type}${change.opaque ? ' opaque' : ''}`,
	);
}

// What the source tree holds besides makeSandbox's README.md, lib/code.c and lib/deep/x.txt.
const sourceFiles = {
	'docs/a.md': 'a\n',
	'docs/b.md': 'b\n',
	'old/x': 'x\n',
	'old/y/z': 'z\n',
	'cache/old1': '1\n',
	'cache/sub/old2': '2\n',
	f2d: 'f\n',
	'd2f/q': 'q\n',
	'data.txt': 'data\n',
	'gone/g1': 'g1\n',
	'keep/k': 'k\n',
};

const diffChain = {
	base: `echo new > added.txt
mkdir -p newdir/sub; echo n > newdir/sub/f
echo more >> README.md; chmod 700 docs; rm docs/a.md; rm -r old; ln -s docs/b.md link
rm -rf cache; mkdir -p cache/sub; echo n > cache/new
rm f2d; mkdir f2d; echo in > f2d/in
rm -rf d2f; echo now > d2f`,
	top: `echo again > docs/a.md; rm added.txt; rm lib/code.c
rm -rf cache; mkdir cache; echo c > cache/c
mkdir old; echo o > old/o; rm -r newdir/sub; rm -rf lib/deep; mkdir lib/deep`,
	kept: 'touch kept.txt; rm README.md; echo more >> docs/b.md; rm -rf f2d; rm cache/c',
};

for (const user of users) {
	test(`diff lists the same changes of layers and kept runs in a whiteout-files store as in a plain one (${user})`, async (t) => {
		const {plain, container} = twoStores(t, user, sourceFiles);
		const runIds = new Map<StoreUnderTest, string>();
		for (const store of [plain, container]) {
			await promote(t, store, 'base', undefined, diffChain.base);
			await promote(t, store, 'top', 'base', diffChain.top);
			runIds.set(store, await keep(t, store, 'top', diffChain.kept));
		}

		t.is(layerFormatOf(plain), 'overlay-userxattr-1');
		t.is(layerFormatOf(container), 'whiteout-files-1');
		// The container's layers are in its format: whiteout files, markers, no devices.
		const topTree = path.join(container.files, 'layers', refTargetOf(container, 'top'));
		t.true(lstatSync(path.join(topTree, 'lib/.wh.code.c')).isFile());
		t.true(lstatSync(path.join(topTree, 'cache/.wh..wh..opq')).isFile());

		const expected = {
			base: [
				'M README.md file',
				'A added.txt file',
				'M cache directory opaque',
				'A cache/new file',
				'D cache/old1 file',
				'M cache/sub directory opaque',
				'D cache/sub/old2 file',
				'M d2f file',
				'M docs directory',
				'D docs/a.md file',
				'M f2d directory opaque',
				'A f2d/in file',
				'A link symlink',
				'A newdir directory',
				'A newdir/sub directory',
				'A newdir/sub/f file',
				'D old directory',
			],
			top: [
				'D added.txt file',
				'M cache directory opaque',
				'A cache/c file',
				'D cache/new file',
				'D cache/sub directory',
				'A docs/a.md file',
				'D lib/code.c file',
				'M lib/deep directory opaque',
				'D lib/deep/x.txt file',
				'D newdir/sub directory',
				'A old directory',
				'A old/o file',
			],
			kept: ['D README.md file', 'D cache/c file', 'M docs/b.md file', 'D f2d directory', 'A kept.txt file'],
		};
		for (const [reference, lines] of Object.entries(expected)) {
			const plainReference = reference === 'kept' ? (runIds.get(plain) as string) : reference;
			const containerReference = reference === 'kept' ? (runIds.get(container) as string) : reference;
			const plainLines = await diffLines(t, plain, plainReference);
			t.deepEqual(plainLines, lines, `${reference} in the plain store`);
			t.deepEqual(await diffLines(t, container, containerReference), plainLines, reference);
		}
	});
}

// Everything about the view a squash must keep (as in squash.test.ts): types, modes, owners, sizes, link
// counts of non-directories, mtimes, link targets, content and user xattrs.
const fingerprintScript = `set -e
find . -mindepth 1 \\( -type d -printf '%p d %m %U:%G %T@\\n' \\) -o -printf '%p %y %m %U:%G %n %s %T@ %l\\n' | LC_ALL=C sort
find . -type f -exec sha256sum {} + | LC_ALL=C sort -k 2
find . -mindepth 1 | LC_ALL=C sort | while IFS= read -r entry; do getfattr -h --absolute-names -d -m '^user\\.' -- "$entry"; done`;

async function fingerprintView(t: ExecutionContext, store: StoreUnderTest, base: string): Promise<string> {
	const result = await scratchRun(store.sandbox, ['--base', base, '--', 'sh', '-c', fingerprintScript], {
		setup: store.setup,
	});
	t.is(result.exitCode, 0, String(result.stderr));
	return String(result.stdout);
}

// Deletions of source files, opaque dirs, a file deleted then recreated, a dir replaced then filled, type
// changes both ways, hardlinks, symlinks, modes and user xattrs on files and directories.
const squashChain = [
	`echo new > new.txt; setfattr -n user.gone -v 1 new.txt
mkdir -p build/out build/gone2; echo o > build/out/o.txt; chmod 750 build; setfattr -n user.dirattr -v 1 build
setfattr -n user.test -v 1 build/out/o.txt
echo more >> README.md; rm lib/code.c; rm -rf gone; chmod 600 data.txt
echo h > h1; ln h1 h2; ln -s h1 link
rm f2d; echo f > f2d; mkdir -p tmpdir/sub; echo t > tmpdir/sub/t`,
	`echo again >> build/out/o.txt; chmod 700 README.md
rm -rf lib/deep; mkdir lib/deep; echo y > lib/deep/y
rm -rf tmpdir; mkdir tmpdir; echo n > tmpdir/n
rm f2d; mkdir f2d; echo in > f2d/in; rm -rf d2f; echo nowfile > d2f
rm new.txt; setfattr -x user.dirattr build`,
	`rm data.txt; mkdir data.txt; echo d > data.txt/inner
echo back > lib/code.c; mkdir gone; echo g2 > gone/g2; rm -rf build/gone2
echo new-again > new.txt; rm README.md; rm -r keep`,
	`rm -rf tmpdir; echo file > tmpdir; mkdir -p lib/deep/z; echo z > lib/deep/z/z
echo k2 > keep; setfattr -n user.late -v 2 lib`,
];

/** Every path in a tree, relative, sorted. */
function listTree(tree: string): string[] {
	return (readdirSync(tree, {recursive: true}) as string[]).sort();
}

for (const user of users) {
	test(`a squashed whiteout-files chain is a whiteout-files layer showing what the chain showed (${user})`, async (t) => {
		const {container} = twoStores(t, user, sourceFiles);
		let base: string | undefined;
		for (const [index, script] of squashChain.entries()) {
			await promote(t, container, `L${index + 1}`, base, script);
			base = `L${index + 1}`;
		}

		const before = await fingerprintView(t, container, 'L4');
		const squash = JSON.parse(await cli(t, container, ['squash', 'L4', '--as', 'flat', '--json'])) as Squash;

		t.is(squash.squashedLayers, 4);
		t.deepEqual(squash.layer.lowers, []);
		t.is(await fingerprintView(t, container, 'flat'), before);
		// The fingerprint saw the rules' effects, not an empty view.
		for (const expected of [
			'./lib/code.c f',
			'./lib/deep/y f',
			'./lib/deep/z/z f',
			'./gone/g2 f',
			'./data.txt/inner f',
			'./f2d/in f',
			'./d2f f',
			'./tmpdir f',
			'./keep f',
			'./new.txt f',
			'./h2 f 644',
			'./build d 750',
			'./link l',
			'user.test="1"',
			'user.late="2"',
		]) {
			t.true(before.includes(expected), expected);
		}

		for (const hidden of [
			'./README.md',
			'x.txt',
			'g1',
			'./keep/k',
			'tmpdir/',
			'd2f/q',
			'build/gone2',
			'user.dirattr',
			'user.gone',
			'.wh.',
		]) {
			t.false(before.includes(hidden), hidden);
		}

		// A valid whiteout-files layer: no devices or overlay xattrs, markers and whiteouts where needed.
		const tree = path.join(container.files, 'layers', squash.layer.id);
		const problems: string[] = [];
		checkWhiteoutFilesTrees(new Map([[tree, 'the squashed layer']]), problems);
		t.deepEqual(problems, []);
		const entries = listTree(tree);
		for (const present of [
			'.wh.README.md',
			'lib/code.c',
			'lib/deep/.wh..wh..opq',
			'gone/.wh..wh..opq',
			'data.txt/.wh..wh..opq',
			'f2d/.wh..wh..opq',
			'build/.wh.gone2',
			'new.txt',
			'keep',
		]) {
			t.true(entries.includes(present), present);
		}

		for (const absent of [
			'lib/.wh.code.c',
			'.wh.new.txt',
			'.wh.keep',
			'.wh.tmpdir',
			'.wh.data.txt',
			'.wh.gone',
		]) {
			t.false(entries.includes(absent), absent);
		}

		t.deepEqual(checkStoreConsistency(container.files), []);
	});
}

/** What `ls` and `inspect` say about a layer's size and counts. */
async function layerStats(t: ExecutionContext, store: StoreUnderTest, name: string) {
	const listed = (JSON.parse(await cli(t, store, ['ls', '--json'])) as SnapshotEntry[]).find(
		(entry) => entry.name === name,
	);
	const {layer} = JSON.parse(await cli(t, store, ['inspect', name, '--json'])) as {layer: LayerRecord};
	return {
		ls: {files: listed?.files, size: listed?.size},
		inspect: {
			files: layer.files,
			directories: layer.directories,
			deletions: layer.deletions,
			size: layer.size,
		},
	};
}

/** The `written` counts of a run's `--json-file` summary. */
async function writtenBy(t: ExecutionContext, store: StoreUnderTest, args: string[], script: string) {
	const summaryFile = path.join(store.sandbox.root, `summary-${Math.random().toString(36).slice(2)}.json`);
	await run(t, store, [...args, '--json-file', summaryFile], script);
	return (JSON.parse(readFileSync(summaryFile, 'utf8')) as {written: unknown}).written;
}

const statsScript =
	'rm README.md; rm -r lib/deep; rm -rf cache; mkdir cache; printf 12345 > cache/new; printf abc > added; mkdir fresh; ln -s added link';

for (const user of users) {
	test(`ls, inspect and --json-file count whiteout files as deletions and opaque markers as nothing (${user})`, async (t) => {
		const {plain, container} = twoStores(t, user, {'cache/old': 'old\n'});
		const results = [];
		for (const store of [plain, container]) {
			const promoted = await writtenBy(t, store, ['--promote', 'stats'], statsScript);
			const discarded = await writtenBy(
				t,
				store,
				['--base', 'stats'],
				'rm added; rm -rf cache; mkdir cache; echo 1 > one',
			);
			await cli(t, store, ['squash', 'stats', '--as', 'flat']);
			results.push({
				promoted,
				discarded,
				layer: await layerStats(t, store, 'stats'),
				squashed: await layerStats(t, store, 'flat'),
			});
		}

		const [plainResult, containerResult] = results;
		// link, cache/new, added and two whiteouts; cache, lib and fresh; 5 + 3 bytes.
		const layer = {
			ls: {files: 5, size: 8},
			inspect: {files: 5, directories: 3, deletions: 2, size: 8},
		};
		t.deepEqual(plainResult, {
			promoted: {files: 3, directories: 3, deletions: 2, bytes: 8},
			discarded: {files: 1, directories: 1, deletions: 1, bytes: 2},
			layer,
			squashed: layer,
		});
		t.deepEqual(containerResult, plainResult);
	});
}

for (const user of users) {
	test(`the store checker accepts a whiteout-files store and flags a broken one (${user})`, async (t) => {
		const {container} = twoStores(t, user, sourceFiles);
		await promote(t, container, 'base', undefined, diffChain.base);
		await promote(t, container, 'top', 'base', diffChain.top);
		await cli(t, container, ['squash', 'top', '--as', 'flat']);
		await cli(t, container, ['rm', 'top']);
		await cli(t, container, ['gc']);

		t.is(layerFormatOf(container), 'whiteout-files-1');
		await assertStoreAtRest(t, container.sandbox, {files: container.files});

		const layerTree = path.join(container.files, 'layers', refTargetOf(container, 'flat'));
		const baseTree = path.join(container.files, 'layers', refTargetOf(container, 'base'));
		await execa('mknod', [path.join(layerTree, 'device'), 'c', '0', '0']);
		await execa('setfattr', ['-n', 'user.overlay.opaque', '-v', 'y', path.join(layerTree, 'cache')]);
		writeFileSync(path.join(layerTree, '.wh.full'), 'not empty\n');
		writeFileSync(path.join(layerTree, 'docs/.wh.a.md'), '');
		mkdirSync(path.join(baseTree, 'docs/.wh..wh..opq'));

		const flat = `layer ${refTargetOf(container, 'flat')}`;
		t.deepEqual(
			checkStoreConsistency(container.files).sort(),
			[
				`${flat}: .wh.full is named as a whiteout but is not an empty regular file`,
				`${flat}: cache carries user.overlay.opaque, an overlay xattr the whiteout-files format does not use`,
				`${flat}: device is a 0/0 character device, a whiteout of the kernel's format`,
				`${flat}: docs/.wh.a.md deletes a.md, which is beside it`,
				`layer ${refTargetOf(container, 'base')}: docs/.wh..wh..opq is named as the opaque marker but is not a regular file`,
			].sort(),
		);

		writeFileSync(
			path.join(container.files, 'scratch-store.json'),
			JSON.stringify({scratchStore: 1, layerFormat: 'whiteout-files-2'}),
		);
		t.deepEqual(checkStoreConsistency(container.files), [
			'scratch-store.json records format 1/whiteout-files-2, not one of 1/overlay-userxattr-1, 1/whiteout-files-1',
		]);
	});
}

// The pure parts, as tables.

test('a whiteout-files listing tells whiteouts and opaque markers from content by name, type and size', (t) => {
	const listing = [
		'aaaaaa d 4096 ',
		'aaaaaa d 4096 dir',
		'aaaaaa f 0 dir/.wh..wh..opq',
		'aaaaaa f 0 dir/.wh.gone',
		'aaaaaa f 3 dir/.wh.full',
		'aaaaaa f 0 .wh.',
		'aaaaaa c 0 dev',
		'aaaaaa f 0 empty',
		'aaaaaa d 4096 .wh.dir',
		'',
	].join('\0');
	const entries = [
		{path: 'dir', directory: true},
		{path: 'dir/.wh..wh..opq', directory: false, marker: 'opaque'},
		{path: 'dir/.wh.gone', directory: false, marker: 'whiteout'},
		{path: 'dir/.wh.full', directory: false},
		{path: '.wh.', directory: false},
		{path: 'dev', directory: false},
		{path: 'empty', directory: false},
		{path: '.wh.dir', directory: true},
	];
	t.deepEqual(parseEntryListing(listing, 'whiteout-files-1'), new Map([['aaaaaa', entries]]));
	// The kernel's format reserves no names.
	t.deepEqual(
		parseEntryListing(listing),
		new Map([['aaaaaa', entries.map(({path: entryPath, directory}) => ({path: entryPath, directory}))]]),
	);
});

type WhiteoutFilesPlanCase = {
	title: string;
	below: LayerEntry[][];
	layer: LayerEntry[];
	xattrs?: Record<string, DirectoryXattrs>;
	expected: Partial<LayerPlan>;
};

const file = (entryPath: string): LayerEntry => ({path: entryPath, directory: false});
const directory = (entryPath: string): LayerEntry => ({path: entryPath, directory: true});
const whiteout = (entryPath: string): LayerEntry => ({path: entryPath, directory: false, marker: 'whiteout'});
const marker = (directoryPath: string): LayerEntry => ({
	path: `${directoryPath}/.wh..wh..opq`,
	directory: false,
	marker: 'opaque',
});

const whiteoutFilesPlanCases: WhiteoutFilesPlanCase[] = [
	{
		title: 'a whiteout file removes the file it deletes, and is copied',
		below: [[file('f')]],
		layer: [whiteout('.wh.f')],
		expected: {removals: ['f']},
	},
	{
		title: 'a whiteout file removes the directory it deletes',
		below: [[directory('d'), file('d/f')]],
		layer: [whiteout('.wh.d')],
		expected: {removals: ['d']},
	},
	{
		title: 'a whiteout file over an earlier one is left to the copy',
		below: [[whiteout('.wh.f')]],
		layer: [whiteout('.wh.f')],
		expected: {},
	},
	{
		title: 'a whiteout over nothing is kept: it may hide a file of the source',
		below: [[directory('d')]],
		layer: [directory('d'), whiteout('d/.wh.gone')],
		expected: {},
	},
	{
		title: 'a file re-created after its whiteout removes the whiteout file',
		below: [[directory('d'), whiteout('d/.wh.f')]],
		layer: [directory('d'), file('d/f')],
		expected: {removals: ['d/.wh.f']},
	},
	{
		title: 'a directory re-created after its whiteout removes the whiteout file and becomes opaque',
		below: [[whiteout('.wh.d')]],
		layer: [directory('d'), file('d/new')],
		expected: {removals: ['.wh.d'], opaque: ['d']},
	},
	{
		title: 'a directory over a file replaces it and becomes opaque',
		below: [[file('d')]],
		layer: [directory('d'), file('d/new')],
		expected: {removals: ['d'], opaque: ['d']},
	},
	{
		title: 'a directory with a marker replaces the directory below with everything in it',
		below: [[directory('d'), file('d/old')]],
		layer: [directory('d'), marker('d'), file('d/new')],
		expected: {removals: ['d']},
	},
	{
		title: 'a directory with a marker over a whiteout removes the whiteout file, and its marker is copied',
		below: [[whiteout('.wh.d')]],
		layer: [directory('d'), marker('d')],
		expected: {removals: ['.wh.d']},
	},
	{
		title: 'a directory with a marker over nothing is just copied',
		below: [],
		layer: [directory('d'), marker('d'), file('d/new')],
		expected: {},
	},
	{
		title: 'a plain directory merges with an opaque one below, which stays opaque',
		below: [[directory('d'), marker('d'), file('d/old')]],
		layer: [directory('d'), file('d/new'), whiteout('d/.wh.old')],
		expected: {removals: ['d/old']},
	},
	{
		title: 'entries inside a replaced directory are new, whatever was below',
		below: [[directory('d'), directory('d/e'), whiteout('d/.wh.f')]],
		layer: [directory('d'), marker('d'), directory('d/e'), file('d/f')],
		expected: {removals: ['d']},
	},
	{
		title: 'the whiteout xattr of the kernel format means nothing here; user xattrs still merge',
		below: [[directory('d'), file('d/old')]],
		layer: [directory('d')],
		xattrs: {d: {opaque: true, names: ['user.overlay.opaque']}},
		expected: {},
	},
	{
		title: 'a file deleted then re-created in a later layer, then deleted again',
		below: [[file('f')], [whiteout('.wh.f')], [file('f')]],
		layer: [whiteout('.wh.f')],
		expected: {removals: ['f']},
	},
];

for (const planCase of whiteoutFilesPlanCases) {
	test(`planLayer (whiteout files): ${planCase.title}`, (t) => {
		const tree = createSquashTree();
		for (const entries of planCase.below) {
			planLayer(tree, entries, new Map(), 'whiteout-files-1');
		}

		t.deepEqual(
			planLayer(tree, planCase.layer, new Map(Object.entries(planCase.xattrs ?? {})), 'whiteout-files-1'),
			{
				removals: [],
				opaque: [],
				staleXattrs: [],
				...planCase.expected,
			},
		);
	});
}

test('measureUpper counts whiteouts by the layer format and markers as nothing', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	const upper = path.join(sandbox.root, 'upper');
	writeTree(upper, {
		'.wh.gone': '',
		'.wh.full': 'not a whiteout\n',
		'dir/.wh..wh..opq': '',
		'dir/file': '12345',
		'empty/': '',
	});
	await execa('mknod', [path.join(upper, 'device'), 'c', '0', '0']);
	await execa('mknod', [path.join(upper, 'null'), 'c', '1', '3']);

	t.deepEqual(await measureUpper(upper, 'whiteout-files-1'), {
		files: 4,
		directories: 2,
		deletions: 1,
		bytes: 20,
	});
	// In the kernel's format the .wh. files are files, and the 0/0 device is the whiteout.
	const kernel = {files: 5, directories: 2, deletions: 1, bytes: 20};
	t.deepEqual(await measureUpper(upper, 'overlay-userxattr-1'), kernel);
	t.deepEqual(await measureUpper(upper), kernel);
});
