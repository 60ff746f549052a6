import {existsSync, readdirSync, readFileSync, statSync, symlinkSync} from 'node:fs';
import path from 'node:path';
import test, {type ExecutionContext} from 'ava';
import type {WorkspaceReset, WorkspaceSnapshot, WorkspaceSnapshots} from '../src/workspace/workspaces.js';
import {promoteLayer} from './helpers/layers.js';
import {
	chownTree,
	eventually,
	fingerprintTree,
	makeSandbox,
	nobodyId,
	type Sandbox,
	scratch,
	scratchRun,
	type User,
	users,
	waitForLine,
} from './helpers/scratch.js';
import {assertStoreAtRest, completeLayers, refTarget} from './helpers/store-check.js';
import {viewOf, ws, wsJson, wsSh} from './helpers/workspaces.js';

type WorkspaceRecord = {name: string; state: string; layers: string[]; src: string};

function workspaceRecord(sandbox: Sandbox, name: string): WorkspaceRecord {
	return JSON.parse(
		readFileSync(path.join(sandbox.store, 'workspaces', name, 'workspace.json'), 'utf8'),
	) as WorkspaceRecord;
}

async function init(t: ExecutionContext, sandbox: Sandbox, name: string, args: string[] = []) {
	const result = await ws(sandbox, 'init', name, args);
	t.is(result.exitCode, 0, String(result.stderr));
	t.regex(
		String(result.stderr),
		new RegExp(`workspace ${name} is ready on .*; ${name}/postinit is layer [a-z\\d]{6}`),
	);
	return result;
}

async function gc(t: ExecutionContext, sandbox: Sandbox) {
	const result = await scratch(sandbox, ['gc', '--store', sandbox.store, '--json']);
	t.is(result.exitCode, 0, String(result.stderr));
	return JSON.parse(String(result.stdout)) as {layers: string[]; abandonedWorkspaces: string[]};
}

/** Everything a refused command must leave as it was: names, layers, workspaces and their writes. */
function storeState(sandbox: Sandbox): string {
	const listing = (directory: string) =>
		existsSync(path.join(sandbox.store, directory))
			? readdirSync(path.join(sandbox.store, directory), {recursive: true}).map(String).sort()
			: [];
	const workspaces = listing('workspaces').map((entry) => {
		const full = path.join(sandbox.store, 'workspaces', entry);
		return statSync(full).isFile() ? `${entry}=${readFileSync(full, 'utf8')}` : entry;
	});
	return JSON.stringify({refs: listing('refs'), layers: listing('layers'), workspaces});
}

for (const user of users) {
	test(`as ${user}: writes persist across ws runs, at one stable path, and the source never changes`, async (t) => {
		const sandbox = makeSandbox(t, user, {'a.txt': 'a\n'});
		const before = fingerprintTree(sandbox.src);
		await init(t, sandbox, 'dev');
		const first = await wsSh(
			t,
			sandbox,
			'dev',
			'pwd; echo one > one.txt; rm a.txt; mkdir -p d && echo x > d/x',
		);
		t.is(first.trim(), path.join(sandbox.store, 'workspaces/dev/merged'));
		const second = await wsSh(t, sandbox, 'dev', 'pwd; cat one.txt d/x; test ! -e a.txt && echo gone');
		t.is(second, `${path.join(sandbox.store, 'workspaces/dev/merged')}\none\nx\ngone`);
		const status = await ws(sandbox, 'run', 'dev', ['--', 'sh', '-c', 'echo two > two.txt; exit 7']);
		t.is(status.exitCode, 7, 'ws run exits with the command status');
		t.true((await viewOf(t, sandbox, 'dev')).includes('two.txt f two'), 'a failing command still writes');
		t.deepEqual(fingerprintTree(sandbox.src), before);
		const listing = await wsJson<WorkspaceSnapshots>(t, sandbox, 'snapshots', 'dev');
		t.is(listing.writes.runs, 4);
		t.deepEqual(listing.writes.commands.at(0), [
			'sh',
			'-c',
			'pwd; echo one > one.txt; rm a.txt; mkdir -p d && echo x > d/x',
		]);
		await assertStoreAtRest(t, sandbox);
	});

	test(`as ${user}: snapshot, rollback, clean, and names usable as --base`, async (t) => {
		const sandbox = makeSandbox(t, user, {'a.txt': 'a\n'});
		await init(t, sandbox, 'dev');
		const postinit = refTarget(sandbox.store, 'dev/postinit') as string;
		t.truthy(postinit);
		t.deepEqual(await viewOf(t, sandbox, 'dev'), [
			'README.md f # fixture',
			'a.txt f a',
			'lib/',
			'lib/code.c f int main(void) { return 0; }',
			'lib/deep/',
			'lib/deep/x.txt f x',
		]);

		await wsSh(t, sandbox, 'dev', 'echo 1 > one.txt');
		const s1 = await wsJson<WorkspaceSnapshot>(t, sandbox, 'snapshot', 'dev', ['s1']);
		t.true(s1.created);
		t.is(s1.name, 'dev/s1');
		t.is(refTarget(sandbox.store, 'dev/s1'), s1.layer);
		t.deepEqual(workspaceRecord(sandbox, 'dev').layers, [postinit, s1.layer]);

		// Lazy: no writes since s1, so s2 names the same layer.
		const s2 = await wsJson<WorkspaceSnapshot>(t, sandbox, 'snapshot', 'dev', ['s2']);
		t.false(s2.created);
		t.is(s2.layer, s1.layer);
		const layersAfterAlias = completeLayers(sandbox.store);
		t.deepEqual(layersAfterAlias, [postinit, s1.layer].sort());

		const listing = await wsJson<WorkspaceSnapshots>(t, sandbox, 'snapshots', 'dev');
		t.deepEqual(
			listing.snapshots.map((entry) => [entry.name, entry.current]),
			[
				['postinit', false],
				['s1', true],
				['s2', true],
			],
		);
		const human = await ws(sandbox, 'snapshots', 'dev');
		t.regex(
			String(human.stdout),
			/^\s+NAME\s+LAYER\s+SIZE\s+FILES\s+CREATED\n\s+postinit .*\n\*\s+s1 .*\n\*\s+s2 /,
		);

		await wsSh(t, sandbox, 'dev', 'rm one.txt; echo 2 > two.txt');
		const rollback = await wsJson<WorkspaceReset>(t, sandbox, 'rollback', 'dev', ['s1']);
		t.true(rollback.dropped.hadWrites);
		t.is(rollback.dropped.runs, 1);
		t.deepEqual(rollback.dropped.commands, [['sh', '-c', 'rm one.txt; echo 2 > two.txt']]);
		t.is(rollback.layer, s1.layer);
		const view = await viewOf(t, sandbox, 'dev');
		t.true(view.includes('one.txt f 1'));
		t.false(view.some((line) => line.startsWith('two.txt')));

		await wsSh(t, sandbox, 'dev', 'echo 3 > three.txt');
		const clean = await ws(sandbox, 'clean', 'dev');
		t.is(clean.exitCode, 0, String(clean.stderr));
		t.regex(
			String(clean.stdout),
			/^dev is at its current snapshot \(layer [a-z\d]{6}\); dropped the writes of 2 runs since s1 \(.*three\.txt.*\)$/,
		);
		t.false((await viewOf(t, sandbox, 'dev')).some((line) => line.startsWith('three.txt')));
		const nothing = await ws(sandbox, 'clean', 'dev');
		t.regex(String(nothing.stdout), /there were no writes to drop/);

		const back = await ws(sandbox, 'rollback', 'dev', ['postinit']);
		t.is(back.exitCode, 0, String(back.stderr));
		t.false((await viewOf(t, sandbox, 'dev')).some((line) => line.startsWith('one.txt')));

		// Snapshot names are ordinary names.
		const over = await scratchRun(sandbox, ['--base', 'dev/s1', '--', 'cat', 'one.txt']);
		t.is(over.exitCode, 0, String(over.stderr));
		t.is(String(over.stdout), '1');
		const ls = await scratch(sandbox, ['ls', '--store', sandbox.store, '--json']);
		t.deepEqual(
			(JSON.parse(String(ls.stdout)) as Array<{name: string; origin: string}>).map((entry) => [
				entry.name,
				entry.origin,
			]),
			[
				['dev/postinit', 'workspace'],
				['dev/s1', 'workspace'],
				['dev/s2', 'workspace'],
			],
		);
		await gc(t, sandbox);
		t.deepEqual(
			completeLayers(sandbox.store),
			[postinit, s1.layer].sort(),
			'gc keeps what the workspace reaches',
		);
		await assertStoreAtRest(t, sandbox);
	});
}

test('init with a command: its writes are postinit; a failing init command makes no workspace', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	await init(t, sandbox, 'built', ['--', 'sh', '-c', 'echo built > out.txt']);
	const postinit = refTarget(sandbox.store, 'built/postinit') as string;
	const record = JSON.parse(readFileSync(path.join(sandbox.store, 'layers', `${postinit}.json`), 'utf8')) as {
		origin: string;
		workspace: string;
		command: string[];
		parent: string | null;
	};
	t.like(record, {origin: 'workspace', workspace: 'built', parent: null});
	t.deepEqual(record.command, ['sh', '-c', 'echo built > out.txt']);
	t.is(await wsSh(t, sandbox, 'built', 'cat out.txt'), 'built');

	const failed = await ws(sandbox, 'init', 'broken', ['--', 'sh', '-c', 'echo half > half.txt; exit 3']);
	t.is(failed.exitCode, 1);
	t.is(
		String(failed.stderr),
		'scratch: the init command exited with status 3; workspace broken was not created',
	);
	t.false(existsSync(path.join(sandbox.store, 'workspaces', 'broken')));
	t.is(refTarget(sandbox.store, 'broken/postinit'), undefined);
	const again = await ws(sandbox, 'init', 'broken');
	t.is(again.exitCode, 0, 'the name is free again');
	await gc(t, sandbox);
	await assertStoreAtRest(t, sandbox);
});

test('init --base: postinit names the base when nothing was written; several bases get a layer of their own', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	const deps = await promoteLayer(t, sandbox, 'deps', 'echo deps > deps.txt');
	const tools = await promoteLayer(t, sandbox, 'tools', 'echo tools > tools.txt');
	await init(t, sandbox, 'one', ['--base', 'deps']);
	t.is(refTarget(sandbox.store, 'one/postinit'), deps);
	t.deepEqual(workspaceRecord(sandbox, 'one').layers, [deps]);

	await init(t, sandbox, 'two', ['--base', 'deps', '--base', 'tools']);
	const own = refTarget(sandbox.store, 'two/postinit') as string;
	t.not(own, tools);
	t.deepEqual(workspaceRecord(sandbox, 'two').layers, [deps, tools, own]);
	await wsSh(t, sandbox, 'two', 'rm deps.txt');
	const rollback = await ws(sandbox, 'rollback', 'two', ['postinit']);
	t.is(rollback.exitCode, 0, String(rollback.stderr));
	t.is(await wsSh(t, sandbox, 'two', 'cat deps.txt tools.txt'), 'deps\ntools');
	await assertStoreAtRest(t, sandbox);
});

test('ws rm of the current name and of postinit never breaks the workspace; data goes once nothing reaches it', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	await init(t, sandbox, 'dev');
	const postinit = refTarget(sandbox.store, 'dev/postinit') as string;
	await wsSh(t, sandbox, 'dev', 'echo 1 > one.txt');
	const s1 = await wsJson<WorkspaceSnapshot>(t, sandbox, 'snapshot', 'dev', ['s1']);
	const removeCurrent = await wsJson<{name: string; layer: string; freed: string[]}>(
		t,
		sandbox,
		'rm',
		'dev',
		['s1'],
	);
	t.deepEqual(removeCurrent, {name: 'dev/s1', layer: s1.layer, freed: []});
	const removePostinit = await wsJson<{freed: string[]}>(t, sandbox, 'rm', 'dev', ['postinit']);
	t.deepEqual(removePostinit.freed, [], 'postinit is below the current snapshot');
	const human = await ws(sandbox, 'snapshots', 'dev');
	t.regex(String(human.stdout), new RegExp(`current: layer ${s1.layer}, which no name points at`));

	await wsSh(t, sandbox, 'dev', 'echo 2 > two.txt');
	await ws(sandbox, 'clean', 'dev');
	t.deepEqual(
		(await viewOf(t, sandbox, 'dev')).filter((line) => /^(one|two)\.txt/.test(line)),
		['one.txt f 1'],
		'clean returns to the (unnamed) current state',
	);
	t.deepEqual(completeLayers(sandbox.store), [postinit, s1.layer].sort());
	await gc(t, sandbox);
	t.deepEqual(
		completeLayers(sandbox.store),
		[postinit, s1.layer].sort(),
		'the current stack is never garbage',
	);

	await wsSh(t, sandbox, 'dev', 'echo 3 > three.txt');
	const s3 = await wsJson<WorkspaceSnapshot>(t, sandbox, 'snapshot', 'dev', ['s3']);
	const rollback = await ws(sandbox, 'rm', 'dev', ['s3']);
	t.regex(String(rollback.stdout), /layer [a-z\d]{6} is still reached, so it stays/);
	t.true(completeLayers(sandbox.store).includes(s3.layer));
	await assertStoreAtRest(t, sandbox);
});

test('ws rm frees a layer at once when nothing else reaches it', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	await init(t, sandbox, 'dev');
	await wsSh(t, sandbox, 'dev', 'echo 1 > one.txt');
	const s1 = await wsJson<WorkspaceSnapshot>(t, sandbox, 'snapshot', 'dev', ['s1']);
	const rollback = await ws(sandbox, 'rollback', 'dev', ['postinit']);
	t.is(rollback.exitCode, 0);
	const removed = await wsJson<{freed: string[]}>(t, sandbox, 'rm', 'dev', ['s1']);
	t.deepEqual(removed.freed, [s1.layer]);
	t.false(completeLayers(sandbox.store).includes(s1.layer));
	await assertStoreAtRest(t, sandbox);
});

test('ws scrub removes the workspace and only what it alone reaches', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	const deps = await promoteLayer(t, sandbox, 'deps', 'echo deps > deps.txt');
	await init(t, sandbox, 'a', ['--base', 'deps', '--', 'sh', '-c', 'echo a > a.txt']);
	const aPostinit = refTarget(sandbox.store, 'a/postinit') as string;
	await wsSh(t, sandbox, 'a', 'echo more > more.txt');
	const aSnapshot = await wsJson<WorkspaceSnapshot>(t, sandbox, 'snapshot', 'a', ['more']);
	await init(t, sandbox, 'b', ['--base', 'a/postinit']);
	t.is(refTarget(sandbox.store, 'b/postinit'), aPostinit, "b starts on a's postinit");

	const scrub = await wsJson<{workspace: string; names: string[]; freed: string[]}>(t, sandbox, 'scrub', 'a');
	t.deepEqual(scrub.names, ['a/more', 'a/postinit']);
	t.deepEqual(scrub.freed, [aSnapshot.layer], "a's postinit stays: b reaches it");
	t.false(existsSync(path.join(sandbox.store, 'workspaces', 'a')));
	t.deepEqual(completeLayers(sandbox.store), [deps, aPostinit].sort());
	t.is(await wsSh(t, sandbox, 'b', 'cat deps.txt a.txt'), 'deps\na');
	const gone = await ws(sandbox, 'run', 'a', ['--', 'true']);
	t.is(gone.exitCode, 125);
	t.regex(String(gone.stderr), /^scratch: no workspace a in store .*; create it with scratch ws init a/);
	const list = await scratch(sandbox, ['ws', 'ls', '--store', sandbox.store, '--json']);
	t.deepEqual(
		(JSON.parse(String(list.stdout)) as Array<{name: string}>).map((entry) => entry.name),
		['b'],
	);
	const scrubB = await wsJson<{freed: string[]}>(t, sandbox, 'scrub', 'b');
	t.deepEqual(scrubB.freed, [aPostinit], 'deps is still named');
	t.deepEqual(completeLayers(sandbox.store), [deps]);
	await assertStoreAtRest(t, sandbox);
});

test('two workspaces in one store are independent', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	await init(t, sandbox, 'x');
	await init(t, sandbox, 'y');
	await wsSh(t, sandbox, 'x', 'echo x > mine.txt');
	await wsSh(t, sandbox, 'y', 'echo y > mine.txt');
	await ws(sandbox, 'clean', 'x');
	t.is(await wsSh(t, sandbox, 'y', 'cat mine.txt'), 'y');
	t.is(
		await wsSh(t, sandbox, 'x', 'cat mine.txt 2>&1 || echo none'),
		'cat: mine.txt: No such file or directory\nnone',
	);
	const human = await scratch(sandbox, ['ws', 'ls', '--store', sandbox.store]);
	t.regex(
		String(human.stdout),
		/^WORKSPACE\s+CURRENT\s+SNAPSHOTS\s+RUNS\s+STATE\s+CREATED\s+SOURCE\nx\s+postinit\s+1\s+1\s+idle .*\ny\s+postinit\s+1\s+2\s+idle /,
	);
	await assertStoreAtRest(t, sandbox);
});

for (const user of users) {
	test(`as ${user}: one ws run at a time; a second waits or fails with --no-wait, changes are refused, readers never block`, async (t) => {
		const sandbox = makeSandbox(t, user);
		await init(t, sandbox, 'dev');
		const first = ws(
			sandbox,
			'run',
			'dev',
			['--', 'sh', '-c', 'echo first >> log; echo started; read -r _; echo first-done >> log'],
			{
				input: undefined,
				stdin: 'pipe',
			},
		);
		t.teardown(() => first.kill('SIGKILL'));
		await waitForLine(first, 'started');

		const noWait = await ws(sandbox, 'run', 'dev', ['--no-wait', '--', 'true']);
		t.is(noWait.exitCode, 125);
		t.regex(
			String(noWait.stderr),
			/^scratch: workspace dev is busy: ws run \(pid \d+, since .*: sh -c .*\) is using it; wait for it to finish, or drop --no-wait to wait$/,
		);

		for (const [command, args] of [
			['snapshot', ['s1']],
			['rollback', ['postinit']],
			['clean', []],
			['scrub', []],
		] as const) {
			const refused = await ws(sandbox, command, 'dev', [...args]);
			t.is(refused.exitCode, 1, command);
			t.regex(String(refused.stderr), /^scratch: workspace dev is busy: ws run \(pid \d+/, command);
			t.is(String(refused.stderr).split('\n').length, 1, `${command}: one line`);
		}

		const readers = await Promise.all([
			ws(sandbox, 'snapshots', 'dev', ['--json']),
			scratch(sandbox, ['ws', 'ls', '--store', sandbox.store, '--json']),
		]);
		t.is(readers[0].exitCode, 0);
		t.is((JSON.parse(String(readers[0].stdout)) as WorkspaceSnapshots).busy?.operation, 'run');
		t.regex(String(readers[1].stdout), /"operation": "run"/);

		const second = ws(sandbox, 'run', 'dev', ['--', 'sh', '-c', 'echo second >> log; cat log']);
		let secondErr = '';
		second.stderr?.on('data', (chunk: Buffer) => {
			secondErr += chunk.toString();
		});
		t.true(await eventually(() => secondErr.includes('waiting'), 10_000), secondErr);
		t.regex(
			secondErr,
			/^scratch: workspace dev is busy: ws run \(pid \d+, since .*\) holds it; waiting \(--no-wait fails instead\)\n$/,
		);
		first.stdin?.end('\n');
		t.is((await first).exitCode, 0);
		const done = await second;
		t.is(done.exitCode, 0, String(done.stderr));
		t.is(String(done.stdout), 'first\nfirst-done\nsecond', 'the second run saw all the first one wrote');
		await assertStoreAtRest(t, sandbox);
	});
}

test('a ws run whose scratch was killed never blocks the next', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	await init(t, sandbox, 'dev');
	const first = ws(sandbox, 'run', 'dev', [
		'--',
		'sh',
		'-c',
		'echo kept > kept.txt; echo started; exec sleep 600',
	]);
	await waitForLine(first, 'started');
	first.kill('SIGKILL');
	await first;
	const next = await ws(sandbox, 'run', 'dev', ['--no-wait', '--', 'cat', 'kept.txt']);
	t.is(next.exitCode, 0, String(next.stderr));
	t.is(String(next.stdout), 'kept', 'what the killed run wrote stays in the workspace');
	await gc(t, sandbox);
	await assertStoreAtRest(t, sandbox);
});

test('--touch copies matching files up before the command, without changing them', async (t) => {
	const sandbox = makeSandbox(t, 'root', {
		'var/lib/rpm/Packages': 'db\n',
		'var/lib/rpm/Index': 'ix\n',
		'other.txt': 'o\n',
	});
	await init(t, sandbox, 'dev');
	const before = statSync(path.join(sandbox.src, 'var/lib/rpm/Packages'));
	const run = await ws(sandbox, 'run', 'dev', [
		'--touch',
		'var/lib/rpm/*',
		'--touch',
		'/no/match/*',
		'--',
		'true',
	]);
	t.is(run.exitCode, 0, String(run.stderr));
	const upper = path.join(sandbox.store, 'workspaces/dev/upper');
	t.deepEqual(readdirSync(path.join(upper, 'var/lib/rpm')).sort(), ['Index', 'Packages']);
	t.false(existsSync(path.join(upper, 'other.txt')));
	const copied = statSync(path.join(upper, 'var/lib/rpm/Packages'));
	t.is(readFileSync(path.join(upper, 'var/lib/rpm/Packages'), 'utf8'), 'db\n');
	t.is(copied.mtimeMs, before.mtimeMs);
	t.is(copied.mode, before.mode);

	// A directory is copied up with everything in it; plain runs take --touch too.
	const kept = await scratchRun(sandbox, ['--keep', '--touch', 'var', '--', 'true']);
	t.is(kept.exitCode, 0, String(kept.stderr));
	const keptUpper = /its writes are in (\S+)/.exec(String(kept.stderr))?.[1] as string;
	t.deepEqual(readdirSync(path.join(keptUpper, 'var/lib/rpm')).sort(), ['Index', 'Packages']);
	const climbing = await scratchRun(sandbox, ['--touch', '../x', '--', 'true']);
	t.is(climbing.exitCode, 125);
	t.is(
		String(climbing.stderr),
		"scratch: --touch ../x climbs out of the view with '..'; give a glob relative to the view's root such as 'var/lib/rpm/*'",
	);
});

const badInput: Array<{title: string; args: string[]; status: number; message: RegExp}> = [
	{
		title: 'init of an invalid name',
		args: ['init', '../x'],
		status: 2,
		message: /^scratch: invalid workspace name "\.\.\/x": it holds '\/'/,
	},
	{
		title: 'init of a name with a leading dot',
		args: ['init', '.hidden'],
		status: 2,
		message:
			/^scratch: invalid workspace name "\.hidden": segment '\.hidden' must start with a letter or digit/,
	},
	{
		title: 'init of an existing workspace',
		args: ['init', 'dev'],
		status: 1,
		message: /^scratch: workspace dev exists; use it with scratch ws run dev -- CMD/,
	},
	{
		title: 'init over names that exist',
		args: ['init', 'taken'],
		status: 1,
		message: /^scratch: the name taken\/x exists, and workspace taken's snapshots would share its names/,
	},
	{
		title: 'init from a missing source',
		args: ['init', 'new', '--src', '/nonexistent/src'],
		status: 1,
		message: /^scratch: source tree \/nonexistent\/src does not exist/,
	},
	{
		title: 'init on a missing base',
		args: ['init', 'new', '--base', 'nope'],
		status: 1,
		message: /^scratch: no snapshot named nope in store/,
	},
	{
		title: 'run in an unknown workspace',
		args: ['run', 'nope', '--', 'true'],
		status: 125,
		message: /^scratch: no workspace nope in store .*; create it with scratch ws init nope/,
	},
	{
		title: 'run without a command',
		args: ['run', 'dev'],
		status: 125,
		message: /^scratch: no command to run; put it after '--'/,
	},
	{
		title: 'run with --json',
		args: ['run', 'dev', '--json', '--', 'true'],
		status: 125,
		message: /^scratch: scratch ws run writes its summary with --json-file FILE, not --json/,
	},
	{
		title: 'run with an unknown option',
		args: ['run', 'dev', '--promote', 'x', '--', 'true'],
		status: 125,
		message: /^scratch: unknown option --promote for scratch ws run; see scratch ws run --help/,
	},
	{
		title: 'snapshot with an existing name',
		args: ['snapshot', 'dev', 'postinit'],
		status: 1,
		message: /^scratch: snapshot dev\/postinit exists; choose another name, or remove it first/,
	},
	{
		title: 'snapshot with an invalid name',
		args: ['snapshot', 'dev', 'a/b'],
		status: 2,
		message: /^scratch: invalid snapshot name "a\/b": it holds '\/'/,
	},
	{
		title: 'snapshot of an unknown workspace',
		args: ['snapshot', 'nope', 's'],
		status: 1,
		message: /^scratch: no workspace nope in store/,
	},
	{
		title: 'rollback to an unknown snapshot',
		args: ['rollback', 'dev', 'nope'],
		status: 1,
		message: /^scratch: workspace dev has no snapshot nope; scratch ws snapshots dev lists them/,
	},
	{
		title: 'rm of an unknown snapshot',
		args: ['rm', 'dev', 'nope'],
		status: 1,
		message: /^scratch: workspace dev has no snapshot nope/,
	},
	{
		title: 'clean of an unknown workspace',
		args: ['clean', 'nope'],
		status: 1,
		message: /^scratch: no workspace nope in store/,
	},
	{
		title: 'scrub of an unknown workspace',
		args: ['scrub', 'nope'],
		status: 1,
		message: /^scratch: no workspace nope in store/,
	},
	{
		title: 'snapshots of an invalid name',
		args: ['snapshots', 'a b'],
		status: 2,
		message: /^scratch: invalid workspace name "a b"/,
	},
	{
		title: 'an unknown ws command',
		args: ['frobnicate', 'dev'],
		status: 2,
		message: /^scratch: unknown command 'ws frobnicate' \(ws commands: init, run, snapshot/,
	},
];

test('bad input: one line, the documented status, nothing changed', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	await promoteLayer(t, sandbox, 'taken/x', 'echo x > x');
	await init(t, sandbox, 'dev');
	await wsSh(t, sandbox, 'dev', 'echo pending > pending.txt');
	const before = storeState(sandbox);
	for (const {title, args, status, message} of badInput) {
		const [subcommand, ...rest] = args as [string, ...string[]];
		const result =
			subcommand === 'frobnicate'
				? await scratch(sandbox, ['ws', ...args, '--store', sandbox.store])
				: await ws(sandbox, subcommand, rest[0] as string, rest.slice(1));
		t.is(result.exitCode, status, `${title}: ${String(result.stderr)}`);
		t.regex(String(result.stderr), message, title);
		t.is(String(result.stderr).split('\n').length, 1, `${title}: one line`);
		t.is(storeState(sandbox), before, `${title}: nothing changed`);
	}
});

test('gc keeps every layer a workspace reaches and reclaims an init that died', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	await init(t, sandbox, 'dev');
	await wsSh(t, sandbox, 'dev', 'echo 1 > one.txt');
	await ws(sandbox, 'snapshot', 'dev', ['s1']);
	for (const name of ['s1', 'postinit']) {
		t.is((await ws(sandbox, 'rm', 'dev', [name])).exitCode, 0);
	}

	const layers = completeLayers(sandbox.store);
	t.is(layers.length, 2);
	const report = await gc(t, sandbox);
	t.deepEqual(report.layers, []);
	t.deepEqual(completeLayers(sandbox.store), layers);

	const dying = ws(sandbox, 'init', 'dying', ['--', 'sh', '-c', 'echo started; exec sleep 600']);
	await waitForLine(dying, 'started');
	dying.kill('SIGKILL');
	await dying;
	t.deepEqual((await gc(t, sandbox)).abandonedWorkspaces, ['dying']);
	t.false(existsSync(path.join(sandbox.store, 'workspaces', 'dying')));
	t.is((await ws(sandbox, 'init', 'dying')).exitCode, 0);
	await assertStoreAtRest(t, sandbox);
});

test('ws --help lists the workspace commands', async (t) => {
	const help = await scratch({user: 'root' as User}, ['ws', '--help']);
	t.is(help.exitCode, 0);
	for (const command of ['init', 'run', 'snapshot', 'rollback', 'clean', 'snapshots', 'rm', 'scrub', 'ls']) {
		t.regex(String(help.stdout), new RegExp(`scratch ws ${command}`));
	}

	const runHelp = await scratch({user: 'root' as User}, ['ws', 'run', '--help']);
	t.regex(String(runHelp.stdout), /--no-wait/);
	t.regex(String(runHelp.stdout), /--touch/);
});

for (const user of users) {
	test(`as ${user}: --touch copies files up in ws run, leaving symlinks and unmatched files alone`, async (t) => {
		const sandbox = makeSandbox(t, user, {'var/lib/rpm/Packages': 'db\n', 'var/lib/rpm/sub/Index': 'ix\n'});
		symlinkSync('Packages', path.join(sandbox.src, 'var/lib/rpm/link'));
		if (user === 'nobody') {
			chownTree(sandbox.src, nobodyId);
		}

		await init(t, sandbox, 'dev');
		const run = await ws(sandbox, 'run', 'dev', [
			'--touch',
			'/var/lib/rpm/*',
			'--',
			'cat',
			'var/lib/rpm/Packages',
		]);
		t.is(run.exitCode, 0, String(run.stderr));
		t.is(String(run.stdout), 'db');
		const upper = path.join(sandbox.store, 'workspaces/dev/upper/var/lib/rpm');
		t.deepEqual(readdirSync(upper).sort(), ['Packages', 'sub']);
		t.deepEqual(readdirSync(path.join(upper, 'sub')), ['Index']);
		const source = statSync(path.join(sandbox.src, 'var/lib/rpm/sub/Index'));
		const copied = statSync(path.join(upper, 'sub/Index'));
		t.deepEqual([copied.mode, copied.uid, copied.mtimeMs], [source.mode, source.uid, source.mtimeMs]);
		await assertStoreAtRest(t, sandbox);
	});
}
