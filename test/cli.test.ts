import {existsSync} from 'node:fs';
import test from 'ava';
import {makeSandbox, scratch} from './helpers/scratch.js';

const root = {user: 'root'} as const;

test('commands other than run exit 2 on usage errors, with one line on stderr', async (t) => {
	const cases: Array<[string[], RegExp]> = [
		[[], /^scratch: no command given; see scratch --help\n?$/],
		[
			['frobnicate'],
			/^scratch: unknown command 'frobnicate' \(commands: run, ls, inspect, tag, rm, diff, promote, gc, squash, export, import, push, pull, doctor, ws\); see scratch --help\n?$/,
		],
		[['gc', '--bogus'], /^scratch: unknown argument: bogus; see scratch --help\n?$/],
	];
	for (const [args, pattern] of cases) {
		const result = await scratch(root, args);
		t.is(result.exitCode, 2, args.join(' '));
		t.regex(String(result.stderr), pattern);
	}
});

test('gc on a store that does not exist is an operational error (exit 1) and creates nothing', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	const result = await scratch(root, ['gc', '--store', sandbox.store]);
	t.is(result.exitCode, 1);
	t.regex(String(result.stderr), /^scratch: no scratch store at .*; pass the right one with --store DIR\n?$/);
	t.false(existsSync(sandbox.store));
});

test('run --help documents the options and the exit statuses', async (t) => {
	const result = await scratch(root, ['run', '--help']);
	t.is(result.exitCode, 0);
	for (const option of ['--src', '--in-place', '--keep', '--backend', '--tmpfs', '--json-file', '--store']) {
		t.true(String(result.stdout).includes(option), option);
	}

	t.regex(String(result.stdout), /125\s+scratch\s+failed/);
});

test('global options may come before the command name', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	const result = await scratch(root, [
		'--store',
		sandbox.store,
		'run',
		'--src',
		sandbox.src,
		'--',
		'sh',
		'-c',
		'cat README.md; exit 5',
	]);
	t.is(result.exitCode, 5, String(result.stderr));
	t.is(String(result.stdout), '# fixture');
});

test('--version prints the package version', async (t) => {
	const result = await scratch(root, ['--version']);
	t.is(result.exitCode, 0);
	t.regex(String(result.stdout), /^\d+\.\d+\.\d+$/);
});

test('gc reports what it freed in a readable line and as JSON', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	const run = await scratch(root, ['run', '--store', sandbox.store, '--src', sandbox.src, '--', 'true']);
	t.is(run.exitCode, 0);
	const human = await scratch(root, ['gc', '--store', sandbox.store, '--dry-run']);
	t.regex(
		String(human.stdout),
		/^scratch gc: would free \d+ unreachable layers?, \d+ half-made layers?, \d+ dead runs?, \d+ abandoned temporary entr(y|ies), \d+ trash entr(y|ies): \d+ files and directories, [\d.]+ (B|KiB|MiB); kept \d+ reachable layers?$/,
	);
	const json = await scratch(root, ['gc', '--store', sandbox.store, '--json']);
	const report = JSON.parse(String(json.stdout)) as Record<string, unknown>;
	t.like(report, {dryRun: false, deadRuns: [], abandonedTemporary: []});
	t.is(typeof report['bytesFreed'], 'number');
});
