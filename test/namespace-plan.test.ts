import {spawn, spawnSync} from 'node:child_process';
import {closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import test, {type ExecutionContext} from 'ava';
import {dir} from 'tmp-promise';
import {InvalidPathError, LimitError, MountError, type ScratchError, UsageError} from '../src/errors.js';
import {
	buildNamespaceCommand,
	buildOverlayOptions,
	checkMountOptions,
	exitMarker,
	exitStatusOf,
	isWithin,
	maxMountOptionsLength,
	type NamespacePlan,
	type NamespaceTools,
	readyMarker,
	resolveTmpfsPath,
	setupFailureMarker,
	setupNamedParameters,
} from '../src/run/namespace-plan.js';
import {parseSetupOutput, translateSetupFailure} from '../src/run/setup-errors.js';
import {maxStackedLayers} from '../src/store/layers.js';
import {readStartTime} from '../src/system/process-identity.js';

const tools: NamespaceTools = {
	setpriv: '/usr/bin/setpriv',
	unshare: '/usr/bin/unshare',
	sh: '/bin/sh',
	mount: '/bin/mount',
	mkdir: '/bin/mkdir',
};

function makePlan(overrides: Partial<NamespacePlan> = {}): NamespacePlan {
	return {
		backend: 'kernel',
		source: '/home/user/project',
		target: '/var/lib/scratch/runs/abc/merged',
		workingDirectory: '/var/lib/scratch/runs/abc/merged/src',
		volatile: true,
		layers: [],
		layersDirectory: '/var/lib/scratch/layers',
		runId: 'abc',
		tmpfs: [],
		command: ['make', 'test'],
		...overrides,
	};
}

/** The arguments unshare gets before its own `--`. */
function unshareFlags(args: string[]): string[] {
	const start = args.indexOf(tools.unshare) + 1;
	return args.slice(start, args.indexOf('--', start));
}

/** The setup script and the positional parameters it receives (`$0` first). */
function scriptInvocation(args: string[]): {script: string; parameters: string[]} {
	const shIndex = args.indexOf(tools.sh);
	if (args[shIndex + 1] !== '-c') {
		throw new Error('sh is not called with -c');
	}

	return {script: args[shIndex + 2] as string, parameters: args.slice(shIndex + 3)};
}

/**
The named positional parameters `$1`..`$8`, then the counted lists that follow them: outside tmpfs
mounts (pairs), `--touch` globs, inside tmpfs mounts (pairs).
*/
function setupParameters(plan: NamespacePlan): {
	named: Record<string, string | undefined>;
	outside: string[][];
	touch: string[];
	inside: string[][];
	command: string[];
} {
	const {parameters} = scriptInvocation(buildNamespaceCommand(plan, tools).args);
	const [, mount, mkdir, source, target, targetMode, cwd, options, mountDirectory] = parameters;
	const rest = parameters.slice(setupNamedParameters + 1);
	const takeList = (): string[][] => {
		const count = Number(rest.shift());
		const pairs = rest.splice(0, count * 2);
		return Array.from({length: count}, (_, index) => pairs.slice(index * 2, index * 2 + 2));
	};

	const outside = takeList();
	const touch = rest.splice(0, Number(rest.shift()));
	const inside = takeList();
	if (rest[0] !== '--') {
		throw new Error(`the tmpfs lists are not followed by --: ${rest.join(' ')}`);
	}

	return {
		named: {mount, mkdir, source, target, targetMode, cwd, options, mountDirectory},
		outside,
		touch,
		inside,
		command: rest.slice(1),
	};
}

test('buildOverlayOptions uses the portable layer format and fd 5 as the lower layer', (t) => {
	const options = buildOverlayOptions({volatile: false}).split(',');
	t.deepEqual(options, [
		'lowerdir=/proc/self/fd/5',
		'upperdir=upper',
		'workdir=work',
		'userxattr',
		'index=off',
		'metacopy=off',
	]);
});

test('buildOverlayOptions adds volatile only when asked', (t) => {
	t.false(buildOverlayOptions({volatile: false}).split(',').includes('volatile'));
	t.true(buildOverlayOptions({volatile: true}).split(',').includes('volatile'));
});

test('buildOverlayOptions never holds an absolute path other than the fd 5 lower dir', (t) => {
	for (const volatile of [false, true]) {
		const paths = buildOverlayOptions({volatile})
			.split(',')
			.flatMap((option) => option.split('=').slice(1))
			.filter((value) => value.includes('/'));
		t.deepEqual(paths, ['/proc/self/fd/5']);
	}
});

test('buildOverlayOptions holds none of the plan paths, however odd they are', (t) => {
	const plan = makePlan({source: '/src/with,comma:colon', target: '/store/x\\y/merged', volatile: true});
	const options = buildNamespaceCommand(plan, tools).args.find((argument) =>
		argument.startsWith('lowerdir='),
	);
	t.is(options, buildOverlayOptions({volatile: true}));
	t.false(options?.includes(plan.source));
	t.false(options?.includes(plan.target));
});

test('buildNamespaceCommand starts with setpriv setting a KILL parent-death signal', (t) => {
	const {file, args} = buildNamespaceCommand(makePlan(), tools);
	t.is(file, tools.setpriv);
	t.deepEqual(args.slice(0, 4), ['--pdeathsig', 'KILL', '--', tools.unshare]);
});

test('buildNamespaceCommand makes private mount and PID namespaces that die with unshare for the kernel backend', (t) => {
	const flags = unshareFlags(buildNamespaceCommand(makePlan({backend: 'kernel'}), tools).args);
	t.deepEqual(flags, [
		'--mount',
		'--propagation',
		'private',
		'--pid',
		'--fork',
		'--kill-child=SIGKILL',
		'--mount-proc',
	]);
	t.false(flags.includes('--user'));
	t.false(flags.includes('--map-root-user'));
});

test('buildNamespaceCommand adds a user namespace mapped to root only for the userns backend', (t) => {
	const flags = unshareFlags(buildNamespaceCommand(makePlan({backend: 'userns'}), tools).args);
	t.deepEqual(flags, [
		'--user',
		'--map-root-user',
		'--mount',
		'--propagation',
		'private',
		'--pid',
		'--fork',
		'--kill-child=SIGKILL',
		'--mount-proc',
	]);
});

test('buildNamespaceCommand hands the tools, the plan, the target mode and the overlay options to sh as positional parameters', (t) => {
	const plan = makePlan({volatile: false});
	const {parameters} = scriptInvocation(buildNamespaceCommand(plan, tools).args);
	t.deepEqual(parameters, [
		'scratch',
		tools.mount,
		tools.mkdir,
		plan.source,
		plan.target,
		'existing',
		plan.workingDirectory,
		buildOverlayOptions({volatile: false}),
		'.',
		// The fuse backend's teardown plan and programs: placeholders for the kernel backend.
		'kernel',
		'0',
		...Array.from({length: setupNamedParameters - 10}, () => '-'),
		'0',
		'0',
		'0',
		'--',
		'make',
		'test',
	]);
});

test("buildNamespaceCommand mounts from the store's layers dir when the run has layers", (t) => {
	const plan = makePlan({layers: ['aaaaaa', 'bbbbbb'], runId: 'abcdefghjkmn'});
	const {named} = setupParameters(plan);
	t.is(named['mountDirectory'], '/var/lib/scratch/layers');
	t.is(
		named['options'],
		'lowerdir=bbbbbb:aaaaaa:/proc/self/fd/5,upperdir=../runs/abcdefghjkmn/upper,workdir=../runs/abcdefghjkmn/work,userxattr,index=off,metacopy=off,volatile',
	);
});

test('buildOverlayOptions stacks layers top first above the source and reaches upper and work from layers/', (t) => {
	t.deepEqual(
		buildOverlayOptions({volatile: false, layers: ['bottom', 'middle', 'top000'], runId: 'r1'}).split(','),
		[
			'lowerdir=top000:middle:bottom:/proc/self/fd/5',
			'upperdir=../runs/r1/upper',
			'workdir=../runs/r1/work',
			'userxattr',
			'index=off',
			'metacopy=off',
		],
	);
});

test("the options for 499 layers over the source (the kernel's 500 lower layers) fit mount(2)'s 4095 bytes", (t) => {
	const layers = Array.from({length: maxStackedLayers}, (_, index) => String(index).padStart(6, 'x'));
	const plan = makePlan({layers, runId: 'abcdefghjkmn', volatile: true});
	const options = buildOverlayOptions({volatile: true, layers, runId: 'abcdefghjkmn'});
	t.true(options.length <= maxMountOptionsLength, String(options.length));
	t.notThrows(() => {
		checkMountOptions(plan);
	});
});

test('checkMountOptions refuses options longer than mount(2) takes and suggests squash', (t) => {
	const layers = Array.from({length: 700}, (_, index) => String(index).padStart(6, 'x'));
	const error = t.throws(() => {
		checkMountOptions(makePlan({layers, runId: 'abcdefghjkmn'}));
	});
	t.true(error instanceof LimitError);
	t.regex(
		error?.message ?? '',
		/more than mount\(2\)'s 4095; flatten the stack with scratch squash NAME --as NEW$/,
	);
});

test('buildNamespaceCommand passes tmpfs mounts as two counted lists of mode and path pairs: outside the view first, then (after the --touch list) inside it', (t) => {
	const plan = makePlan({
		tmpfs: [
			{path: '/var/lib/scratch/runs/abc/merged/node_modules/.cache', create: true},
			{path: '/tmp', create: false},
			{path: '/var/lib/scratch/runs/abc/merged/path with spaces', create: true},
			{path: '/var/cache/x', create: false},
		],
	});
	const {parameters} = scriptInvocation(buildNamespaceCommand(plan, tools).args);
	t.deepEqual(parameters.slice(setupNamedParameters + 1), [
		'2',
		'existing',
		'/tmp',
		'existing',
		'/var/cache/x',
		'0',
		'2',
		'create',
		'/var/lib/scratch/runs/abc/merged/node_modules/.cache',
		'create',
		'/var/lib/scratch/runs/abc/merged/path with spaces',
		'--',
		'make',
		'test',
	]);
});

const outsideOrderCases: Array<{title: string; outside: string[]; expected: string[][]}> = [
	{
		title: 'a parent given after its child is mounted first, and the child is then created inside it',
		outside: ['/tmp/a/b', '/tmp'],
		expected: [
			['existing', '/tmp'],
			['create', '/tmp/a/b'],
		],
	},
	{
		title: 'two unrelated outside mounts must both exist on the host',
		outside: ['/srv/cache', '/tmp'],
		expected: [
			['existing', '/tmp'],
			['existing', '/srv/cache'],
		],
	},
	{
		title: 'a chain of nested mounts is mounted parents first and only the outermost must exist',
		outside: ['/a/b/c', '/a', '/a/b'],
		expected: [
			['existing', '/a'],
			['create', '/a/b'],
			['create', '/a/b/c'],
		],
	},
	{
		title: 'sharing a parent that is not itself a tmpfs does not make a mount point creatable',
		outside: ['/a/b/c', '/a/x'],
		expected: [
			['existing', '/a/x'],
			['existing', '/a/b/c'],
		],
	},
	{
		title: 'a sibling whose name starts with the other mount name is not below it',
		outside: ['/tmpfoo/x', '/tmp'],
		expected: [
			['existing', '/tmp'],
			['existing', '/tmpfoo/x'],
		],
	},
	{
		title: "a name starting with '..' below a tmpfs is inside that tmpfs",
		outside: ['/tmp/..cache', '/tmp'],
		expected: [
			['existing', '/tmp'],
			['create', '/tmp/..cache'],
		],
	},
	{
		title: 'a path given twice is mounted once',
		outside: ['/tmp', '/tmp'],
		expected: [['existing', '/tmp']],
	},
	{
		title: 'a tmpfs on the root is mounted before everything it covers',
		outside: ['/tmp', '/'],
		expected: [
			['existing', '/'],
			['create', '/tmp'],
		],
	},
];

for (const {title, outside, expected} of outsideOrderCases) {
	test(`buildNamespaceCommand orders outside tmpfs mounts: ${title}`, (t) => {
		const plan = makePlan({tmpfs: outside.map((mountPath) => ({path: mountPath, create: false}))});
		t.deepEqual(setupParameters(plan).outside, expected);
	});
}

test('buildNamespaceCommand does not let a tmpfs inside the view make an outside mount point creatable', (t) => {
	const plan = makePlan({
		tmpfs: [
			{path: '/tmp', create: true},
			{path: '/tmp/x', create: false},
		],
	});
	const {outside, inside} = setupParameters(plan);
	t.deepEqual(outside, [['existing', '/tmp/x']]);
	t.deepEqual(inside, [['create', '/tmp']]);
});

test('buildNamespaceCommand keeps inside tmpfs mounts in the order given, all with the create mode', (t) => {
	const plan = makePlan({
		tmpfs: [
			{path: '/var/lib/scratch/runs/abc/merged/b/c', create: true},
			{path: '/var/lib/scratch/runs/abc/merged/b', create: true},
			{path: '/var/lib/scratch/runs/abc/merged/a', create: true},
		],
	});
	t.deepEqual(setupParameters(plan).inside, [
		['create', '/var/lib/scratch/runs/abc/merged/b/c'],
		['create', '/var/lib/scratch/runs/abc/merged/b'],
		['create', '/var/lib/scratch/runs/abc/merged/a'],
	]);
});

const targetModeCases: Array<{
	title: string;
	target: string;
	tmpfs: NamespacePlan['tmpfs'];
	expected: 'create' | 'existing';
}> = [
	{
		title: 'must exist when there is no tmpfs',
		target: '/var/lib/scratch/runs/r/merged',
		tmpfs: [],
		expected: 'existing',
	},
	{
		title: 'is created when the store lies under an outside tmpfs (--tmpfs /tmp with the store in /tmp)',
		target: '/tmp/scratch/runs/r/merged',
		tmpfs: [{path: '/tmp', create: false}],
		expected: 'create',
	},
	{
		title: 'is created when an outside tmpfs lands exactly on it',
		target: '/tmp/scratch/runs/r/merged',
		tmpfs: [{path: '/tmp/scratch/runs/r/merged', create: false}],
		expected: 'create',
	},
	{
		title: 'must exist when the outside tmpfs is elsewhere',
		target: '/var/lib/scratch/runs/r/merged',
		tmpfs: [
			{path: '/tmp', create: false},
			{path: '/var/cache', create: false},
		],
		expected: 'existing',
	},
	{
		title: 'must exist when the outside tmpfs is a sibling whose name starts the same',
		target: '/tmpstore/runs/r/merged',
		tmpfs: [{path: '/tmp', create: false}],
		expected: 'existing',
	},
	{
		title: 'must exist when the outside tmpfs lies below it',
		target: '/tmp/scratch/runs/r/merged',
		tmpfs: [{path: '/tmp/scratch/runs/r/merged/sub', create: false}],
		expected: 'existing',
	},
	{
		title: 'must exist in place even with a tmpfs inside the view, which is mounted after the overlay',
		target: '/home/u/p',
		tmpfs: [{path: '/home/u/p/cache', create: true}],
		expected: 'existing',
	},
	{
		title: 'is created in place when an outside tmpfs covers the source',
		target: '/home/u/p',
		tmpfs: [{path: '/home', create: false}],
		expected: 'create',
	},
];

for (const {title, target, tmpfs, expected} of targetModeCases) {
	test(`buildNamespaceCommand: the view's mount point ${title}`, (t) => {
		t.is(setupParameters(makePlan({target, tmpfs})).named['targetMode'], expected);
	});
}

test('buildNamespaceCommand puts the command verbatim after the final `--`, even with spaces, quotes and newlines', (t) => {
	const command = ['sh', '-c', 'echo "a  b" \'$HOME\' `x`\nexit 3', '--', '-x', '', '*'];
	const {args} = buildNamespaceCommand(makePlan({command}), tools);
	t.deepEqual(args.slice(-command.length - 1), ['--', ...command]);
});

test('buildNamespaceCommand keeps a command that looks like the tmpfs lists apart from them', (t) => {
	const command = ['2', 'create', '/x', '--', '0'];
	const plan = makePlan({command, tmpfs: [{path: '/tmp', create: false}]});
	const parsed = setupParameters(plan);
	t.deepEqual(parsed.outside, [['existing', '/tmp']]);
	t.deepEqual(parsed.inside, []);
	t.deepEqual(parsed.command, command);
});

test('buildNamespaceCommand passes the plan paths as separate arguments, not inside the script', (t) => {
	const plan = makePlan({source: '/src/"$(reboot)"', target: "/t/'x'", workingDirectory: "/t/'x'/a b"});
	const {script, parameters} = scriptInvocation(buildNamespaceCommand(plan, tools).args);
	t.false(script.includes(plan.source));
	t.false(script.includes(plan.target));
	t.true(parameters.includes(plan.source));
	t.true(parameters.includes(plan.target));
	t.true(parameters.includes(plan.workingDirectory));
});

test('the setup script is valid POSIX sh syntax', (t) => {
	const {script} = scriptInvocation(buildNamespaceCommand(makePlan(), tools).args);
	const result = spawnSync('sh', ['-n', '-c', script], {encoding: 'utf8'});
	t.is(result.stderr, '');
	t.is(result.status, 0);
});

test('sh -n rejects a broken script, so the syntax check above can fail', (t) => {
	const result = spawnSync('sh', ['-n', '-c', 'if then fi'], {encoding: 'utf8'});
	t.not(result.status, 0);
});

/*
The setup script run for real with a fake `mount` that only appends its arguments to $SCRATCH_TEST_LOG
(and fails, like mount, when its last argument is $SCRATCH_TEST_FAIL_ON), so the protocol runs without
privileges; mkdir and cd are real, in a temporary directory.
*/
const fakeMountScript = `#!/bin/sh
printf '%s\\n' "$*" >> "$SCRATCH_TEST_LOG"
for last; do :; done
if [ -n "$SCRATCH_TEST_FAIL_ON" ] && [ "$last" = "$SCRATCH_TEST_FAIL_ON" ]; then
	printf 'mount: %s: fake failure.\\n' "$last" >&2
	exit 32
fi
`;

type SetupRun = {
	status: number | null;
	stdout: string;
	/** What the setup wrote on fd 2 (the control pipe), or '' when it went to the log. */
	stderr: string;
	/** What the command wrote on fd 3 (the caller's stderr). */
	commandStderr: string;
	/** One line per mount call, as the fake mount received its arguments. */
	log: string;
};

async function temporaryRoot(t: ExecutionContext): Promise<string> {
	const temporary = await dir({unsafeCleanup: true});
	t.teardown(temporary.cleanup);
	return temporary.path;
}

function runSetup(
	root: string,
	plan: NamespacePlan,
	{failOn = '', controlToLog = false}: {failOn?: string; controlToLog?: boolean} = {},
): SetupRun {
	const log = path.join(root, 'mount.log');
	const fakeMount = path.join(root, 'fake-mount');
	writeFileSync(fakeMount, fakeMountScript, {mode: 0o755});
	writeFileSync(log, '');
	const {script, parameters} = scriptInvocation(
		buildNamespaceCommand(plan, {...tools, mount: fakeMount}).args,
	);
	// With controlToLog the control pipe is the log itself, so its lines interleave with the mounts in order.
	const control = controlToLog ? openSync(log, 'a') : 'pipe';
	try {
		const result = spawnSync('/bin/sh', ['-c', script, ...parameters], {
			stdio: ['ignore', 'pipe', control, 'pipe'],
			encoding: 'utf8',
			env: {...process.env, SCRATCH_TEST_LOG: log, SCRATCH_TEST_FAIL_ON: failOn},
		});
		return {
			status: result.status,
			stdout: result.stdout,
			stderr: result.stderr ?? '',
			commandStderr: String(result.output[3]),
			log: readFileSync(log, 'utf8'),
		};
	} finally {
		if (typeof control === 'number') {
			closeSync(control);
		}
	}
}

function tmpfsCall(mountPoint: string): string {
	return `-t tmpfs -o mode=1777,nosuid,nodev scratch-tmpfs ${mountPoint}`;
}

function overlayCall(mountPoint: string): string {
	return `-t overlay -o ${buildOverlayOptions({volatile: true})} scratch ${mountPoint}`;
}

test('the setup script mounts outside tmpfs, then the overlay, then inside tmpfs, and runs the command verbatim', async (t) => {
	const root = await temporaryRoot(t);
	const outside = path.join(root, 'outside');
	mkdirSync(outside);
	// The store lies under the outside tmpfs, so the view's mount point is recreated inside it.
	const target = path.join(outside, 'store', 'runs', 'r', 'merged');
	const inside = path.join(target, 'new', 'cache');
	const plan = makePlan({
		source: root,
		target,
		workingDirectory: target,
		tmpfs: [
			{path: inside, create: true},
			{path: outside, create: false},
		],
		command: [
			'sh',
			'-c',
			'printf "%s|" "$PWD" "$@"; echo oops >&2; exit 7',
			'argv0',
			'a  b',
			'"q"',
			'x\ny',
			'--',
			'',
		],
	});

	const result = runSetup(root, plan);

	t.is(result.status, 7);
	t.is(result.stdout, `${target}|a  b|"q"|x\ny|--||`);
	// fd 2 is the control pipe: it gets the ready marker, then (not from the command) the exit report.
	t.is(result.stderr, `${readyMarker}${exitMarker}7 clean\n`);
	t.is(result.commandStderr, 'oops\n');
	t.true(existsSync(inside));
	t.is(result.log, [tmpfsCall(outside), overlayCall(target), tmpfsCall(inside), ''].join('\n'));
});

test('the setup script prints the ready marker after every mount and before the command runs', async (t) => {
	const root = await temporaryRoot(t);
	const outside = path.join(root, 'outside');
	const target = path.join(root, 'view');
	mkdirSync(outside);
	mkdirSync(target);
	const plan = makePlan({
		source: root,
		target,
		workingDirectory: target,
		tmpfs: [
			{path: path.join(target, 'cache'), create: true},
			{path: outside, create: false},
		],
		command: ['sh', '-c', 'echo command >> "$SCRATCH_TEST_LOG"'],
	});

	const result = runSetup(root, plan, {controlToLog: true});

	t.is(result.status, 0);
	t.is(
		result.log,
		`${[tmpfsCall(outside), overlayCall(target), tmpfsCall(path.join(target, 'cache'))].join('\n')}\n${readyMarker}command\n${exitMarker}0 clean\n`,
	);
});

/** Every path relative to the temporary root; `src` and `ran` are made and checked by the table runner. */
const setupCases: Array<{
	title: string;
	/** Directories that exist before the run. */
	directories: string[];
	target: string;
	workingDirectory?: string;
	outside?: string[];
	inside?: string[];
	failOn?: string;
	status: number;
	/** The failure marker the setup must print last, and what translateSetupFailure makes of it. */
	failure?: {step: string; subject: string; errorClass: new (message: string) => ScratchError};
	mounts: Array<[kind: 'tmpfs' | 'overlay', mountPoint: string]>;
	created?: string[];
	absent?: string[];
}> = [
	{
		title: 'an existing outside mount point is mounted over before the overlay',
		directories: ['host/tmp', 'view'],
		target: 'view',
		outside: ['host/tmp'],
		status: 0,
		mounts: [
			['tmpfs', 'host/tmp'],
			['overlay', 'view'],
		],
	},
	{
		title: "a missing view mount point is created inside an outside tmpfs that covers it (mode 'create')",
		directories: ['host'],
		target: 'host/store/runs/r/merged',
		outside: ['host'],
		status: 0,
		mounts: [
			['tmpfs', 'host'],
			['overlay', 'host/store/runs/r/merged'],
		],
		created: ['host/store/runs/r/merged'],
	},
	{
		title:
			"a missing outside mount point under an earlier outside tmpfs is created inside it (mode 'create')",
		directories: ['host', 'view'],
		target: 'view',
		outside: ['host/a/b', 'host'],
		status: 0,
		mounts: [
			['tmpfs', 'host'],
			['tmpfs', 'host/a/b'],
			['overlay', 'view'],
		],
		created: ['host/a/b'],
	},
	{
		title: 'a missing inside mount point is created in the view',
		directories: ['view'],
		target: 'view',
		inside: ['view/new/cache'],
		status: 0,
		mounts: [
			['overlay', 'view'],
			['tmpfs', 'view/new/cache'],
		],
		created: ['view/new/cache'],
	},
	{
		title: "a missing outside mount point (mode 'existing') fails the run and is never created",
		directories: ['host', 'view'],
		target: 'view',
		outside: ['host/missing'],
		status: 125,
		failure: {step: 'mount-point', subject: 'host/missing', errorClass: InvalidPathError},
		mounts: [],
		absent: ['host/missing'],
	},
	{
		title:
			'a missing outside mount point fails after the outside mounts before it, creating none of its parents',
		directories: ['host/tmp', 'view'],
		target: 'view',
		outside: ['host/other/x', 'host/tmp'],
		status: 125,
		failure: {step: 'mount-point', subject: 'host/other/x', errorClass: InvalidPathError},
		mounts: [['tmpfs', 'host/tmp']],
		absent: ['host/other'],
	},
	{
		title: 'a missing view mount point that no tmpfs covers fails the run and is never created',
		directories: [],
		target: 'view',
		status: 125,
		failure: {step: 'mount-point', subject: 'view', errorClass: InvalidPathError},
		mounts: [],
		absent: ['view'],
	},
	{
		title:
			'a tmpfs on a sibling whose name starts like the store does not make the view mount point creatable',
		directories: ['host/st'],
		target: 'host/store/merged',
		outside: ['host/st'],
		status: 125,
		failure: {step: 'mount-point', subject: 'host/store/merged', errorClass: InvalidPathError},
		mounts: [['tmpfs', 'host/st']],
		absent: ['host/store'],
	},
	{
		title: 'a failing outside tmpfs mount stops the run before the overlay',
		directories: ['host', 'view'],
		target: 'view',
		outside: ['host'],
		failOn: 'host',
		status: 125,
		failure: {step: 'tmpfs', subject: 'host', errorClass: MountError},
		mounts: [['tmpfs', 'host']],
	},
	{
		title: 'a failing overlay mount stops the run before the inside tmpfs mounts',
		directories: ['view'],
		target: 'view',
		inside: ['view/cache'],
		failOn: 'view',
		status: 125,
		failure: {step: 'overlay', subject: 'view', errorClass: MountError},
		mounts: [['overlay', 'view']],
	},
	{
		title: 'a failing inside tmpfs mount stops the run before the command',
		directories: ['view'],
		target: 'view',
		inside: ['view/cache'],
		failOn: 'view/cache',
		status: 125,
		failure: {step: 'tmpfs', subject: 'view/cache', errorClass: MountError},
		mounts: [
			['overlay', 'view'],
			['tmpfs', 'view/cache'],
		],
	},
	{
		title: 'a working directory missing in the view fails the run after every mount',
		directories: ['view'],
		target: 'view',
		workingDirectory: 'view/missing',
		inside: ['view/cache'],
		status: 125,
		failure: {step: 'cwd', subject: 'view/missing', errorClass: InvalidPathError},
		mounts: [
			['overlay', 'view'],
			['tmpfs', 'view/cache'],
		],
		absent: ['view/missing'],
	},
];

for (const testCase of setupCases) {
	const {title, directories, target, outside = [], inside = [], status, failure, mounts} = testCase;
	test(`the setup script: ${title}`, async (t) => {
		const root = await temporaryRoot(t);
		const at = (relative: string): string => path.join(root, relative);
		for (const directory of ['src', ...directories]) {
			mkdirSync(at(directory), {recursive: true});
		}

		const plan = makePlan({
			source: at('src'),
			target: at(target),
			workingDirectory: at(testCase.workingDirectory ?? target),
			tmpfs: [
				...outside.map((mountPoint) => ({path: at(mountPoint), create: false})),
				...inside.map((mountPoint) => ({path: at(mountPoint), create: true})),
			],
			command: ['touch', at('ran')],
		});

		const result = runSetup(root, plan, testCase.failOn ? {failOn: at(testCase.failOn)} : {});

		t.is(result.status, status, result.stderr);
		t.is(result.stdout, '');
		t.is(
			result.log,
			mounts
				.map(([kind, mountPoint]) => `${(kind === 'tmpfs' ? tmpfsCall : overlayCall)(at(mountPoint))}\n`)
				.join(''),
		);
		for (const created of testCase.created ?? []) {
			t.true(existsSync(at(created)), `${created} was created`);
		}

		for (const absent of testCase.absent ?? []) {
			t.false(existsSync(at(absent)), `${absent} was not created`);
		}

		if (failure) {
			t.false(existsSync(at('ran')), 'the command did not run');
			t.false(result.stderr.includes(readyMarker));
			t.true(
				result.stderr.endsWith(`${setupFailureMarker}${failure.step} ${at(failure.subject)}\n`),
				JSON.stringify(result.stderr),
			);
			t.is(result.stderr.split(setupFailureMarker).length, 2, 'exactly one failure marker');
			const parsed = parseSetupOutput(result.stderr);
			t.is(parsed.step, failure.step);
			t.is(parsed.subject, at(failure.subject));
			const error = translateSetupFailure(result.stderr, 'kernel', root);
			t.true(error instanceof failure.errorClass, `${error.name}: ${error.message}`);
			t.true(error.message.includes(at(failure.subject)), error.message);
		} else {
			t.true(existsSync(at('ran')), 'the command ran');
			t.is(result.stderr, `${readyMarker}${exitMarker}0 clean\n`);
		}
	});
}

test("the setup script's mount-point failure prints only the marker line: nothing is run to create the mount point", async (t) => {
	const root = await temporaryRoot(t);
	mkdirSync(path.join(root, 'view'));
	const missing = path.join(root, 'host', 'missing');
	const plan = makePlan({
		source: root,
		target: path.join(root, 'view'),
		workingDirectory: path.join(root, 'view'),
		tmpfs: [{path: missing, create: false}],
	});

	const result = runSetup(root, plan);

	t.is(result.status, 125);
	t.is(result.stderr, `${setupFailureMarker}mount-point ${missing}\n`);
	t.false(existsSync(path.join(root, 'host')));
});

test("the setup script's cwd failure keeps the shell's own reason before the marker", async (t) => {
	const root = await temporaryRoot(t);
	const missing = path.join(root, 'missing');
	const plan = makePlan({source: root, target: root, workingDirectory: missing});

	const result = runSetup(root, plan);

	t.is(result.status, 125);
	t.regex(result.stderr, /can't cd|No such file/);
	t.true(result.stderr.endsWith(`${setupFailureMarker}cwd ${missing}\n`));
	t.regex(parseSetupOutput(result.stderr).detail, /can't cd|No such file/);
});

// Fails today: `exec 5<"$source"` is a special built-in with a failing redirection, so POSIX shells
// (dash, bash --posix) exit at once with status 2 and never reach `|| fail source`. See the report.
test('the setup script reports a source tree that cannot be opened with the source marker and exit 125', async (t) => {
	const root = await temporaryRoot(t);
	mkdirSync(path.join(root, 'view'));
	const source = path.join(root, 'gone');
	const plan = makePlan({
		source,
		target: path.join(root, 'view'),
		workingDirectory: path.join(root, 'view'),
	});

	const result = runSetup(root, plan);

	t.is(result.status, 125);
	t.is(result.log, '');
	t.true(result.stderr.endsWith(`${setupFailureMarker}source ${source}\n`), JSON.stringify(result.stderr));
});

const withinCases: Array<{inner: string; outer: string; expected: boolean; why: string}> = [
	{inner: '/a/b', outer: '/a/b', expected: true, why: 'the same path'},
	{inner: '/a/b/c', outer: '/a/b', expected: true, why: 'a child'},
	{inner: '/a/b/c/d', outer: '/a/b', expected: true, why: 'a grandchild'},
	{inner: '/a/b/..cache', outer: '/a/b', expected: true, why: "a child whose name starts with '..'"},
	{inner: '/a/b/...', outer: '/a/b', expected: true, why: "a child named '...'"},
	{inner: '/a/b/c', outer: '/a/b/', expected: true, why: 'a child of an outer path with a trailing slash'},
	{inner: '/a/bc', outer: '/a/b', expected: false, why: 'a sibling whose name starts with the outer name'},
	{inner: '/a', outer: '/a/b', expected: false, why: "the parent ('..')"},
	{inner: '/a/x', outer: '/a/b', expected: false, why: "a sibling ('../x')"},
	{inner: '/a/..cache', outer: '/a/b', expected: false, why: "a '..name' sibling ('../..cache')"},
	{inner: '/x', outer: '/a/b', expected: false, why: 'an unrelated path'},
	{inner: '/x/y', outer: '/', expected: true, why: 'anything, under the root'},
	{inner: '/', outer: '/', expected: true, why: 'the root, under itself'},
];

for (const {inner, outer, expected, why} of withinCases) {
	test(`isWithin says ${inner} is ${expected ? '' : 'not '}within ${outer}: ${why}`, (t) => {
		t.is(isWithin(inner, outer), expected);
	});
}

const tmpfsCases: Array<{
	title: string;
	requested: string;
	source: string;
	target: string;
	expected: {path: string; create: boolean};
}> = [
	{
		title: 'a relative path goes inside the view and is created',
		requested: 'node_modules/.cache',
		source: '/home/u/p',
		target: '/store/runs/r/merged',
		expected: {path: '/store/runs/r/merged/node_modules/.cache', create: true},
	},
	{
		title: 'a relative path is normalised',
		requested: './build/../out/',
		source: '/home/u/p',
		target: '/store/runs/r/merged',
		expected: {path: '/store/runs/r/merged/out', create: true},
	},
	{
		title: "a relative name starting with '..' stays inside the view",
		requested: '..cache',
		source: '/home/u/p',
		target: '/store/runs/r/merged',
		expected: {path: '/store/runs/r/merged/..cache', create: true},
	},
	{
		title: "a relative path that climbs back in with '..' stays inside the view",
		requested: 'a/../b',
		source: '/home/u/p',
		target: '/store/runs/r/merged',
		expected: {path: '/store/runs/r/merged/b', create: true},
	},
	{
		title: 'a relative path that leaves the source and comes back by name stays inside the view',
		requested: '../p/x',
		source: '/home/u/p',
		target: '/store/runs/r/merged',
		expected: {path: '/store/runs/r/merged/x', create: true},
	},
	{
		title: 'an absolute path inside the source is mapped into the view',
		requested: '/home/u/p/build',
		source: '/home/u/p',
		target: '/store/runs/r/merged',
		expected: {path: '/store/runs/r/merged/build', create: true},
	},
	{
		title: "an absolute path to a '..name' inside the source is mapped into the view",
		requested: '/home/u/p/..cache',
		source: '/home/u/p',
		target: '/store/runs/r/merged',
		expected: {path: '/store/runs/r/merged/..cache', create: true},
	},
	{
		title: 'the source itself is mapped onto the view root',
		requested: '/home/u/p/',
		source: '/home/u/p',
		target: '/store/runs/r/merged',
		expected: {path: '/store/runs/r/merged', create: true},
	},
	{
		title: 'an absolute path outside the source stays where it is and is not created',
		requested: '/tmp',
		source: '/home/u/p',
		target: '/store/runs/r/merged',
		expected: {path: '/tmp', create: false},
	},
	{
		title: 'a sibling whose name starts with the source name is outside the source',
		requested: '/home/u/project',
		source: '/home/u/p',
		target: '/store/runs/r/merged',
		expected: {path: '/home/u/project', create: false},
	},
	{
		title: 'an absolute path outside the source is normalised',
		requested: '/var//tmp/./x',
		source: '/home/u/p',
		target: '/store/runs/r/merged',
		expected: {path: '/var/tmp/x', create: false},
	},
	{
		title: "an absolute path that climbs out of the source with '..' is outside it and not created",
		requested: '/home/u/p/../q',
		source: '/home/u/p',
		target: '/store/runs/r/merged',
		expected: {path: '/home/u/q', create: false},
	},
	{
		title: 'in place, a relative path maps onto the source path and is created',
		requested: 'cache',
		source: '/home/u/p',
		target: '/home/u/p',
		expected: {path: '/home/u/p/cache', create: true},
	},
	{
		title: 'in place, an absolute path inside the source keeps its path and is created',
		requested: '/home/u/p/cache',
		source: '/home/u/p',
		target: '/home/u/p',
		expected: {path: '/home/u/p/cache', create: true},
	},
	{
		title: 'with the root as the source, every absolute path is inside the view',
		requested: '/tmp',
		source: '/',
		target: '/store/runs/r/merged',
		expected: {path: '/store/runs/r/merged/tmp', create: true},
	},
];

for (const {title, requested, source, target, expected} of tmpfsCases) {
	test(`resolveTmpfsPath: ${title}`, (t) => {
		t.deepEqual(resolveTmpfsPath(requested, {source, target}), expected);
	});
}

for (const requested of ['../x', '..', 'a/../../x', '../../etc']) {
	test(`resolveTmpfsPath refuses the relative path ${requested}, which climbs out of the view, with a UsageError`, (t) => {
		const error = t.throws(
			() => resolveTmpfsPath(requested, {source: '/home/u/p', target: '/store/runs/r/merged'}),
			{
				instanceOf: UsageError,
			},
		);
		t.true(error.message.startsWith(`--tmpfs ${requested}: `), error.message);
		t.regex(error.message, /give an absolute path/);
		t.false(error.message.includes('\n'));
	});
}

const exitCases: Array<{code: number | null; signal: number | undefined; expected: number}> = [
	{code: 0, signal: undefined, expected: 0},
	{code: 3, signal: undefined, expected: 3},
	{code: 255, signal: undefined, expected: 255},
	{code: 0, signal: 15, expected: 0},
	{code: null, signal: 15, expected: 143},
	{code: null, signal: 2, expected: 130},
	{code: null, signal: 9, expected: 137},
	{code: null, signal: undefined, expected: 137},
];

for (const {code, signal, expected} of exitCases) {
	test(`exitStatusOf reports ${expected} for exit code ${String(code)} and signal ${String(signal)}`, (t) => {
		t.is(exitStatusOf(code, signal), expected);
	});
}

test('the setup script kills leftovers only as pid 1 of its own namespace, never outside it', async (t) => {
	const root = await temporaryRoot(t);
	const target = path.join(root, 'view');
	mkdirSync(target);
	// A process of ours outside any run: the script below is not pid 1, so it must survive.
	const bystander = spawn('sleep', ['300'], {stdio: 'ignore'});
	t.teardown(() => bystander.kill('SIGKILL'));
	const result = runSetup(
		root,
		makePlan({source: root, target, workingDirectory: target, command: ['true']}),
	);
	t.is(result.status, 0);
	t.is(bystander.exitCode, null);
	t.is(bystander.signalCode, null);
	t.true(readStartTime(bystander.pid ?? 0) !== undefined, 'the bystander is still running');
});

test('buildNamespaceCommand passes --touch globs as one counted list between the two tmpfs lists', (t) => {
	const plan = makePlan({touch: ['var/lib/rpm/*', 'a b/*'], tmpfs: [{path: '/tmp', create: false}]});
	const {outside, touch, inside, command} = setupParameters(plan);
	t.deepEqual(outside, [['existing', '/tmp']]);
	t.deepEqual(touch, ['var/lib/rpm/*', 'a b/*']);
	t.deepEqual(inside, []);
	t.deepEqual(command, ['make', 'test']);
});

test('buildOverlayOptions takes a persistent upper and work, and the mount then runs from layers/ even without layers', (t) => {
	const plan = makePlan({writable: {upper: '../workspaces/dev/upper', work: '../workspaces/dev/work'}});
	const {named} = setupParameters(plan);
	t.is(named['mountDirectory'], '/var/lib/scratch/layers');
	t.is(
		named['options'],
		'lowerdir=/proc/self/fd/5,upperdir=../workspaces/dev/upper,workdir=../workspaces/dev/work,userxattr,index=off,metacopy=off,volatile',
	);
});
