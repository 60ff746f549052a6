import {closeSync, existsSync, openSync, readdirSync, readFileSync} from 'node:fs';
import path from 'node:path';
import test from 'ava';
import {
	collectGarbage,
	NotFoundError,
	type RunEvent,
	runCommand,
	ScratchError,
	startRun,
	UsageError,
} from '../src/index.js';
import {
	eventually,
	fingerprintTree,
	hostMountsUnder,
	makeSandbox,
	storeLeftovers,
} from './helpers/scratch.js';

test('runCommand runs in a view, sends output to the given descriptors and reports progress', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	const before = fingerprintTree(sandbox.src);
	const outputFile = path.join(sandbox.root, 'output.txt');
	const output = openSync(outputFile, 'w');
	t.teardown(() => closeSync(output));
	const events: RunEvent[] = [];
	const result = await runCommand({
		command: ['sh', '-c', 'echo "$SCRATCH_RUN_ID" > id.txt; cat id.txt; rm -r lib'],
		src: sandbox.src,
		store: sandbox.store,
		stdio: ['ignore', output, output],
		measure: true,
		onEvent: (event) => events.push(event),
	});
	t.is(result.exitCode, 0);
	t.is(readFileSync(outputFile, 'utf8'), `${result.runId}\n`);
	t.like(result, {backend: 'kernel', kept: false, commandStarted: true, source: sandbox.src});
	t.is(result.written?.files, 1);
	t.is(result.written?.deletions, 1);
	t.deepEqual(events, [
		{
			type: 'started',
			runId: result.runId,
			backend: 'kernel',
			view: path.join(sandbox.store, 'runs', result.runId, 'merged'),
		},
	]);
	t.deepEqual(fingerprintTree(sandbox.src), before);
});

test('a run killed before its command starts is aborted cleanly with 128+N', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	const marker = path.join(sandbox.root, 'ran');
	const run = startRun({
		command: ['touch', marker],
		src: sandbox.src,
		store: sandbox.store,
		stdio: ['ignore', 'ignore', 'ignore'],
	});
	run.kill('SIGTERM');
	const result = await run.result;
	t.like(result, {exitCode: 143, interruptedBy: 'SIGTERM', commandStarted: false});
	t.false(existsSync(marker));
	t.deepEqual(hostMountsUnder(sandbox.root), []);
	await collectGarbage({store: sandbox.store});
	t.deepEqual(storeLeftovers(sandbox.store), []);
});

test('errors are ScratchErrors with stable codes and nothing is created', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	const missing = await t.throwsAsync(
		runCommand({command: ['true'], src: path.join(sandbox.root, 'nope'), store: sandbox.store}),
		{
			instanceOf: NotFoundError,
		},
	);
	t.is(missing?.code, 'ERR_SCRATCH_NOT_FOUND');
	t.true(missing instanceof ScratchError);
	const usage = await t.throwsAsync(runCommand({command: [], src: sandbox.src, store: sandbox.store}), {
		instanceOf: UsageError,
	});
	t.is(usage?.code, 'ERR_SCRATCH_USAGE');
	t.false(existsSync(sandbox.store));
});

test('keeping a run reports it and gc leaves it alone', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	const events: RunEvent[] = [];
	const result = await runCommand({
		command: ['sh', '-c', 'echo kept > kept.txt'],
		src: sandbox.src,
		store: sandbox.store,
		keep: true,
		stdio: ['ignore', 'ignore', 'ignore'],
		onEvent: (event) => events.push(event),
	});
	t.is(result.exitCode, 0);
	t.is(result.keptUpper, path.join(sandbox.store, 'kept', result.runId, 'upper'));
	t.deepEqual(events.at(-1), {type: 'kept', runId: result.runId, upper: result.keptUpper});
	const report = await collectGarbage({store: sandbox.store});
	t.deepEqual(report.deadRuns, []);
	t.deepEqual(readdirSync(path.join(sandbox.store, 'kept')), [result.runId]);
	t.is(readFileSync(path.join(result.keptUpper ?? '', 'kept.txt'), 'utf8'), 'kept\n');
});

test('in a long-lived process the writes of a discarded run are deleted shortly after it returns', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	const result = await runCommand({
		command: ['sh', '-c', 'mkdir -p a/b && seq 1 500 | sed "s|^|a/b/f|" | xargs touch'],
		src: sandbox.src,
		store: sandbox.store,
		stdio: ['ignore', 'ignore', 'ignore'],
	});
	t.is(result.exitCode, 0);
	// This process keeps running, so the deleter is released by its timer rather than by our exit.
	t.true(
		await eventually(() => storeLeftovers(sandbox.store).length === 0, 10_000),
		storeLeftovers(sandbox.store).join(),
	);
	t.deepEqual(hostMountsUnder(sandbox.root), []);
});
