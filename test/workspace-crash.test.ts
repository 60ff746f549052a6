import {existsSync, readdirSync, readFileSync} from 'node:fs';
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import test, {type ExecutionContext} from 'ava';
import {promoteLayer} from './helpers/layers.js';
import {hostMountsUnder, makeSandbox, type Sandbox, scratch, users} from './helpers/scratch.js';
import {assertStoreAtRest, completeLayers, refTarget} from './helpers/store-check.js';
import {viewOf, ws, wsJson, wsSh} from './helpers/workspaces.js';

/*
Faults in the workspace commands: `SCRATCH_CRASH_AT=STEP` makes scratch SIGKILL itself at that step
(src/system/crash-point.ts). Whatever the step, the next command on the workspace (which repairs it) and
`gc` must leave a consistent store, a workspace in one of the states the command allows (before or
after, never a mix), no lost writes, every layer something reaches kept and every other one freed.
*/

type Result = Awaited<ReturnType<typeof scratch>>;
type WorkspaceRecord = {
	name: string;
	state: string;
	layers: string[];
	writes: {runs: number; from?: string};
	snapshotting?: {layer: string; name: string};
};
type Snapshot = {name: string; layer: string; created: boolean};
type Snapshots = {current: string; snapshots: Array<{name: string; layer: string; current: boolean}>};
type WorkspaceEntry = {name: string; state: string};

function crashEnvironment(step: string) {
	return {env: {SCRATCH_CRASH_AT: step}};
}

function assertKilled(t: ExecutionContext, result: Result, step: string): void {
	t.is(result.signal, 'SIGKILL', `scratch was to kill itself at ${step}: ${String(result.stderr)}`);
	t.is(result.exitCode, undefined);
}

function entriesOf(directory: string): string[] {
	return existsSync(directory) ? readdirSync(directory).sort() : [];
}

function workspaceRecord(sandbox: Sandbox, name: string): WorkspaceRecord | undefined {
	const file = path.join(sandbox.store, 'workspaces', name, 'workspace.json');
	return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as WorkspaceRecord) : undefined;
}

function requireRecord(t: ExecutionContext, sandbox: Sandbox, name: string): WorkspaceRecord {
	const record = workspaceRecord(sandbox, name);
	t.truthy(record, `workspace ${name} has a record`);
	return record as WorkspaceRecord;
}

/** What the workspace's upper holds: the writes not yet in a snapshot. */
function pendingWrites(sandbox: Sandbox, name: string): string[] {
	return entriesOf(path.join(sandbox.store, 'workspaces', name, 'upper'));
}

function layerFile(sandbox: Sandbox, layer: string, file: string): string {
	return readFileSync(path.join(sandbox.store, 'layers', layer, file), 'utf8');
}

/** The names of the store whose full name starts with `prefix`. */
function namesUnder(sandbox: Sandbox, prefix: string): string[] {
	return entriesOf(path.join(sandbox.store, 'refs'))
		.filter((file) => !file.startsWith('.'))
		.map((file) => file.replaceAll('+', '/'))
		.filter((name) => name.startsWith(prefix));
}

/**
The layers the store's records reach, read from the files alone: names, ready workspaces (and a snapshot
in progress), kept runs, each with its lowers.
*/
function reachableLayers(sandbox: Sandbox): string[] {
	const roots: string[] = [];
	const refs = path.join(sandbox.store, 'refs');
	for (const file of entriesOf(refs).filter((name) => !name.startsWith('.'))) {
		roots.push((JSON.parse(readFileSync(path.join(refs, file), 'utf8')) as {layer: string}).layer);
	}

	for (const name of entriesOf(path.join(sandbox.store, 'workspaces'))) {
		const record = workspaceRecord(sandbox, name);
		if (record?.state === 'ready') {
			roots.push(...record.layers, ...(record.snapshotting ? [record.snapshotting.layer] : []));
		}
	}

	const kept = path.join(sandbox.store, 'kept');
	for (const id of entriesOf(kept)) {
		const run = JSON.parse(readFileSync(path.join(kept, id, 'run.json'), 'utf8')) as {layers?: string[]};
		roots.push(...(run.layers ?? []));
	}

	const reachable = new Set<string>();
	for (const id of roots) {
		reachable.add(id);
		const record = path.join(sandbox.store, 'layers', `${id}.json`);
		if (existsSync(record)) {
			for (const lower of (JSON.parse(readFileSync(record, 'utf8')) as {lowers: string[]}).lowers) {
				reachable.add(lower);
			}
		}
	}

	return [...reachable].sort();
}

async function collect(t: ExecutionContext, sandbox: Sandbox): Promise<void> {
	const gc = await scratch(sandbox, ['gc', '--store', sandbox.store, '--json']);
	t.is(gc.exitCode, 0, String(gc.stderr));
}

/**
`gc`, then: a consistent store at rest, nothing of the crashed scratch left (mounts, runs, processes,
trash), every layer in `needed` still whole, and exactly the layers the records reach left.
*/
async function collectAndCheck(t: ExecutionContext, sandbox: Sandbox, needed: string[]): Promise<void> {
	await collect(t, sandbox);
	await assertStoreAtRest(t, sandbox);
	const complete = completeLayers(sandbox.store);
	for (const id of needed) {
		t.true(complete.includes(id), `layer ${id}, which is still needed, was freed`);
	}

	t.deepEqual(complete, reachableLayers(sandbox), 'the layers left are exactly those something reaches');
}

type History = {
	base: string;
	postinit: string;
	s1: string;
	views: {postinit: string[]; s1: string[]; withWrites: string[]};
};

/**
Workspace `dev` on a base layer, with an init command, snapshot s1 on top of postinit, and writes on top
of s1 (added, modified, deleted files); the views of each state, as the next ws run sees them.
*/
async function workspaceWithHistory(t: ExecutionContext, sandbox: Sandbox): Promise<History> {
	const base = await promoteLayer(t, sandbox, 'base', 'echo base > base.txt');
	const init = await ws(sandbox, 'init', 'dev', ['--base', 'base', '--', 'sh', '-c', 'echo init > init.txt']);
	t.is(init.exitCode, 0, String(init.stderr));
	const postinit = refTarget(sandbox.store, 'dev/postinit') as string;
	t.truthy(postinit);
	const postinitView = await viewOf(t, sandbox, 'dev');
	await wsSh(t, sandbox, 'dev', 'echo one > one.txt; rm a.txt');
	const s1 = await wsJson<Snapshot>(t, sandbox, 'snapshot', 'dev', ['s1']);
	t.true(s1.created);
	const s1View = await viewOf(t, sandbox, 'dev');
	await wsSh(
		t,
		sandbox,
		'dev',
		'echo two > two.txt; echo changed > one.txt; rm init.txt; mkdir d; echo f > d/f',
	);
	const withWrites = await viewOf(t, sandbox, 'dev');
	t.deepEqual(requireRecord(t, sandbox, 'dev').layers, [base, postinit, s1.layer]);
	t.true(withWrites.includes('two.txt f two') && withWrites.includes('one.txt f changed'));
	t.false(withWrites.includes('init.txt f init'));
	t.true(s1View.includes('one.txt f one') && s1View.includes('init.txt f init'));
	t.true(postinitView.includes('init.txt f init') && postinitView.includes('a.txt f a'));
	t.false(postinitView.some((line) => line.startsWith('one.txt')));
	return {base, postinit, s1: s1.layer, views: {postinit: postinitView, s1: s1View, withWrites}};
}

/** Where a crashed `ws snapshot dev s2` (with writes) must leave the workspace. */
const snapshotSteps = [
	['ws-snapshot-intent', 'not taken'],
	['layer-recorded', 'not taken'],
	['layer-committed', 'taken'],
	['ws-snapshot-named', 'taken'],
	['ws-snapshot-recorded', 'taken'],
] as const;

/** Where a crashed `ws rollback dev postinit` must leave the view: s1 without the writes, or postinit. */
const rollbackSteps = [
	['ws-rollback-dropped', 's1'],
	['ws-rollback-recorded', 'postinit'],
] as const;

const cleanSteps = ['ws-clean-dropped', 'ws-clean-recorded'] as const;

/** Where a crashed `ws init dev` must leave things: no workspace, or a ready one. */
const initSteps = [
	['layer-recorded', 'none'],
	['layer-committed', 'none'],
	['ws-init-recorded', 'ready'],
] as const;

const scrubSteps = ['ws-scrub-unnamed'] as const;

test('every crash point of the workspace code is exercised by a test here', (t) => {
	const directory = fileURLToPath(new URL('../src/workspace', import.meta.url));
	const steps = new Set<string>();
	for (const name of readdirSync(directory).filter((file) => file.endsWith('.ts'))) {
		const text = readFileSync(path.join(directory, name), 'utf8');
		for (const match of text.matchAll(/crashPoint\('([\w-]+)'\)/g)) {
			steps.add(match[1] as string);
		}

		// `ws-${step}-dropped`, with step rollback or clean.
		for (const match of text.matchAll(/crashPoint\(`ws-\$\{step\}-([\w-]+)`\)/g)) {
			steps.add(`ws-rollback-${match[1]}`);
			steps.add(`ws-clean-${match[1]}`);
		}
	}

	const exercised = new Set<string>([
		...snapshotSteps.map(([step]) => step),
		...rollbackSteps.map(([step]) => step),
		...cleanSteps,
		...initSteps.map(([step]) => step),
		...scrubSteps,
	]);
	const workspaceSteps = [...exercised].filter((step) => step.startsWith('ws-'));
	t.deepEqual([...steps].sort(), workspaceSteps.sort());
});

for (const [step, outcome] of snapshotSteps) {
	for (const user of users) {
		for (const order of user === 'root'
			? (['ws run first', 'gc first'] as const)
			: (['ws run first'] as const)) {
			test(`ws snapshot killed at ${step} leaves the snapshot ${outcome}, the writes kept, once used again (${user}, ${order})`, async (t) => {
				const sandbox = makeSandbox(t, user, {'a.txt': 'a\n'});
				const history = await workspaceWithHistory(t, sandbox);
				const {base, postinit, s1, views} = history;
				const crash = await ws(sandbox, 'snapshot', 'dev', ['s2'], crashEnvironment(step));
				assertKilled(t, crash, step);

				// It died where it was told to.
				const raw = requireRecord(t, sandbox, 'dev');
				t.is(raw.snapshotting?.name === 's2', step !== 'ws-snapshot-recorded', 'the intent stays to the end');
				t.is(
					refTarget(sandbox.store, 'dev/s2') !== undefined,
					step === 'ws-snapshot-named' || step === 'ws-snapshot-recorded',
				);
				const intended = raw.snapshotting?.layer ?? (raw.layers.at(-1) as string);
				const layerRecord = path.join(sandbox.store, 'layers', `${intended}.json`);
				t.is(
					existsSync(layerRecord),
					step !== 'ws-snapshot-intent',
					'the layer record comes after the intent',
				);
				t.is(completeLayers(sandbox.store).includes(intended), outcome === 'taken');
				t.is(
					pendingWrites(sandbox, 'dev').length > 0,
					outcome === 'not taken',
					'the upper moves at the commit',
				);
				t.deepEqual(hostMountsUnder(sandbox.root), []);
				if (order === 'gc first') {
					await collect(t, sandbox);
				}

				// The next ws run finishes or forgets the snapshot; either way it sees the writes.
				t.deepEqual(await viewOf(t, sandbox, 'dev'), views.withWrites, 'the writes are never lost');
				let record = requireRecord(t, sandbox, 'dev');
				t.is(record.snapshotting, undefined, 'the next ws run settles the snapshot');
				let s2 = refTarget(sandbox.store, 'dev/s2');
				if (outcome === 'not taken') {
					t.is(s2, undefined, 'no name without its layer');
					t.deepEqual(record.layers, [base, postinit, s1], 'the old current snapshot');
					t.not(pendingWrites(sandbox, 'dev').length, 0, 'the writes are still pending');
					// Taking it again works, and takes the same writes.
					const again = await wsJson<Snapshot>(t, sandbox, 'snapshot', 'dev', ['s2']);
					t.true(again.created);
					s2 = again.layer;
					t.deepEqual(await viewOf(t, sandbox, 'dev'), views.withWrites);
					record = requireRecord(t, sandbox, 'dev');
				} else {
					t.truthy(s2, 'the name points at the new layer');
					t.is(s2, raw.snapshotting?.layer ?? raw.layers.at(-1), 'the layer the crashed snapshot made');
				}

				const layer = s2 as string;
				t.false([base, postinit, s1].includes(layer), 'a new layer');
				t.deepEqual(record.layers, [base, postinit, s1, layer], 'the new layer is current');
				t.deepEqual(pendingWrites(sandbox, 'dev'), [], 'no writes are pending: they are in the layer');
				t.is(layerFile(sandbox, layer, 'two.txt'), 'two\n');
				t.is(layerFile(sandbox, layer, 'one.txt'), 'changed\n');
				t.is(layerFile(sandbox, layer, 'd/f'), 'f\n');
				const listing = await wsJson<Snapshots>(t, sandbox, 'snapshots', 'dev');
				t.is(listing.current, layer);
				t.deepEqual(
					listing.snapshots.map((entry) => [entry.name, entry.layer, entry.current]),
					[
						['postinit', postinit, false],
						['s1', s1, false],
						['s2', layer, true],
					],
				);

				await collectAndCheck(t, sandbox, [base, postinit, s1, layer]);
				// The older snapshots are whole: rolling back to s1 shows it as it was.
				const rollback = await ws(sandbox, 'rollback', 'dev', ['s1']);
				t.is(rollback.exitCode, 0, String(rollback.stderr));
				t.deepEqual(await viewOf(t, sandbox, 'dev'), views.s1);
				await collectAndCheck(t, sandbox, [base, postinit, s1, layer]);
			});
		}
	}
}

/** The allowed views after a crashed rollback or clean: never the target with the old writes. */
function assertAllowedReset(t: ExecutionContext, view: string[], history: History, step: string): void {
	const {views} = history;
	t.true(
		[views.withWrites, views.s1, views.postinit].some(
			(allowed) => JSON.stringify(allowed) === JSON.stringify(view),
		),
		`after a crash at ${step} the view is the old state, s1 without the writes, or postinit: ${view.join(', ')}`,
	);
}

for (const [step, outcome] of rollbackSteps) {
	for (const user of users) {
		test(`ws rollback killed at ${step} leaves ${outcome} without the writes, once used again (${user})`, async (t) => {
			const sandbox = makeSandbox(t, user, {'a.txt': 'a\n'});
			const history = await workspaceWithHistory(t, sandbox);
			const {base, postinit, s1, views} = history;
			const crash = await ws(sandbox, 'rollback', 'dev', ['postinit'], crashEnvironment(step));
			assertKilled(t, crash, step);
			t.deepEqual(pendingWrites(sandbox, 'dev'), [], 'the writes went first');
			t.deepEqual(hostMountsUnder(sandbox.root), []);

			const view = await viewOf(t, sandbox, 'dev');
			assertAllowedReset(t, view, history, step);
			const record = requireRecord(t, sandbox, 'dev');
			t.is(record.writes.runs, 1, 'the dropped runs are no longer counted: only the run since the crash');
			if (outcome === 's1') {
				t.deepEqual(view, views.s1, 's1 without the writes');
				t.deepEqual(record.layers, [base, postinit, s1]);
				// Rolling back again finishes the job.
				const again = await ws(sandbox, 'rollback', 'dev', ['postinit']);
				t.is(again.exitCode, 0, String(again.stderr));
			} else {
				t.deepEqual(view, views.postinit, 'postinit without the writes');
				t.deepEqual(record.layers, [base, postinit]);
			}

			t.deepEqual(await viewOf(t, sandbox, 'dev'), views.postinit);
			t.deepEqual(requireRecord(t, sandbox, 'dev').layers, [base, postinit]);
			t.is(refTarget(sandbox.store, 'dev/s1'), s1);
			await collectAndCheck(t, sandbox, [base, postinit, s1]);
			// s1 was kept whole: rolling forward to it shows it as it was.
			const forward = await ws(sandbox, 'rollback', 'dev', ['s1']);
			t.is(forward.exitCode, 0, String(forward.stderr));
			t.deepEqual(await viewOf(t, sandbox, 'dev'), views.s1);
			await collectAndCheck(t, sandbox, [base, postinit, s1]);
		});
	}
}

for (const step of cleanSteps) {
	for (const user of users) {
		test(`ws clean killed at ${step} leaves the current snapshot without the writes, once used again (${user})`, async (t) => {
			const sandbox = makeSandbox(t, user, {'a.txt': 'a\n'});
			const history = await workspaceWithHistory(t, sandbox);
			const {base, postinit, s1, views} = history;
			const crash = await ws(sandbox, 'clean', 'dev', [], crashEnvironment(step));
			assertKilled(t, crash, step);
			t.deepEqual(pendingWrites(sandbox, 'dev'), [], 'the writes went first');
			t.deepEqual(hostMountsUnder(sandbox.root), []);

			const view = await viewOf(t, sandbox, 'dev');
			assertAllowedReset(t, view, history, step);
			t.deepEqual(view, views.s1, 's1 without the writes');
			t.is(
				requireRecord(t, sandbox, 'dev').writes.runs,
				1,
				'the dropped runs are no longer counted: only the run since the crash',
			);
			t.deepEqual(requireRecord(t, sandbox, 'dev').layers, [base, postinit, s1]);
			await collectAndCheck(t, sandbox, [base, postinit, s1]);
			// The workspace goes on: new writes, a snapshot of them.
			await wsSh(t, sandbox, 'dev', 'echo three > three.txt');
			const s3 = await wsJson<Snapshot>(t, sandbox, 'snapshot', 'dev', ['s3']);
			t.true(s3.created);
			t.deepEqual(await viewOf(t, sandbox, 'dev'), [...views.s1, 'three.txt f three'].sort());
			await collectAndCheck(t, sandbox, [base, postinit, s1, s3.layer]);
		});
	}
}

const initScript = 'echo init > init.txt; rm a.txt';

for (const [step, outcome] of initSteps) {
	for (const user of users) {
		test(`ws init killed at ${step} leaves ${outcome === 'none' ? 'no workspace, and ws init again makes it' : 'a ready workspace with dev/postinit'} (${user})`, async (t) => {
			const sandbox = makeSandbox(t, user, {'a.txt': 'a\n'});
			const base = await promoteLayer(t, sandbox, 'base', 'echo base > base.txt');
			const initArguments = ['--base', 'base', '--', 'sh', '-c', initScript];
			const crash = await ws(sandbox, 'init', 'dev', initArguments, crashEnvironment(step));
			assertKilled(t, crash, step);
			t.deepEqual(hostMountsUnder(sandbox.root), []);
			const raw = requireRecord(t, sandbox, 'dev');
			t.is(refTarget(sandbox.store, 'dev/postinit'), undefined, 'the name comes last');
			const listed = await scratch(sandbox, ['ws', 'ls', '--store', sandbox.store, '--json']);
			t.is(listed.exitCode, 0, String(listed.stderr));
			const entries = JSON.parse(String(listed.stdout)) as WorkspaceEntry[];

			if (outcome === 'none') {
				t.is(raw.state, 'initialising');
				t.deepEqual(
					entries.map((entry) => [entry.name, entry.state]),
					[['dev', 'abandoned']],
				);
				const run = await ws(sandbox, 'run', 'dev', ['--', 'true']);
				t.is(run.exitCode, 125, 'no workspace to run in');
				t.regex(String(run.stderr), /never finished/);
				const again = await ws(sandbox, 'init', 'dev', initArguments);
				t.is(again.exitCode, 0, `ws init again makes it: ${String(again.stderr)}`);
			} else {
				t.is(raw.state, 'ready');
				t.is(raw.snapshotting?.name, 'postinit');
				t.deepEqual(
					entries.map((entry) => [entry.name, entry.state]),
					[['dev', 'ready']],
				);
				const again = await ws(sandbox, 'init', 'dev', initArguments);
				t.is(again.exitCode, 1, 'the workspace exists');
				t.regex(String(again.stderr), /workspace dev exists/);
			}

			// The next ws run sees base, the init command's writes, and the source.
			const view = await viewOf(t, sandbox, 'dev');
			t.deepEqual(
				view,
				[
					'README.md f # fixture',
					'base.txt f base',
					'init.txt f init',
					'lib/',
					'lib/code.c f int main(void) { return 0; }',
					'lib/deep/',
					'lib/deep/x.txt f x',
				].sort(),
			);
			const record = requireRecord(t, sandbox, 'dev');
			const postinit = refTarget(sandbox.store, 'dev/postinit') as string;
			t.truthy(postinit, 'dev/postinit names the start');
			if (outcome === 'ready') {
				t.is(postinit, raw.snapshotting?.layer as string);
			}

			t.is(record.state, 'ready');
			t.is(record.snapshotting, undefined);
			t.deepEqual(record.layers, [base, postinit]);
			t.is(layerFile(sandbox, postinit, 'init.txt'), 'init\n');
			t.is(refTarget(sandbox.store, 'base'), base);
			await collectAndCheck(t, sandbox, [base, postinit]);
		});
	}
}

for (const step of scrubSteps) {
	for (const user of users) {
		test(`ws scrub killed at ${step} is finished by ws scrub again, which frees what only the workspace reached (${user})`, async (t) => {
			const sandbox = makeSandbox(t, user, {'a.txt': 'a\n'});
			const {base, postinit, s1} = await workspaceWithHistory(t, sandbox);
			// `aside` (first in name order, so the first name scrub removes) is off the current stack.
			const aside = await wsJson<Snapshot>(t, sandbox, 'snapshot', 'dev', ['aside']);
			t.true(aside.created);
			const back = await ws(sandbox, 'rollback', 'dev', ['s1']);
			t.is(back.exitCode, 0, String(back.stderr));
			await wsSh(t, sandbox, 'dev', 'echo pending > pending.txt');
			t.deepEqual(namesUnder(sandbox, 'dev/'), ['dev/aside', 'dev/postinit', 'dev/s1']);

			const crash = await ws(sandbox, 'scrub', 'dev', [], crashEnvironment(step));
			assertKilled(t, crash, step);
			t.deepEqual(namesUnder(sandbox, 'dev/'), ['dev/postinit', 'dev/s1'], 'it died after one name');
			t.deepEqual(hostMountsUnder(sandbox.root), []);

			const again = await ws(sandbox, 'scrub', 'dev', ['--json']);
			t.is(again.exitCode, 0, `ws scrub again finishes it: ${String(again.stderr)}`);
			t.deepEqual(namesUnder(sandbox, 'dev/'), []);
			t.false(existsSync(path.join(sandbox.store, 'workspaces', 'dev')));
			const listed = await scratch(sandbox, ['ws', 'ls', '--store', sandbox.store, '--json']);
			t.deepEqual(JSON.parse(String(listed.stdout)), []);
			t.is(refTarget(sandbox.store, 'base'), base);
			// What only the workspace reached is freed by the scrub that finishes the job.
			const left = completeLayers(sandbox.store);
			t.true(left.includes(base), 'the base layer, which a name outside the workspace reaches, is kept');
			t.false(left.includes(postinit), 'the layer of dev/postinit is freed');
			t.false(left.includes(s1), 'the layer of dev/s1 is freed');
			// The layer of dev/aside, whose name the crashed scrub had removed and which is off the current
			// stack, is freed too: scrub also takes the layers the workspace made.
			t.false(left.includes(aside.layer), `layer ${aside.layer} of dev/aside is freed by the second scrub`);
			await collectAndCheck(t, sandbox, [base]);
			t.deepEqual(completeLayers(sandbox.store), [base]);
			// The name is free again.
			const init = await ws(sandbox, 'init', 'dev', ['--base', 'base']);
			t.is(init.exitCode, 0, String(init.stderr));
			t.is(refTarget(sandbox.store, 'dev/postinit'), base);
			await collectAndCheck(t, sandbox, [base]);
		});
	}
}
