import {existsSync, readdirSync, readFileSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import test, {type ExecutionContext} from 'ava';
import type {Options, ResultPromise} from 'execa';
import {fuseDaemonsIn, fuseSetup} from './helpers/fuse.js';
import {promoteLayer} from './helpers/layers.js';
import {holdMountNamespace} from './helpers/mount-namespace.js';
import {
	eventually,
	fingerprintTree,
	hostMountsUnder,
	makeSandbox,
	type NamespaceSetup,
	processesWith,
	type Sandbox,
	scratch,
	scratchRun,
	storeLeftovers,
	type User,
	uniqueSleep,
	users,
	waitForLine,
} from './helpers/scratch.js';
import {assertStoreAtRest, checkStoreConsistency, completeLayers, refTarget} from './helpers/store-check.js';

/*
Faults around a run, with every backend: SIGKILL of scratch at each named step of a run and of keeping
it (`SCRATCH_CRASH_AT`), and of promotion under the fuse backend (crash.test.ts covers the kernel ones);
a full disk while the command writes and while promoting; a read-only store; a store removed while the
command runs. After each, what was recorded before is intact, gc brings the store to rest, and no mount
or process is left.
*/

type Result = Awaited<ReturnType<typeof scratch>>;

function backendsOf(user: User): string[] {
	return user === 'root' ? ['kernel', 'fuse'] : ['userns', 'fuse'];
}

function runIn(
	sandbox: Sandbox,
	backend: string,
	args: string[],
	options: Options & {cwd?: string; setup?: NamespaceSetup} = {},
) {
	return scratchRun(sandbox, ['--backend', backend, ...args], {
		...(backend === 'fuse' ? {setup: fuseSetup(sandbox)} : {}),
		...options,
	});
}

function assertKilled(t: ExecutionContext, result: Result, step: string): void {
	t.is(result.signal, 'SIGKILL', `scratch was to kill itself at ${step}: ${String(result.stderr)}`);
}

async function assertNothingRunning(t: ExecutionContext, sandbox: Sandbox): Promise<void> {
	t.true(await eventually(() => fuseDaemonsIn(sandbox).length === 0), 'no fuse-overlayfs daemon left');
	t.deepEqual(hostMountsUnder(sandbox.root), [], 'no mount left');
}

async function gc(
	t: ExecutionContext,
	sandbox: Sandbox,
	options: Options & {cwd?: string; setup?: NamespaceSetup} = {},
) {
	const result = await scratch(sandbox, ['gc', '--store', sandbox.store, '--json'], options);
	t.is(result.exitCode, 0, String(result.stderr));
	return JSON.parse(String(result.stdout)) as {deadRuns: string[]; keptRuns: string[]; layers: string[]};
}

/** Where a killed run leaves things, step by step: what gc then finds, and whether the run is kept. */
const runSteps = [
	{step: 'run-prepared', args: [] as string[], kept: false},
	{step: 'run-exited', args: [], kept: false},
	{step: 'run-discarded', args: [], kept: false},
	{step: 'keep-synced', args: ['--keep'], kept: false},
	{step: 'keep-recorded', args: ['--keep'], kept: true},
	{step: 'keep-moved', args: ['--keep'], kept: true},
] as const;

/** Promotion steps, here under the fuse backend: before the ref the name keeps its old layer. */
const fusePromotionSteps = [
	['layer-recorded', 'old'],
	['layer-committed', 'old'],
	['promote-before-ref', 'old'],
	['promote-ref-written', 'new'],
] as const;

test('every crash point of a run and of keeping one is exercised by a test here', (t) => {
	const sourceDirectory = fileURLToPath(new URL('../src', import.meta.url));
	const steps = new Set<string>();
	for (const entry of readdirSync(sourceDirectory, {recursive: true, withFileTypes: true})) {
		if (entry.isFile() && entry.name.endsWith('.ts')) {
			const text = readFileSync(path.join(entry.parentPath, entry.name), 'utf8');
			for (const match of text.matchAll(/crashPoint\('((run|keep)-[\w-]+)'\)/g)) {
				steps.add(match[1] as string);
			}
		}
	}

	t.deepEqual([...steps].sort(), runSteps.map(({step}) => step).sort());
});

for (const user of users) {
	for (const backend of backendsOf(user)) {
		for (const {step, args, kept} of runSteps) {
			test(`a run killed at ${step} (${backend}) leaves no mount or process, and gc ${kept ? 'finishes keeping it' : 'reclaims it'} (${user})`, async (t) => {
				const sandbox = makeSandbox(t, user);
				await promoteLayer(t, sandbox, 'base', 'echo base > base.txt');
				const before = fingerprintTree(sandbox.src);
				const crash = await runIn(
					sandbox,
					backend,
					[...args, '--base', 'base', '--', 'sh', '-c', 'echo new > content'],
					{
						env: {SCRATCH_CRASH_AT: step},
					},
				);
				assertKilled(t, crash, step);
				await assertNothingRunning(t, sandbox);
				t.deepEqual(fingerprintTree(sandbox.src), before, 'the source is untouched');

				const report = await gc(t, sandbox);
				await assertStoreAtRest(t, sandbox);
				const keptRuns = existsSync(path.join(sandbox.store, 'kept'))
					? readdirSync(path.join(sandbox.store, 'kept'))
					: [];
				t.is(keptRuns.length, kept ? 1 : 0);
				if (step === 'keep-recorded') {
					t.deepEqual(report.keptRuns, keptRuns, 'gc finished the keep its scratch began');
				}

				t.deepEqual(completeLayers(sandbox.store).length, 1, 'the base layer is intact');
				const seen = await runIn(sandbox, backend, ['--base', 'base', '--', 'cat', 'base.txt']);
				t.is(String(seen.stdout), 'base', String(seen.stderr));
				if (kept) {
					const [runId] = keptRuns as [string];
					t.is(readFileSync(path.join(sandbox.store, 'kept', runId, 'upper', 'content'), 'utf8'), 'new\n');
					const promoted = await scratch(sandbox, ['promote', runId, 'later', '--store', sandbox.store]);
					t.is(promoted.exitCode, 0, String(promoted.stderr));
					const later = await runIn(sandbox, backend, [
						'--base',
						'later',
						'--',
						'cat',
						'content',
						'base.txt',
					]);
					t.is(String(later.stdout), 'new\nbase', String(later.stderr));
				}
			});
		}

		if (backend !== 'fuse') {
			continue;
		}

		for (const [step, outcome] of fusePromotionSteps) {
			test(`a fuse run --promote killed at ${step} leaves the name on its ${outcome} layer once gc has run (${user})`, async (t) => {
				const sandbox = makeSandbox(t, user);
				const oldLayer = await promoteLayer(t, sandbox, 'app', 'echo old > content');
				const crash = await runIn(
					sandbox,
					'fuse',
					['--promote', 'app', '--', 'sh', '-c', 'echo new > content'],
					{
						env: {SCRATCH_CRASH_AT: step},
					},
				);
				assertKilled(t, crash, step);
				await assertNothingRunning(t, sandbox);
				t.is(refTarget(sandbox.store, 'app') === oldLayer, outcome === 'old');
				await gc(t, sandbox);
				await assertStoreAtRest(t, sandbox);
				const seen = await runIn(sandbox, 'fuse', ['--base', 'app', '--', 'cat', 'content']);
				t.is(String(seen.stdout), outcome, String(seen.stderr));
				t.is(completeLayers(sandbox.store).length, 1, 'only the layer the name points at is left');
			});
		}
	}
}

/** A store on a small tmpfs (SIZE), in a mount namespace the test holds; the source stays on the host. */
async function storeOnSmallTmpfs(t: ExecutionContext, sandbox: Sandbox, size: string) {
	const owner = sandbox.user === 'root' ? '' : ',uid=65534,gid=65534';
	const held = await holdMountNamespace(
		t,
		`mkdir -p '${sandbox.store}'\nmount -t tmpfs -o size=${size},mode=0700${owner} scratch-test-full '${sandbox.store}'\n` +
			(sandbox.user === 'root'
				? ''
				: 'device=$(mktemp -d); mknod -m 666 "$device/fuse" c 10 229; mount --bind "$device/fuse" /dev/fuse; rm -rf "$device"'),
	);
	return held;
}

for (const user of users) {
	for (const backend of backendsOf(user)) {
		test(`a command that fills the store's disk gets ENOSPC itself, and scratch still cleans up and frees the space (${backend}, ${user})`, async (t) => {
			const sandbox = makeSandbox(t, user);
			const held = await storeOnSmallTmpfs(t, sandbox, '8m');
			const options = {setup: held.setup};
			const first = await scratchRun(
				sandbox,
				['--backend', backend, '--promote', 'small', '--', 'sh', '-c', 'echo small > small.txt'],
				options,
			);
			t.is(first.exitCode, 0, String(first.stderr));

			const full = await scratchRun(
				sandbox,
				[
					'--backend',
					backend,
					'--',
					'sh',
					'-c',
					'dd if=/dev/zero of=big bs=1M count=64 2>/dev/null || { echo "dd: $?"; exit 28; }',
				],
				options,
			);
			t.is(full.exitCode, 28, 'the command saw the disk full and exited with its own status');
			t.is(String(full.stdout), 'dd: 1');

			const report = await scratch(sandbox, ['gc', '--store', sandbox.store, '--json'], options);
			t.is(report.exitCode, 0, String(report.stderr));
			const usage = await held.sh(`df -k --output=used '${sandbox.store}' | tail -n 1`);
			t.true(Number(usage.output.trim()) < 1024, `the space is back: ${usage.output}`);
			const again = await scratchRun(
				sandbox,
				['--backend', backend, '--base', 'small', '--', 'cat', 'small.txt'],
				options,
			);
			t.is(String(again.stdout), 'small', String(again.stderr));
			t.deepEqual(checkStoreConsistency(held.inside(sandbox.store)), []);
			await assertNothingRunning(t, sandbox);
		});

		test(`promoting onto a full disk fails in one line, leaves the name as it was and gives the space back (${backend}, ${user})`, async (t) => {
			const sandbox = makeSandbox(t, user);
			const held = await storeOnSmallTmpfs(t, sandbox, '8m');
			const options = {setup: held.setup};
			const first = await scratchRun(
				sandbox,
				['--backend', backend, '--promote', 'deps', '--', 'sh', '-c', 'echo old > content'],
				options,
			);
			t.is(first.exitCode, 0, String(first.stderr));
			const oldLayer = refTarget(held.inside(sandbox.store), 'deps');

			// The command fills the disk to the last block and still succeeds: the promotion has no room.
			const full = await scratchRun(
				sandbox,
				[
					'--backend',
					backend,
					'--promote',
					'deps',
					'--',
					'sh',
					'-c',
					'echo new > content; dd if=/dev/zero of=big bs=64k 2>/dev/null; dd if=/dev/zero of=rest bs=1 2>/dev/null; exit 0',
				],
				options,
			);
			t.is(full.exitCode, 125);
			t.regex(
				String(full.stderr),
				/^scratch: the command succeeded but promoting its writes to deps failed: no space left on device \(the store's file system is full\); deps is unchanged and the writes were discarded; free space \(scratch gc\) and run again$/,
			);
			t.is(refTarget(held.inside(sandbox.store), 'deps'), oldLayer);
			const report = await scratch(sandbox, ['gc', '--store', sandbox.store], options);
			t.is(report.exitCode, 0, String(report.stderr));
			t.deepEqual(checkStoreConsistency(held.inside(sandbox.store)), []);
			t.deepEqual(storeLeftovers(held.inside(sandbox.store)), []);
			const seen = await scratchRun(
				sandbox,
				['--backend', backend, '--base', 'deps', '--', 'cat', 'content'],
				options,
			);
			t.is(String(seen.stdout), 'old', String(seen.stderr));
			await assertNothingRunning(t, sandbox);
		});
	}

	test(`a read-only store still lists, inspects, diffs and exports, and refuses to run or change in one line (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		await promoteLayer(t, sandbox, 'deps', 'echo deps > deps.txt; rm README.md');
		const held = await holdMountNamespace(
			t,
			`mount --bind '${sandbox.store}' '${sandbox.store}'\nmount -o remount,bind,ro '${sandbox.store}'`,
		);
		const options = {setup: held.setup};
		// The promotion's discarded run dir is deleted in the background: wait for it, then look.
		t.true(await eventually(() => storeLeftovers(sandbox.store).length === 0, 20_000));
		const before = fingerprintTree(sandbox.store);

		const run = await scratchRun(sandbox, ['--', 'true'], options);
		t.is(run.exitCode, 125);
		t.regex(
			String(run.stderr),
			/^scratch: store \S+ is on a read-only file system, and a run needs to write its upper dir there; use a writable store with --store DIR \(a read-only store can still be listed, inspected, diffed and exported\)$/,
		);

		for (const args of [['ls'], ['inspect', 'deps'], ['diff', 'deps']]) {
			const result = await scratch(sandbox, [...args, '--store', sandbox.store], options);
			t.is(result.exitCode, 0, `${args.join(' ')}: ${String(result.stderr)}`);
		}

		const exported = path.join(sandbox.root, 'deps.tar');
		const exportResult = await scratch(
			sandbox,
			['export', 'deps', '-o', exported, '--store', sandbox.store],
			options,
		);
		t.is(exportResult.exitCode, 0, String(exportResult.stderr));
		t.true(readFileSync(exported).includes('.wh.README.md'));

		for (const args of [['tag', 'deps', 'other'], ['rm', 'deps'], ['gc']]) {
			const result = await scratch(sandbox, [...args, '--store', sandbox.store], options);
			t.is(result.exitCode, 1, `${args.join(' ')}: ${String(result.stderr)}`);
			t.regex(String(result.stderr), /^scratch: [^\n]*read-only file system[^\n]*$/, args.join(' '));
		}

		t.deepEqual(fingerprintTree(sandbox.store), before, 'nothing in the store changed');
		await assertNothingRunning(t, sandbox);
	});
}

for (const user of users) {
	for (const backend of backendsOf(user)) {
		for (const mode of ['discard', 'promote'] as const) {
			test(`a store removed while the command runs ends the run cleanly${mode === 'promote' ? ', promoting nothing,' : ''} and the next run makes a new store (${backend}, ${user})`, async (t) => {
				const sandbox = makeSandbox(t, user);
				const go = path.join(sandbox.root, 'go');
				const sleep = uniqueSleep();
				const subprocess = runIn(
					sandbox,
					backend,
					[
						...(mode === 'promote' ? ['--promote', 'out'] : []),
						'--',
						'sh',
						'-c',
						`echo x > written; sleep ${sleep} & echo ready; while [ ! -e ${go} ]; do sleep 0.05; done; exit 0`,
					],
					{buffer: {stdout: false, stderr: true}},
				) as unknown as ResultPromise;
				await waitForLine(subprocess, 'ready');
				const {rmSync} = await import('node:fs');
				rmSync(sandbox.store, {recursive: true, force: true});
				writeFileSync(go, '');
				const result = await subprocess;
				if (mode === 'promote') {
					t.is(result.exitCode, 125);
					t.regex(
						String(result.stderr),
						/^scratch: the command succeeded but the store \S+ was removed while it ran, so its writes could not be promoted to out; nothing was kept$/,
					);
				} else {
					t.is(result.exitCode, 0, String(result.stderr));
					t.is(String(result.stderr), '');
				}

				t.true(await eventually(() => processesWith(sleep).length === 0));
				await assertNothingRunning(t, sandbox);
				const next = await runIn(sandbox, backend, ['--', 'sh', '-c', 'test ! -e written']);
				t.is(next.exitCode, 0, String(next.stderr));
				await assertStoreAtRest(t, sandbox);
			});
		}
	}
}
