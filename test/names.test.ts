import {existsSync, readdirSync, readFileSync, statSync} from 'node:fs';
import path from 'node:path';
import test, {type ExecutionContext} from 'ava';
import {InvalidNameError, UsageError} from '../src/errors.js';
import {checkName, maxNameLength, nameFromRefFile, nameProblem, refFileName} from '../src/store/names.js';
import type {SnapshotEntry} from '../src/store/snapshots.js';
import {promoteLayer} from './helpers/layers.js';
import {
	fingerprintTree,
	makeSandbox,
	nobodyId,
	type Sandbox,
	scratch,
	scratchRun,
	users,
} from './helpers/scratch.js';

const longestName = 'n'.repeat(maxNameLength);
const tooLongName = 'n'.repeat(maxNameLength + 1);

const validNames = [
	'a',
	'Z',
	'0',
	'deps',
	'ws/postinit',
	'a/b/c/d',
	'v1.2.3',
	'a..b',
	'a_b-c.d',
	'A-1/b_2/c.3',
	'abcdef',
	longestName,
	`${'n'.repeat(62)}/${'n'.repeat(65)}`,
];

// Each invalid name with the part of its problem the message must name.
const invalidNames: Array<[string, RegExp]> = [
	['', /^it is empty$/],
	['.', /^segment '\.' must start with a letter or digit$/],
	['..', /^segment '\.\.' must start with a letter or digit$/],
	['-x', /^segment '-x' must start with a letter or digit$/],
	['_x', /must start with a letter or digit/],
	['.hidden', /must start with a letter or digit/],
	['a/../b', /^segment '\.\.' must start/],
	['a//b', /empty segment/],
	['/a', /empty segment/],
	['a/', /empty segment/],
	['/', /empty segment/],
	[tooLongName, /^it is 129 characters long, the limit is 128$/],
	['a b', /^segment 'a b' holds a character other than letters, digits/],
	['é', /must start with a letter or digit/],
	['aé', /holds a character other than/],
	['a+b', /holds a character other than/],
	['a:b', /holds a character other than/],
	['a,b', /holds a character other than/],
	['a\\b', /holds a character other than/],
	['a\nb', /holds a character other than/],
	['a*', /holds a character other than/],
];

test('nameProblem accepts segments of letters, digits, dots, underscores and dashes up to 128 characters', (t) => {
	for (const name of validNames) {
		t.is(nameProblem(name), undefined, name);
	}
});

test('nameProblem says what is wrong with every kind of invalid name', (t) => {
	for (const [name, problem] of invalidNames) {
		t.regex(nameProblem(name) ?? 'accepted', problem, JSON.stringify(name));
	}
});

test('checkName returns a valid name and throws a usage error naming the role and the rule otherwise', (t) => {
	t.is(checkName('ws/postinit', '--promote'), 'ws/postinit');
	for (const [name] of invalidNames) {
		const error = t.throws(() => checkName(name, '--promote'), {instanceOf: InvalidNameError});
		t.true(error instanceof UsageError, 'an invalid name is a usage error (exit 2)');
		t.is(error?.code, 'ERR_SCRATCH_INVALID_NAME');
		t.true(error?.message.startsWith(`invalid --promote ${JSON.stringify(name)}: `), error?.message);
		t.regex(error?.message ?? '', /; use segments of letters, digits, '\.', '_' and '-' separated by \/$/);
	}

	t.regex(
		t.throws(() => checkName('a b'), {instanceOf: InvalidNameError})?.message ?? '',
		/^invalid name "a b"/,
	);
});

test('refFileName and nameFromRefFile map every valid name to one file name and back', (t) => {
	const table: Array<[string, string]> = [
		['deps', 'deps'],
		['ws/postinit', 'ws+postinit'],
		['a/b/c', 'a+b+c'],
		['v1.2', 'v1.2'],
	];
	for (const [name, file] of table) {
		t.is(refFileName(name), file);
		t.is(nameFromRefFile(file), name);
	}

	for (const name of validNames) {
		t.false(refFileName(name).includes('/'), name);
		t.is(nameFromRefFile(refFileName(name)), name);
	}
});

test('nameFromRefFile ignores files that are not refs: temporary files and malformed names', (t) => {
	for (const file of [
		'.deps.123.abcdefghij.tmp',
		'.ws+postinit.1.x.tmp',
		'+deps',
		'deps+',
		'a++b',
		'a b',
		'',
	]) {
		t.is(nameFromRefFile(file), undefined, file);
	}
});

function store(sandbox: Sandbox, ...args: string[]) {
	return scratch(sandbox, [...args, '--store', sandbox.store]);
}

async function listNames(t: ExecutionContext, sandbox: Sandbox): Promise<SnapshotEntry[]> {
	const result = await store(sandbox, 'ls', '--json');
	t.is(result.exitCode, 0, String(result.stderr));
	return JSON.parse(String(result.stdout)) as SnapshotEntry[];
}

function nameMap(entries: SnapshotEntry[]): Record<string, string> {
	return Object.fromEntries(entries.map((entry) => [entry.name, entry.layer]));
}

/** One line on stderr, prefixed like every scratch error. */
function oneErrorLine(stderr: unknown): boolean {
	return /^scratch: [^\n]+\n?$/.test(String(stderr));
}

for (const user of users) {
	test(`ls lists every name with its layer, parent, depth, size, files, created and command (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const empty = await store(sandbox, 'ls');
		t.is(empty.exitCode, 1, 'no store yet');
		const started = Date.now();
		const app = await promoteLayer(t, sandbox, 'app', 'printf 12345 > a; printf 123 > b');
		const postinit = await promoteLayer(t, sandbox, 'ws/postinit', 'printf 1 > c; rm README.md', ['app']);

		const entries = await listNames(t, sandbox);
		t.deepEqual(
			entries.map((entry) => Object.keys(entry).sort()),
			[0, 1].map(() => ['command', 'created', 'depth', 'files', 'layer', 'name', 'origin', 'parent', 'size']),
		);
		t.like(entries[0], {
			name: 'app',
			layer: app,
			parent: null,
			depth: 1,
			size: 8,
			files: 2,
			command: ['sh', '-c', 'printf 12345 > a; printf 123 > b'],
			origin: 'run',
		});
		t.like(entries[1], {
			name: 'ws/postinit',
			layer: postinit,
			parent: app,
			depth: 2,
			size: 1,
			// One file and one deletion.
			files: 2,
			command: ['sh', '-c', 'printf 1 > c; rm README.md'],
		});
		for (const entry of entries) {
			const created = Date.parse(entry.created);
			t.true(created >= started - 1000 && created <= Date.now(), entry.created);
		}

		const human = await store(sandbox, 'ls');
		t.is(human.exitCode, 0, String(human.stderr));
		const lines = String(human.stdout).split('\n');
		const header = lines[0] ?? '';
		const columns = [...header.matchAll(/\S+/g)].map((match) => ({title: match[0], start: match.index}));
		t.deepEqual(
			columns.map((column) => column.title),
			['NAME', 'LAYER', 'PARENT', 'DEPTH', 'SIZE', 'FILES', 'CREATED', 'COMMAND'],
		);
		const rows: string[][] = [
			[
				'app',
				app,
				'-',
				'1',
				'8 B',
				'2',
				entries[0]?.created.replace('T', ' ').slice(0, 19) ?? '',
				"sh -c 'printf 12345 > a; printf 123 > b'",
			],
			[
				'ws/postinit',
				postinit,
				app,
				'2',
				'1 B',
				'2',
				entries[1]?.created.replace('T', ' ').slice(0, 19) ?? '',
				"sh -c 'printf 1 > c; rm README.md'",
			],
		];
		t.is(lines.length, 3, String(human.stdout));
		for (const [index, row] of rows.entries()) {
			const line = lines[index + 1] ?? '';
			for (const [column, cell] of row.entries()) {
				const {start} = columns[column] ?? {start: -1};
				t.is(line.slice(start, start + cell.length), cell, `${line}: column ${column}`);
				t.true(start === 0 || line.slice(start - 2, start) === '  ', `${line}: column ${column} is aligned`);
			}
		}
	});

	test(`tag gives a layer a second name and refuses to move an existing name without --force (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const app = await promoteLayer(t, sandbox, 'app', 'echo app > which');
		const tools = await promoteLayer(t, sandbox, 'tools', 'echo tools > which');

		const tagged = await store(sandbox, 'tag', 'app', 'release/v1');
		t.is(tagged.exitCode, 0, String(tagged.stderr));
		t.is(String(tagged.stdout), `release/v1 -> layer ${app}`);
		const again = await store(sandbox, 'tag', 'app', 'release/v1');
		t.is(again.exitCode, 0, 'tagging the same layer again is not a conflict');

		const refused = await store(sandbox, 'tag', 'app', 'tools');
		t.is(refused.exitCode, 1);
		t.true(oneErrorLine(refused.stderr), String(refused.stderr));
		t.regex(String(refused.stderr), new RegExp(`tools exists already \\(layer ${tools}\\).*--force`));
		t.deepEqual(nameMap(await listNames(t, sandbox)), {app, 'release/v1': app, tools});

		const forced = await store(sandbox, 'tag', '--force', 'app', 'tools');
		t.is(forced.exitCode, 0, String(forced.stderr));
		t.deepEqual(nameMap(await listNames(t, sandbox)), {app, 'release/v1': app, tools: app});

		// A layer id names a layer too.
		const byId = await store(sandbox, 'tag', tools, 'old-tools');
		t.is(byId.exitCode, 0, String(byId.stderr));
		t.is(nameMap(await listNames(t, sandbox))['old-tools'], tools);

		const unknown = await store(sandbox, 'tag', 'nope', 'other');
		t.is(unknown.exitCode, 1);
		t.regex(String(unknown.stderr), /^scratch: no snapshot named nope in store .*; see scratch ls\n?$/);

		const viaTag = await scratchRun(sandbox, ['--base', 'release/v1', '--', 'cat', 'which']);
		t.is(viaTag.exitCode, 0, String(viaTag.stderr));
		t.is(String(viaTag.stdout), 'app');
	});

	test(`rm removes names all or nothing: an unknown or invalid name among them removes none (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const app = await promoteLayer(t, sandbox, 'app', 'echo app > which');
		const tag = await store(sandbox, 'tag', 'app', 'ws/copy');
		t.is(tag.exitCode, 0, String(tag.stderr));
		const all = {app, 'ws/copy': app};

		const unknown = await store(sandbox, 'rm', 'app', 'nope', 'ws/copy');
		t.is(unknown.exitCode, 1);
		t.regex(
			String(unknown.stderr),
			/^scratch: no snapshot named nope in store .*; nothing was removed; see scratch ls\n?$/,
		);
		t.deepEqual(nameMap(await listNames(t, sandbox)), all);

		const invalid = await store(sandbox, 'rm', 'app', 'a b');
		t.is(invalid.exitCode, 2);
		t.true(oneErrorLine(invalid.stderr), String(invalid.stderr));
		t.deepEqual(nameMap(await listNames(t, sandbox)), all);

		const removed = await store(sandbox, 'rm', 'ws/copy', '--json');
		t.is(removed.exitCode, 0, String(removed.stderr));
		t.like(JSON.parse(String(removed.stdout)), {removed: [{name: 'ws/copy', layer: app}]});
		t.deepEqual(nameMap(await listNames(t, sandbox)), {app});
		t.deepEqual(readdirSync(path.join(sandbox.store, 'refs')), ['app']);

		const last = await store(sandbox, 'rm', 'app');
		t.is(last.exitCode, 0, String(last.stderr));
		t.is(String(last.stdout), `removed app (layer ${app})`);
		const human = await store(sandbox, 'ls');
		t.is(String(human.stdout), 'no snapshots yet: make one with scratch run --promote NAME -- CMD');
		t.true(existsSync(path.join(sandbox.store, 'layers', app)), 'the layer stays until gc');
	});

	test(`hierarchical names work in ls, inspect and --base, stored as one ref file each (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const postinit = await promoteLayer(t, sandbox, 'ws/postinit', 'echo init > state');
		const deeper = await promoteLayer(t, sandbox, 'ws/a/b.c_d-e', 'echo more >> state', ['ws/postinit']);
		t.deepEqual(readdirSync(path.join(sandbox.store, 'refs')).sort(), ['ws+a+b.c_d-e', 'ws+postinit']);
		t.like(JSON.parse(readFileSync(path.join(sandbox.store, 'refs', 'ws+postinit'), 'utf8')), {
			layer: postinit,
		});
		t.deepEqual(nameMap(await listNames(t, sandbox)), {'ws/a/b.c_d-e': deeper, 'ws/postinit': postinit});

		const inspected = await store(sandbox, 'inspect', 'ws/a/b.c_d-e', '--json');
		t.is(inspected.exitCode, 0, String(inspected.stderr));
		const details = JSON.parse(String(inspected.stdout)) as {
			names: string[];
			chain: Array<{id: string; names: string[]}>;
		};
		t.deepEqual(details.names, ['ws/a/b.c_d-e']);
		t.deepEqual(
			details.chain.map(({id, names}) => ({id, names})),
			[
				{id: postinit, names: ['ws/postinit']},
				{id: deeper, names: ['ws/a/b.c_d-e']},
			],
		);

		const human = await store(sandbox, 'inspect', 'ws/postinit');
		t.is(human.exitCode, 0, String(human.stderr));
		t.regex(String(human.stdout), new RegExp(`^layer: +${postinit}\\nnames: +ws/postinit\\n`));

		const base = await scratchRun(sandbox, ['--base', 'ws/a/b.c_d-e', '--', 'cat', 'state']);
		t.is(base.exitCode, 0, String(base.stderr));
		t.is(String(base.stdout), 'init\nmore');
	});

	test(`an invalid --promote name fails the run with 125 and one line before anything is created (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const before = fingerprintTree(sandbox.src);
		const marker = path.join(sandbox.root, 'command-ran');
		for (const [name] of invalidNames.filter(([name]) => name !== '' && !name.includes('\n'))) {
			const result = await scratchRun(sandbox, ['--promote', name, '--', 'touch', marker]);
			t.is(result.exitCode, 125, JSON.stringify(name));
			t.true(oneErrorLine(result.stderr), String(result.stderr));
			t.true(
				String(result.stderr).startsWith(`scratch: invalid --promote ${JSON.stringify(name)}: `),
				String(result.stderr),
			);
		}

		const empty = await scratchRun(sandbox, ['--promote', '', '--', 'touch', marker]);
		t.is(empty.exitCode, 125);
		t.regex(String(empty.stderr), /^scratch: --promote needs a non-empty value \(NAME\)\n?$/);
		t.false(existsSync(marker), 'the command never ran');
		for (const directory of ['runs', 'layers', 'refs', 'tmp', 'kept']) {
			const full = path.join(sandbox.store, directory);
			t.deepEqual(existsSync(full) ? readdirSync(full) : [], [], directory);
		}

		t.deepEqual(fingerprintTree(sandbox.src), before);
	});

	test(`an invalid NEW-NAME for tag or NAME for promote is a usage error (exit 2) with one line (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const app = await promoteLayer(t, sandbox, 'app', 'echo app > which');
		for (const [name] of invalidNames.filter(([name]) => !name.includes('\n'))) {
			const result = await store(sandbox, 'tag', 'app', name);
			t.is(result.exitCode, 2, JSON.stringify(name));
			t.true(oneErrorLine(result.stderr), String(result.stderr));
			// yargs takes '-x' for an option, so that one is a missing argument rather than an invalid name.
			if (!name.startsWith('-')) {
				t.true(
					String(result.stderr).startsWith(`scratch: invalid NEW-NAME ${JSON.stringify(name)}: `),
					String(result.stderr),
				);
			}
		}

		const keep = await scratchRun(sandbox, ['--keep', '--', 'true']);
		const runId = /kept run ([a-z\d]{12})/.exec(String(keep.stderr))?.[1] ?? '';
		t.truthy(runId, String(keep.stderr));
		const promoted = await store(sandbox, 'promote', runId, 'a//b');
		t.is(promoted.exitCode, 2);
		t.regex(String(promoted.stderr), /^scratch: invalid NAME "a\/\/b": [^\n]+\n?$/);
		t.true(existsSync(path.join(sandbox.store, 'kept', runId, 'upper')), 'the kept run is untouched');
		t.deepEqual(nameMap(await listNames(t, sandbox)), {app});
		t.deepEqual(readdirSync(path.join(sandbox.store, 'refs')), ['app']);
	});
}

test("root listing an unprivileged user's store leaves every layer record readable to its owner", async (t) => {
	const sandbox = makeSandbox(t, 'nobody');
	const app = await promoteLayer(t, sandbox, 'app', 'echo app > a');
	const tools = await promoteLayer(t, sandbox, 'tools', 'echo tools > b', ['app']);
	const asRoot = await scratch({user: 'root'}, ['ls', '--store', sandbox.store, '--json']);
	t.is(asRoot.exitCode, 0, String(asRoot.stderr));
	t.deepEqual(nameMap(JSON.parse(String(asRoot.stdout)) as SnapshotEntry[]), {app, tools});
	const inspected = await scratch({user: 'root'}, ['inspect', '--store', sandbox.store, 'tools']);
	t.is(inspected.exitCode, 0, String(inspected.stderr));
	for (const id of [app, tools]) {
		t.is(statSync(path.join(sandbox.store, 'layers', `${id}.json`)).uid, nobodyId, id);
	}

	t.deepEqual(nameMap(await listNames(t, sandbox)), {app, tools});
	const base = await scratchRun(sandbox, ['--base', 'tools', '--', 'cat', 'a', 'b']);
	t.is(base.exitCode, 0, String(base.stderr));
	t.is(String(base.stdout), 'app\ntools');
});
