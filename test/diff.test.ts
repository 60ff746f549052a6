import {rmSync} from 'node:fs';
import path from 'node:path';
import test, {type ExecutionContext} from 'ava';
import {dir} from 'tmp-promise';
import {renderDiff} from '../src/cli/render-diff.js';
import {NotFoundError} from '../src/errors.js';
import {
	diffLayer,
	type LayerDiff,
	lookupStack,
	parseOpaqueDirectories,
	type StackEntry,
} from '../src/layer/diff.js';
import {unquoteGetfattrPath} from '../src/system/getfattr.js';
import {makeSandbox, type Sandbox, scratch, scratchRun, users} from './helpers/scratch.js';

/** Diff as the sandbox's user: in this process for root, through the CLI (`scratch diff --json`) for nobody. */
async function diffAs(sandbox: Sandbox, reference: string): Promise<LayerDiff> {
	if (sandbox.user === 'root') {
		return diffLayer({store: sandbox.store, reference});
	}

	const result = await scratch(sandbox, ['diff', reference, '--store', sandbox.store, '--json']);
	if (result.exitCode !== 0) {
		throw new Error(
			String(result.stderr)
				.replace(/^scratch: /, '')
				.trim(),
		);
	}

	return JSON.parse(String(result.stdout)) as LayerDiff;
}

/** One line per change, for compact comparisons: change, path, type and `opaque` when set. */
function summarize(diff: LayerDiff): string[] {
	return diff.changes.map(
		(change) => `${change.change} ${change.path} ${change.type}${change.opaque ? ' opaque' : ''}`,
	);
}

async function promote(
	t: ExecutionContext,
	sandbox: Sandbox,
	name: string,
	script: string,
	extraArguments: string[] = [],
): Promise<void> {
	const result = await scratchRun(sandbox, [
		'--promote',
		name,
		...extraArguments,
		'--',
		'sh',
		'-c',
		script,
		'sh',
		oddName,
	]);
	t.is(result.exitCode, 0, String(result.stderr));
}

async function keep(t: ExecutionContext, sandbox: Sandbox, script: string, extraArguments: string[] = []) {
	const result = await scratchRun(sandbox, ['--keep', ...extraArguments, '--', 'sh', '-c', script]);
	t.is(result.exitCode, 0, String(result.stderr));
	const runId = /scratch: kept run ([\da-z]{12});/.exec(String(result.stderr))?.[1];
	if (!runId) {
		throw new Error(`no kept run id in: ${String(result.stderr)}`);
	}

	return runId;
}

/** A directory name getfattr has to quote: a backslash, a newline and a non-ASCII letter. */
const oddName = 'odd \\ dir\né';

for (const user of users) {
	test(`a layer lists added, modified and deleted paths, and only the directories whose attributes changed (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user, {
			'docs/a.md': 'a\n',
			'docs/b.md': 'b\n',
			'old/x': 'x\n',
			'old/y/z': 'z\n',
		});
		await promote(
			t,
			sandbox,
			'changes',
			`echo new > added.txt
mkdir -p newdir/sub && echo n > newdir/sub/f
echo more >> README.md
chmod 600 lib/code.c
chmod 700 docs
echo d > lib/deep/new.txt
rm docs/a.md
rm -r old
ln -s README.md link`,
		);

		const diff = await diffAs(sandbox, 'changes');

		t.like(diff.subject, {kind: 'layer', name: 'changes'});
		t.deepEqual(summarize(diff), [
			'M README.md file',
			'A added.txt file',
			'M docs directory',
			'D docs/a.md file',
			'M lib/code.c file',
			'A lib/deep/new.txt file',
			'A link symlink',
			'A newdir directory',
			'A newdir/sub directory',
			'A newdir/sub/f file',
			'D old directory',
		]);
	});

	test(`a directory replaced by rm -rf and mkdir is modified and opaque, and the entries it hides are deleted (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user, {
			'cache/old1': '1\n',
			'cache/keep': 'k\n',
			'cache/sub/old2': '2\n',
			[`${oddName}/old.txt`]: 'o\n',
		});
		await promote(
			t,
			sandbox,
			'replaced',
			'rm -rf cache "$1" && mkdir -p cache/sub "$1" && touch cache/new cache/keep "$1/new.txt"',
		);

		const diff = await diffAs(sandbox, 'replaced');

		t.deepEqual(summarize(diff), [
			'M cache directory opaque',
			'M cache/keep file',
			'A cache/new file',
			'D cache/old1 file',
			// Nothing below merges into a directory inside a replaced one: it replaces what was there too.
			'M cache/sub directory opaque',
			'D cache/sub/old2 file',
			`M ${oddName} directory opaque`,
			`A ${oddName}/new.txt file`,
			`D ${oddName}/old.txt file`,
		]);
	});

	test(`a layer on another layer is compared with that layer and the source, whose whiteouts hide source files (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		await promote(t, sandbox, 'base', 'rm README.md && rm -r lib/deep && echo b > base.txt && mkdir tools');
		await promote(
			t,
			sandbox,
			'top',
			'echo again > README.md && echo more >> base.txt && touch tools/x && rm lib/code.c && mkdir lib/deep',
			['--base', 'base'],
		);

		t.deepEqual(summarize(await diffAs(sandbox, 'base')), [
			'D README.md file',
			'A base.txt file',
			'D lib/deep directory',
			'A tools directory',
		]);
		t.deepEqual(summarize(await diffAs(sandbox, 'top')), [
			'A README.md file',
			'M base.txt file',
			'D lib/code.c file',
			'A lib/deep directory',
			'A tools/x file',
		]);
	});

	test(`a kept run is diffed by its id against its base layers and the source (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		await promote(t, sandbox, 'base', 'echo b > base.txt');
		const runId = await keep(t, sandbox, 'touch kept.txt && rm README.md && echo more >> base.txt', [
			'--base',
			'base',
		]);

		const diff = await diffAs(sandbox, runId);

		t.deepEqual(diff.subject, {kind: 'run', id: runId});
		t.deepEqual(summarize(diff), ['D README.md file', 'M base.txt file', 'A kept.txt file']);
	});

	test(`an unknown reference is a not-found error (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		await promote(t, sandbox, 'some', 'touch x');
		for (const reference of [
			'nosuch',
			'abcdef',
			'abcdefghjkmn',
			'../etc',
			...(user === 'root' ? ['-x'] : []),
		]) {
			await t.throwsAsync(diffAs(sandbox, reference), {
				message: /^(NotFoundError: )?no snapshot name, kept run or layer ".*" in store .*; see scratch ls/,
			});
		}

		if (user === 'nobody') {
			// On the command line a word starting with - is an option, never a NAME: a usage error.
			const result = await scratch(sandbox, ['diff', '-x', '--store', sandbox.store]);
			t.is(result.exitCode, 2);
			t.regex(
				String(result.stderr),
				/^scratch: unknown option -x for scratch diff; a name cannot start with '-'; see scratch diff --help\n?$/,
			);
		}
	});
}

test('a directory the command made unreadable is listed, and read into when the reader may (root)', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	await promote(t, sandbox, 'locked', 'mkdir locked && touch locked/f && chmod 000 locked && touch after');

	t.deepEqual(summarize(await diffAs(sandbox, 'locked')), [
		'A after file',
		'A locked directory',
		'A locked/f file',
	]);
});

test('a directory the command made unreadable does not stop the diff; what it holds is not listed (nobody)', async (t) => {
	const sandbox = makeSandbox(t, 'nobody', {'gone/old': 'o\n'});
	await promote(
		t,
		sandbox,
		'locked',
		'rm -rf gone && mkdir -p gone locked && touch locked/f && chmod 000 gone locked && touch after',
	);

	// gone/old is hidden below an opaque directory nobody may not read: neither the attribute nor the
	// listing can be read, so gone shows as a plain modified directory.
	t.deepEqual(summarize(await diffAs(sandbox, 'locked')), [
		'A after file',
		'M gone directory',
		'A locked directory',
	]);
});

test('a name wins over a kept run id that looks the same, and a layer id finds the layer without a name', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	const runId = await keep(t, sandbox, 'touch from-run');
	t.deepEqual(summarize(await diffLayer({store: sandbox.store, reference: runId})), ['A from-run file']);

	await promote(t, sandbox, runId, 'touch from-layer');
	const byName = await diffLayer({store: sandbox.store, reference: runId});
	t.like(byName.subject, {kind: 'layer', name: runId});
	t.deepEqual(summarize(byName), ['A from-layer file']);

	const byId = await diffLayer({store: sandbox.store, reference: byName.subject.id});
	t.deepEqual(byId.subject, {kind: 'layer', id: byName.subject.id});
	t.deepEqual(byId.changes, byName.changes);
});

test('when the source tree is gone, everything in the layer is added and whiteouts delete something unknown', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	await promote(t, sandbox, 'orphan', 'echo more >> README.md && rm lib/code.c && touch new');
	rmSync(sandbox.src, {recursive: true});

	t.deepEqual(summarize(await diffLayer({store: sandbox.store, reference: 'orphan'})), [
		'A README.md file',
		'A lib directory',
		'D lib/code.c other',
		'A new file',
	]);
});

test('an unknown reference or store throws NotFoundError', async (t) => {
	const temporary = await dir({unsafeCleanup: true});
	t.teardown(temporary.cleanup);
	const store = path.join(temporary.path, 'store');

	await t.throwsAsync(diffLayer({store, reference: 'anything'}), {
		instanceOf: NotFoundError,
		message: /^no scratch store at /,
	});

	const sandbox = makeSandbox(t, 'root');
	await promote(t, sandbox, 'some', 'touch x');
	await t.throwsAsync(diffLayer({store: sandbox.store, reference: 'other'}), {
		instanceOf: NotFoundError,
		message: `no snapshot name, kept run or layer "other" in store ${sandbox.store}; see scratch ls for names (scratch run --keep prints kept run ids)`,
	});
});

/** A stack for lookup tables, top tree first: f file, d directory, o opaque directory, w whiteout. */
function probeOf(trees: Array<Record<string, 'f' | 'd' | 'o' | 'w'>>) {
	return (tree: number, relativePath: string): StackEntry => {
		const kinds = {
			f: {kind: 'file'},
			d: {kind: 'directory', opaque: false},
			o: {kind: 'directory', opaque: true},
			w: {kind: 'whiteout'},
		} as const;
		const entry = trees[tree]?.[relativePath];
		return entry ? kinds[entry] : {kind: 'absent'};
	};
}

test('lookupStack finds a path as overlayfs would, from the top tree down', (t) => {
	const cases: Array<{
		title: string;
		trees: Array<Record<string, 'f' | 'd' | 'o' | 'w'>>;
		lookup: string;
		expected: ReturnType<typeof lookupStack>;
	}> = [
		{title: 'nothing anywhere', trees: [{}, {}], lookup: 'a', expected: undefined},
		{title: 'no trees at all', trees: [], lookup: 'a', expected: undefined},
		{
			title: 'a file in the bottom tree',
			trees: [{}, {a: 'd', 'a/b': 'f'}],
			lookup: 'a/b',
			expected: {type: 'file', trees: [1]},
		},
		{
			title: 'the topmost file wins',
			trees: [{a: 'f'}, {a: 'f'}],
			lookup: 'a',
			expected: {type: 'file', trees: [0]},
		},
		{title: 'a whiteout at the path hides it', trees: [{a: 'w'}, {a: 'f'}], lookup: 'a', expected: undefined},
		{
			title: 'a whiteout at an ancestor hides it',
			trees: [{a: 'w'}, {a: 'd', 'a/b': 'f'}],
			lookup: 'a/b',
			expected: undefined,
		},
		{
			title: 'a whiteout in a middle tree hides the bottom one, not the top one',
			trees: [{a: 'f'}, {a: 'w'}, {a: 'f'}],
			lookup: 'a',
			expected: {type: 'file', trees: [0]},
		},
		{
			title: 'an opaque ancestor hides the trees under it',
			trees: [{a: 'o'}, {a: 'd', 'a/b': 'f'}],
			lookup: 'a/b',
			expected: undefined,
		},
		{
			title: 'an opaque ancestor keeps its own entries',
			trees: [
				{a: 'o', 'a/b': 'f'},
				{a: 'd', 'a/b': 'f'},
			],
			lookup: 'a/b',
			expected: {type: 'file', trees: [0]},
		},
		{
			title: 'directories merge down to an opaque one',
			trees: [{a: 'd'}, {a: 'o'}, {a: 'd'}],
			lookup: 'a',
			expected: {type: 'directory', trees: [0, 1]},
		},
		{
			title: 'a file above a directory hides the directory and its entries',
			trees: [{a: 'f'}, {a: 'd', 'a/b': 'f'}],
			lookup: 'a/b',
			expected: undefined,
		},
		{
			title: 'a directory above a file hides the file',
			trees: [{a: 'd'}, {a: 'f'}],
			lookup: 'a',
			expected: {type: 'directory', trees: [0]},
		},
		{
			title: 'an entry below an ancestor that only a lower tree has',
			trees: [{a: 'd'}, {a: 'd', 'a/b': 'd', 'a/b/c': 'f'}],
			lookup: 'a/b/c',
			expected: {type: 'file', trees: [1]},
		},
	];
	for (const {title, trees, lookup, expected} of cases) {
		t.deepEqual(lookupStack(lookup, trees.length, probeOf(trees)), expected, title);
	}
});

test('getfattr output yields the opaque directories, with quoted names unescaped', (t) => {
	const output = [
		'# file: /s/layers/abcdef/plain',
		'user.overlay.opaque="y"',
		'',
		'# file: /s/layers/abcdef/odd \\134 dir\\012\\303\\251',
		'user.overlay.opaque="y"',
		'',
		'# file: /s/layers/abcdef/xwhiteouts',
		'user.overlay.opaque="x"',
		'',
		'# file: /s/layers/abcdef/other',
		'user.overlay.impure="y"',
		'',
	].join('\n');

	t.deepEqual(
		[...parseOpaqueDirectories(output)],
		['/s/layers/abcdef/plain', '/s/layers/abcdef/odd \\ dir\né'],
	);
	t.is(unquoteGetfattrPath('a\\040b'), 'a b');
	t.is(unquoteGetfattrPath('no escapes'), 'no escapes');
});

test('renderDiff prints one line per change, with ANSI colours only when asked', (t) => {
	const diff: LayerDiff = {
		subject: {kind: 'layer', id: 'abcdef'},
		changes: [
			{change: 'A', path: 'added.txt', type: 'file'},
			{change: 'M', path: 'cache', type: 'directory', opaque: true},
			{change: 'D', path: 'cache/old', type: 'directory'},
			{change: 'M', path: 'line\nbreak', type: 'file'},
		],
	};
	const cases: Array<[boolean, string]> = [
		[false, 'A added.txt\nM cache/ (replaced)\nD cache/old/\nM "line\\nbreak"\n'],
		[
			true,
			'\u001B[32mA added.txt\u001B[39m\n\u001B[33mM cache/ (replaced)\u001B[39m\n\u001B[31mD cache/old/\u001B[39m\n\u001B[33mM "line\\nbreak"\u001B[39m\n',
		],
	];
	for (const [color, expected] of cases) {
		t.is(renderDiff(diff, {color}), expected, `color: ${color}`);
	}

	for (const color of [false, true]) {
		t.is(renderDiff({subject: diff.subject, changes: []}, {color}), '');
	}
});
