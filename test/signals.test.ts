import {readdirSync, readFileSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import test from 'ava';
import type {ResultPromise} from 'execa';
import {
	eventually,
	hostMountsUnder,
	makeSandbox,
	processesWith,
	type Sandbox,
	scratch,
	scratchRun,
	storeLeftovers,
	uniqueSleep,
	users,
	waitForLine,
} from './helpers/scratch.js';

function startLongRun(sandbox: Sandbox, script: string) {
	return scratchRun(sandbox, ['--', 'sh', '-c', script], {
		buffer: false,
	}) as unknown as ResultPromise;
}

for (const user of users) {
	for (const [signal, status] of [
		['SIGTERM', 143],
		['SIGINT', 130],
	] as const) {
		test(`${signal} sent to scratch reaches the command, then scratch cleans up and exits ${status} (${user})`, async (t) => {
			const sandbox = makeSandbox(t, user);
			const marker = path.join(sandbox.root, 'marker');
			const sleep = uniqueSleep();
			const run = startLongRun(
				sandbox,
				`trap 'echo "got ${signal.slice(3)}" > ${marker}; exit 7' ${signal.slice(3)}; sleep ${sleep} & echo ready; wait`,
			);
			await waitForLine(run, 'ready');
			run.kill(signal);
			const result = await run;
			t.is(result.exitCode, status);
			t.is(readFileSync(marker, 'utf8'), `got ${signal.slice(3)}\n`);
			t.true(await eventually(() => processesWith(sleep).length === 0));
			t.deepEqual(hostMountsUnder(sandbox.root), []);
			t.deepEqual(readdirSync(path.join(sandbox.store, 'runs')), []);
		});
	}

	test(`SIGKILL of scratch kills the command, and the next run and gc reclaim what it left (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const sleep = uniqueSleep();
		const run = startLongRun(sandbox, `echo x > written; sleep ${sleep} & echo ready; wait`);
		await waitForLine(run, 'ready');
		run.kill('SIGKILL');
		await run;
		t.true(await eventually(() => processesWith(sleep).length === 0), 'the command died with scratch');
		t.deepEqual(hostMountsUnder(sandbox.root), [], 'its mounts died with its namespace');
		const [deadRun] = readdirSync(path.join(sandbox.store, 'runs'));
		t.truthy(deadRun, 'the dead run is still on disk');

		const dryRun = await scratch(sandbox, ['gc', '--store', sandbox.store, '--dry-run', '--json']);
		t.is(dryRun.exitCode, 0, String(dryRun.stderr));
		const report = JSON.parse(String(dryRun.stdout)) as {deadRuns: string[]; dryRun: boolean};
		t.deepEqual(report.deadRuns, [deadRun]);
		t.deepEqual(readdirSync(path.join(sandbox.store, 'runs')), [deadRun], 'a dry run deletes nothing');

		// The next run moves the dead run's directory out of runs/ on its way out.
		const next = await scratchRun(sandbox, ['--', 'true']);
		t.is(next.exitCode, 0, String(next.stderr));
		t.deepEqual(readdirSync(path.join(sandbox.store, 'runs')), []);
		const gc = await scratch(sandbox, ['gc', '--store', sandbox.store]);
		t.is(gc.exitCode, 0, String(gc.stderr));
		t.deepEqual(storeLeftovers(sandbox.store), []);
	});

	test(`gc never touches a live run (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const release = path.join(sandbox.root, 'release');
		const run = startLongRun(
			sandbox,
			`echo data > file; echo ready; i=0; while [ ! -e ${release} ] && [ $i -lt 3000 ]; do i=$((i+1)); sleep 0.01; done; cat file`,
		);
		await waitForLine(run, 'ready');
		const gc = await scratch(sandbox, ['gc', '--store', sandbox.store, '--json']);
		t.is(gc.exitCode, 0, String(gc.stderr));
		t.deepEqual((JSON.parse(String(gc.stdout)) as {deadRuns: string[]}).deadRuns, []);
		t.is(readdirSync(path.join(sandbox.store, 'runs')).length, 1);
		writeFileSync(release, '');
		const result = await run;
		t.is(result.exitCode, 0);
	});
}
