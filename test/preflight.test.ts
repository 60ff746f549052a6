import {chownSync, existsSync, mkdirSync, readdirSync, renameSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import test, {type ExecutionContext} from 'ava';
import {execa} from 'execa';
import {
	fingerprintTree,
	makeSandbox,
	nobodyId,
	type Sandbox,
	scratch,
	scratchRun,
	users,
} from './helpers/scratch.js';

/** A refused run: status 125, one line on stderr that starts with "scratch:", and no store created. */
async function assertRefused(t: ExecutionContext, sandbox: Sandbox, args: string[], pattern: RegExp) {
	const result = await scratch(sandbox, ['run', ...args], {cwd: sandbox.root});
	t.is(result.exitCode, 125, `${args.join(' ')}: ${String(result.stderr)}`);
	const stderr = String(result.stderr);
	t.regex(stderr, /^scratch: [^\n]+$/, 'exactly one line');
	t.regex(stderr, pattern);
	t.is(String(result.stdout), '');
	return result;
}

for (const user of users) {
	test(`bad input to run gets one clear line, status 125, and creates nothing (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user, {'plain-file': 'x\n'});
		const before = fingerprintTree(sandbox.root);
		const store = ['--store', sandbox.store];
		const cases: Array<[string[], RegExp]> = [
			[
				[...store, '--src', path.join(sandbox.root, 'missing'), '--', 'true'],
				/source tree .*missing does not exist; pass an existing directory/,
			],
			[[...store, '--src', path.join(sandbox.src, 'plain-file'), '--', 'true'], /is not a directory/],
			[
				['--store', path.join(sandbox.src, 'inner-store'), '--src', sandbox.src, '--', 'true'],
				/store .* is inside the source tree/,
			],
			[[...store, '--src', sandbox.src, '--'], /no command to run; put it after '--'/],
			[[...store, '--src', sandbox.src], /no command to run/],
			[[...store, '--src', sandbox.src, '--', ''], /the command name is empty/],
			[[...store, '--frobnicate', '--', 'true'], /unknown option --frobnicate for scratch run/],
			[[...store, '--src', sandbox.src, '--src', sandbox.src, '--', 'true'], /--src is given more than once/],
			[[...store, '--backend', 'magic', '--', 'true'], /--backend magic is not one of auto, kernel, userns/],
			[[...store, '--src', '--', 'true'], /--src needs a value/],
			[[...store, '--json', '--', 'true'], /--json-file FILE, not --json/],
			[[...store, '--keep=yes', '--', 'true'], /--keep takes no value/],
			[
				[...store, '--src', sandbox.src, '--tmpfs', '/no/such/dir/for/scratch', '--', 'true'],
				/--tmpfs \/no\/such\/dir\/for\/scratch: .* is not an existing directory/,
			],
			[
				[
					...store,
					'--src',
					sandbox.src,
					'--json-file',
					path.join(sandbox.root, 'missing/summary.json'),
					'--',
					'true',
				],
				/--json-file .*: directory .* does not exist/,
			],
		];
		if (user === 'nobody') {
			cases.push([
				[...store, '--src', sandbox.src, '--backend', 'kernel', '--', 'true'],
				/backend kernel cannot run here: the kernel backend needs root.*try --backend userns/,
			]);
		}

		for (const [args, pattern] of cases) {
			await assertRefused(t, sandbox, args, pattern);
		}

		t.deepEqual(fingerprintTree(sandbox.root), before, 'nothing was created or changed');
	});

	test(`a store that cannot be used is refused clearly (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const notAStore = path.join(sandbox.root, 'not-a-store');
		mkdirSync(notAStore);
		writeFileSync(path.join(notAStore, 'precious.txt'), 'keep me\n');
		const result = await assertRefused(
			t,
			sandbox,
			['--store', notAStore, '--src', sandbox.src, '--', 'true'],
			/is not a scratch store/,
		);
		t.deepEqual(readdirSync(notAStore), ['precious.txt']);
		t.regex(String(result.stderr), /pass an empty or new directory with --store DIR/);

		// The source may not live inside the store either.
		const ok = await scratchRun(sandbox, ['--keep', '--', 'true']);
		t.is(ok.exitCode, 0, String(ok.stderr));
		// Let the run's background deletion finish first: it changes the store on its own schedule.
		t.is((await scratch(sandbox, ['gc', '--store', sandbox.store])).exitCode, 0);
		const storeBefore = fingerprintTree(sandbox.store);
		await assertRefused(
			t,
			sandbox,
			['--store', sandbox.store, '--src', path.join(sandbox.store, 'kept'), '--', 'true'],
			/source .* is inside the store/,
		);
		t.deepEqual(fingerprintTree(sandbox.store), storeBefore);
	});

	test(`paths with colons, commas, backslashes, spaces and newlines work as source and store (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const odd = path.join(sandbox.root, 'we:ird, na\\me\nwith lines');
		mkdirSync(odd);
		if (user === 'nobody') {
			chownSync(odd, nobodyId, nobodyId);
		}

		const source = path.join(odd, 'src:1,2');
		renameSync(sandbox.src, source);
		const before = fingerprintTree(source);
		const result = await scratch(sandbox, [
			'run',
			'--store',
			path.join(odd, 'store,a:b'),
			'--src',
			source,
			'--tmpfs',
			'tmp, dir:x',
			'--',
			'sh',
			'-c',
			'echo new > "a:b,c"; cat README.md; stat -f -c %T "tmp, dir:x"',
		]);
		t.is(result.exitCode, 0, String(result.stderr));
		t.is(String(result.stdout), '# fixture\ntmpfs');
		t.deepEqual(fingerprintTree(source), before);
	});
}

test('a store on overlayfs is refused by --backend kernel before anything is created, pointing to fuse (root)', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	for (const directory of ['lower', 'upper', 'work', 'merged']) {
		mkdirSync(path.join(sandbox.root, directory));
	}

	const cli = new URL('../dist/cli.cjs', import.meta.url).pathname;
	// A private mount namespace: the test's own overlay never reaches the host.
	const result = await execa(
		'unshare',
		[
			'--mount',
			'--propagation',
			'private',
			'sh',
			'-c',
			'mount -t overlay overlay -o lowerdir=lower,upperdir=upper,workdir=work merged && exec "$@"',
			'sh',
			process.execPath,
			cli,
			'run',
			'--store',
			path.join(sandbox.root, 'merged/store'),
			'--src',
			sandbox.src,
			'--backend',
			'kernel',
			'--',
			'true',
		],
		{cwd: sandbox.root, reject: false},
	);
	t.is(result.exitCode, 125);
	t.regex(
		String(result.stderr),
		/^scratch: backend kernel cannot run here: the store .* is on overlayfs \(as inside a container\), which the kernel refuses as an upper dir; try --backend fuse$/,
	);
	t.false(existsSync(path.join(sandbox.root, 'upper/store')));
});

test('a store owned by another user is refused with a permission error (nobody)', async (t) => {
	const sandbox = makeSandbox(t, 'nobody');
	const rootStore = path.join(sandbox.root, 'root-store');
	const asRoot = await scratch({user: 'root'}, [
		'run',
		'--store',
		rootStore,
		'--src',
		sandbox.src,
		'--',
		'true',
	]);
	t.is(asRoot.exitCode, 0, String(asRoot.stderr));
	const result = await scratch(sandbox, ['run', '--store', rootStore, '--src', sandbox.src, '--', 'true']);
	t.is(result.exitCode, 125);
	t.regex(String(result.stderr), /^scratch: cannot open store .*: permission denied; use a store you own/);
});
