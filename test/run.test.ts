import {
	chownSync,
	existsSync,
	mkdirSync,
	readdirSync,
	readFileSync,
	realpathSync,
	rmSync,
	writeFileSync,
} from 'node:fs';
import path from 'node:path';
import test from 'ava';
import {
	chownTree,
	eventually,
	fingerprintTree,
	hostMountsUnder,
	makeSandbox,
	nobodyId,
	processesWith,
	scratch,
	scratchRun,
	storeLeftovers,
	uniqueSleep,
	users,
	writeTree,
} from './helpers/scratch.js';

// Creates, modifies, deletes and renames files and directories, checks what it sees, lists the view.
const mutateScript = `set -e
echo new > created.txt
mkdir -p newdir/inner && echo n > newdir/inner/f
echo more >> README.md
rm lib/deep/x.txt
rm -r lib/deep
mv lib/code.c lib/renamed.c
mv lib libdir
ln -s created.txt link
chmod 600 README.md
test "$(cat created.txt)" = new
test ! -e lib
test -f libdir/renamed.c
test "$(tail -n 1 README.md)" = more
test "$(cat link)" = new
find . | sort`;

for (const user of users) {
	test(`writes are visible to the command and the source stays byte for byte unchanged (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const before = fingerprintTree(sandbox.src);
		const result = await scratchRun(sandbox, ['--', 'sh', '-c', mutateScript]);
		t.is(result.exitCode, 0, String(result.stderr));
		t.deepEqual(String(result.stdout).split('\n'), [
			'.',
			'./README.md',
			'./created.txt',
			'./libdir',
			'./libdir/renamed.c',
			'./link',
			'./newdir',
			'./newdir/inner',
			'./newdir/inner/f',
		]);
		t.deepEqual(fingerprintTree(sandbox.src), before);
		t.deepEqual(hostMountsUnder(sandbox.root), []);
	});

	test(`no mount, process or run directory remains after a run (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const sleep = uniqueSleep();
		// The command leaves a background process behind; the PID namespace must take it down.
		const result = await scratchRun(sandbox, [
			'--',
			'sh',
			'-c',
			`sleep ${sleep} & mkdir -p locked/inner; chmod 000 locked; mkdir many; cd many; seq 1 2000 | xargs touch`,
		]);
		t.is(result.exitCode, 0, String(result.stderr));
		t.deepEqual(hostMountsUnder(sandbox.root), []);
		t.deepEqual(processesWith(sleep), []);
		t.deepEqual(readdirSync(path.join(sandbox.store, 'runs')), []);
		// Deletion runs in the background once scratch has exited, mode-000 directories included.
		t.true(
			await eventually(() => storeLeftovers(sandbox.store).length === 0, 20_000),
			storeLeftovers(sandbox.store).join(),
		);
		const gc = await scratch(sandbox, ['gc', '--store', sandbox.store, '--json']);
		t.is(gc.exitCode, 0, String(gc.stderr));
		t.like(JSON.parse(String(gc.stdout)), {trashEntries: [], deadRuns: []});
	});

	test(`the command starts in the same subdirectory of the view as the caller (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const result = await scratch(
			sandbox,
			['run', '--store', sandbox.store, '--src', sandbox.src, '--', 'sh', '-c', 'pwd; ls'],
			{
				cwd: path.join(sandbox.src, 'lib'),
			},
		);
		t.is(result.exitCode, 0, String(result.stderr));
		const [workingDirectory, ...listing] = String(result.stdout).split('\n');
		t.regex(workingDirectory ?? '', /\/runs\/[a-z\d]{12}\/merged\/lib$/);
		t.deepEqual(listing, ['code.c', 'deep']);
	});

	test(`--in-place shows the view at the source's own path and the host sees no change (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const before = fingerprintTree(sandbox.src);
		const result = await scratch(
			sandbox,
			[
				'run',
				'--store',
				sandbox.store,
				'--in-place',
				'--',
				'sh',
				'-c',
				'pwd; echo x > out.txt; rm README.md; ls',
			],
			{cwd: sandbox.src},
		);
		t.is(result.exitCode, 0, String(result.stderr));
		t.deepEqual(String(result.stdout).split('\n'), [realpathSync(sandbox.src), 'lib', 'out.txt']);
		t.deepEqual(fingerprintTree(sandbox.src), before);
		t.deepEqual(hostMountsUnder(sandbox.root), []);
	});

	test(`exit statuses are the command's own, 126, 127 and 128+N (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user, {'data.txt': 'not a program\n'});
		const cases: Array<[string[], number]> = [
			[['true'], 0],
			[['sh', '-c', 'exit 3'], 3],
			[['./data.txt'], 126],
			[['./lib'], 126],
			[['no-such-command-for-scratch'], 127],
			[['sh', '-c', 'kill -TERM $$'], 143],
			[['sh', '-c', 'kill -KILL $$'], 137],
		];
		for (const [command, expected] of cases) {
			const result = await scratch(
				sandbox,
				['run', '--store', sandbox.store, '--src', sandbox.src, '--', ...command],
				{
					cwd: sandbox.src,
				},
			);
			t.is(result.exitCode, expected, `${command.join(' ')}: ${String(result.stderr)}`);
		}

		const notFound = await scratchRun(sandbox, ['--', 'no-such-command-for-scratch']);
		t.regex(String(notFound.stderr), /no-such-command-for-scratch: not found/);
	});

	test(`--tmpfs gives the run private, empty directories that vanish with it (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const marker = `scratch-tmpfs-${process.pid}-${Date.now()}`;
		const hostFile = path.join('/tmp', `${marker}-host`);
		writeFileSync(hostFile, 'host\n');
		t.teardown(() => rmSync(hostFile, {force: true}));
		const result = await scratchRun(sandbox, [
			'--tmpfs',
			'/tmp',
			'--tmpfs',
			'build',
			'--',
			'sh',
			'-c',
			`test ! -e ${hostFile} && echo x > /tmp/${marker} && stat -f -c %T /tmp build && echo y > build/out && test -f README.md`,
		]);
		t.is(result.exitCode, 0, String(result.stderr));
		t.deepEqual(String(result.stdout).split('\n'), ['tmpfs', 'tmpfs']);
		t.false(existsSync(`/tmp/${marker}`));
		t.false(existsSync(path.join(sandbox.src, 'build')));
	});

	test(`--keep keeps the writes in the store and prints the run id (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const before = fingerprintTree(sandbox.src);
		const result = await scratchRun(sandbox, [
			'--keep',
			'--',
			'sh',
			'-c',
			'echo kept > kept.txt; rm README.md',
		]);
		t.is(result.exitCode, 0, String(result.stderr));
		const runId = /kept run ([a-z\d]{12})/.exec(String(result.stderr))?.[1];
		t.truthy(runId, String(result.stderr));
		const kept = path.join(sandbox.store, 'kept', runId ?? '');
		t.is(readFileSync(path.join(kept, 'upper/kept.txt'), 'utf8'), 'kept\n');
		t.true(existsSync(path.join(kept, 'upper/README.md')), 'the deletion is kept as a whiteout');
		const record = JSON.parse(readFileSync(path.join(kept, 'run.json'), 'utf8')) as Record<string, unknown>;
		t.like(record, {id: runId, state: 'kept', exitCode: 0, src: realpathSync(sandbox.src)});
		t.deepEqual(fingerprintTree(sandbox.src), before);
		// A kept run is not garbage.
		await scratch(sandbox, ['gc', '--store', sandbox.store]);
		t.true(existsSync(path.join(kept, 'upper/kept.txt')));
		t.deepEqual(storeLeftovers(sandbox.store), []);
	});

	test(`--json-file writes a summary with the run id, status, durations and what was written (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const summaryFile = path.join(sandbox.root, 'summary.json');
		const result = await scratchRun(sandbox, [
			'--json-file',
			summaryFile,
			'--',
			'sh',
			'-c',
			'head -c 1000 /dev/zero > a; head -c 24 /dev/zero > b; rm README.md; exit 4',
		]);
		t.is(result.exitCode, 4, String(result.stderr));
		const summary = JSON.parse(readFileSync(summaryFile, 'utf8')) as {
			runId: string;
			exitCode: number;
			backend: string;
			written: {files: number; bytes: number; deletions: number};
			durations: Record<string, number>;
		};
		t.regex(summary.runId, /^[a-z\d]{12}$/);
		t.is(summary.exitCode, 4);
		t.is(summary.backend, user === 'root' ? 'kernel' : 'userns');
		t.deepEqual(summary.written, {
			files: 2,
			directories: 0,
			deletions: 1,
			bytes: 1024,
		} as typeof summary.written);
		for (const key of ['setupMs', 'commandMs', 'teardownMs', 'totalMs']) {
			t.true((summary.durations[key] ?? -1) >= 0, key);
		}
	});

	test(`20 concurrent runs over one source all succeed and see only their own writes (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const barrier = path.join(sandbox.root, 'barrier');
		const runs = 20;
		// Each run waits (bounded) until all runs are up, so they really overlap.
		const script = `set -e
echo "$SCRATCH_RUN_ID" > "mine-$SCRATCH_RUN_ID"
touch "${barrier}/$SCRATCH_RUN_ID"
i=0; while [ "$(ls "${barrier}" | wc -l)" -lt ${runs} ] && [ $i -lt 3000 ]; do i=$((i+1)); sleep 0.01; done
test "$(ls "${barrier}" | wc -l)" -ge ${runs} || { echo "barrier not reached: $(ls "${barrier}" | wc -l) runs up" >&2; exit 1; }
test "$(ls | grep -c '^mine-')" = 1 || { echo "saw other runs' writes: $(ls)" >&2; exit 1; }
cat "mine-$SCRATCH_RUN_ID"`;
		mkdirSync(barrier, {recursive: true});
		if (user === 'nobody') {
			chownSync(barrier, nobodyId, nobodyId);
		}

		const results = await Promise.all(
			Array.from({length: runs}, () => scratchRun(sandbox, ['--', 'sh', '-c', script])),
		);
		for (const result of results) {
			t.is(result.exitCode, 0, String(result.stderr));
		}

		const ids = new Set(results.map((result) => String(result.stdout)));
		t.is(ids.size, runs);
		t.deepEqual(readdirSync(sandbox.src).sort(), ['README.md', 'lib']);
		t.deepEqual(hostMountsUnder(sandbox.root), []);
	});
}

for (const user of users) {
	test(`a deletion interrupted earlier is finished by the next run (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const first = await scratchRun(sandbox, ['--', 'true']);
		t.is(first.exitCode, 0, String(first.stderr));
		// What a deleter killed halfway leaves: a partly deleted tree in the trash, locked by nobody.
		const leftover = path.join(sandbox.store, 'trash', 'run-interrupted0');
		writeTree(leftover, {'upper/a/b/c.txt': 'x', 'upper/d.txt': 'y', 'work/': ''});
		if (user === 'nobody') {
			chownTree(leftover, nobodyId);
		}

		const next = await scratchRun(sandbox, ['--', 'true']);
		t.is(next.exitCode, 0, String(next.stderr));
		t.true(await eventually(() => !existsSync(leftover), 20_000));
	});

	test(`the command reads the caller's stdin (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const result = await scratch(
			sandbox,
			['run', '--store', sandbox.store, '--src', sandbox.src, '--', 'sh', '-c', 'tr a-z A-Z'],
			{
				input: 'from stdin\n',
			},
		);
		t.is(result.exitCode, 0, String(result.stderr));
		t.is(String(result.stdout), 'FROM STDIN');
	});
}
