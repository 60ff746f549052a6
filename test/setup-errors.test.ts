import {spawnSync} from 'node:child_process';
import {chmodSync, mkdirSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import test from 'ava';
import {dir} from 'tmp-promise';
import {
	InvalidPathError,
	LimitError,
	MountError,
	NotFoundError,
	PermissionError,
	type ScratchError,
	UnsupportedEnvironmentError,
} from '../src/errors.js';
import type {BackendName} from '../src/run/backend.js';
import {setupFailureMarker} from '../src/run/namespace-plan.js';
import {kernelMessagesAbout, parseSetupOutput, translateSetupFailure} from '../src/run/setup-errors.js';
import {readKernelErrors, uptimeSeconds} from '../src/system/kernel-messages.js';

const store = '/var/lib/scratch';
const merged = '/var/lib/scratch/runs/r1/merged';
const dmesgLine = '       dmesg(1) may have more information after failed mount system call.';
const wrongFsType =
	'wrong fs type, bad option, bad superblock on scratch, missing codepage or helper program, or other error.';

/** The line the setup script prints on the control pipe when STEP fails on SUBJECT. */
function marker(step: string, subject: string): string {
	return `${setupFailureMarker}${step} ${subject}\n`;
}

const cases: Array<{
	title: string;
	output: string;
	backend: BackendName;
	store?: string;
	errorClass: new (message: string) => ScratchError;
	details: string[];
	hint: RegExp;
}> = [
	{
		title: 'the overlay mount refused by the kernel',
		output: `mount: ${merged}: ${wrongFsType}\n${dmesgLine}\n${marker('overlay', merged)}`,
		backend: 'kernel',
		errorClass: MountError,
		details: [`mount: ${merged}: ${wrongFsType}`],
		hint: /^mounting the overlay failed .*; the store \/var\/lib\/scratch must be on a local filesystem/,
	},
	{
		title: 'the overlay mount refused in a user namespace',
		output: `mount: /x: ${wrongFsType}\n${dmesgLine}\n${marker('overlay', '/var/lib/scratch/runs/r1/merged')}`,
		backend: 'userns',
		errorClass: MountError,
		details: [`mount: /x: ${wrongFsType}`],
		hint: /^mounting the overlay failed .*the store \/var\/lib\/scratch must be/,
	},
	{
		title: 'a kernel without overlayfs',
		output: `mount: ${merged}: unknown filesystem type 'overlay'.\n${dmesgLine}\n${marker('overlay', merged)}`,
		backend: 'kernel',
		errorClass: UnsupportedEnvironmentError,
		details: [`mount: ${merged}: unknown filesystem type 'overlay'.`],
		hint: /^the kernel cannot mount overlayfs .*load it with 'modprobe overlay'$/,
	},
	{
		title: 'a tmpfs mount refused',
		output: `mount: /srv/cache: permission denied.\n${dmesgLine}\n${marker('tmpfs', '/srv/cache')}`,
		backend: 'userns',
		errorClass: MountError,
		details: ['mount: /srv/cache: permission denied.'],
		hint: /^cannot mount --tmpfs \/srv\/cache \(/,
	},
	{
		title: 'a tmpfs mount that names an unknown filesystem type, which is not about overlayfs',
		output: `mount: /srv/cache: unknown filesystem type 'tmpfs'.\n${dmesgLine}\n${marker('tmpfs', '/srv/cache')}`,
		backend: 'kernel',
		errorClass: MountError,
		details: ["mount: /srv/cache: unknown filesystem type 'tmpfs'."],
		hint: /^cannot mount --tmpfs \/srv\/cache \(/,
	},
	{
		title: "a tmpfs mount whose reason says 'Operation not permitted', which is not a namespace failure",
		output: `mount: /srv/cache: mount failed: Operation not permitted.\n${marker('tmpfs', '/srv/cache')}`,
		backend: 'userns',
		errorClass: MountError,
		details: ['mount: /srv/cache: mount failed: Operation not permitted.'],
		hint: /^cannot mount --tmpfs \/srv\/cache \(/,
	},
	{
		title: 'a source tree removed before the run',
		output: `scratch: 15: cannot open /home/u/project: No such file\n${marker('source', '/home/u/project')}`,
		backend: 'kernel',
		errorClass: NotFoundError,
		details: ['scratch: 15: cannot open /home/u/project: No such file'],
		hint: /^the source tree \/home\/u\/project could not be opened when the run started .*; check --src$/,
	},
	{
		title: 'a mount point missing on the host, with nothing else printed',
		output: marker('mount-point', '/srv/cache'),
		backend: 'kernel',
		errorClass: InvalidPathError,
		details: ['(no message)'],
		hint: /^mount point \/srv\/cache is missing in the run .*name an existing directory with --tmpfs$/,
	},
	{
		title: 'a mount point mkdir could not create',
		output: `/bin/mkdir: cannot create directory '${merged}/cache': Read-only file system\n${marker('mount-point', `${merged}/cache`)}`,
		backend: 'userns',
		errorClass: InvalidPathError,
		details: [`/bin/mkdir: cannot create directory '${merged}/cache': Read-only file system`],
		hint: /^mount point \/var\/lib\/scratch\/runs\/r1\/merged\/cache is missing in the run/,
	},
	{
		title: 'a mount point whose path holds spaces',
		output: marker('mount-point', '/srv/my cache'),
		backend: 'kernel',
		errorClass: InvalidPathError,
		details: ['(no message)'],
		hint: /^mount point \/srv\/my cache is missing/,
	},
	{
		title: 'a working directory missing in the view',
		output: `scratch: 27: cd: can't cd to ${merged}/sub\n${marker('cwd', `${merged}/sub`)}`,
		backend: 'userns',
		errorClass: InvalidPathError,
		details: [`scratch: 27: cd: can't cd to ${merged}/sub`],
		hint: /^cannot enter the working directory \/var\/lib\/scratch\/runs\/r1\/merged\/sub inside the view .*run from the source tree or pass --src$/,
	},
	{
		title: 'unshare without CAP_SYS_ADMIN',
		output: 'unshare: unshare failed: Operation not permitted\n',
		backend: 'kernel',
		errorClass: PermissionError,
		details: ['unshare: unshare failed: Operation not permitted'],
		hint: /^cannot create the run's namespaces .*: creating namespaces needs CAP_SYS_ADMIN; run as root or use --backend userns$/,
	},
	{
		title: 'unshare blocked from making a user namespace',
		output: 'unshare: unshare failed: Operation not permitted\n',
		backend: 'userns',
		errorClass: PermissionError,
		details: ['unshare: unshare failed: Operation not permitted'],
		hint: /^cannot create the run's namespaces .*: unprivileged user namespaces are blocked here; run as root \(--backend kernel\) or allow user namespaces$/,
	},
	{
		title: 'unshare unable to write the uid map',
		output: 'unshare: write failed /proc/self/uid_map: Operation not permitted\n',
		backend: 'userns',
		errorClass: PermissionError,
		details: ['unshare: write failed /proc/self/uid_map: Operation not permitted'],
		hint: /^cannot create the run's namespaces .*unprivileged user namespaces are blocked here/,
	},
	{
		title: 'unshare unable to open the uid map',
		output: 'unshare: cannot open /proc/self/uid_map: Permission denied\n',
		backend: 'userns',
		errorClass: PermissionError,
		details: ['unshare: cannot open /proc/self/uid_map: Permission denied'],
		hint: /^cannot create the run's namespaces/,
	},
	{
		title: 'unshare unable to deny setgroups',
		output: 'unshare: cannot open /proc/self/setgroups: Permission denied\n',
		backend: 'userns',
		errorClass: PermissionError,
		details: ['unshare: cannot open /proc/self/setgroups: Permission denied'],
		hint: /^cannot create the run's namespaces/,
	},
	{
		title: 'an unrecognised failure without a marker',
		output: 'setpriv: failed to set pdeathsig: Invalid argument\n',
		backend: 'kernel',
		errorClass: MountError,
		details: ['setpriv: failed to set pdeathsig: Invalid argument'],
		hint: /^the run's namespace could not be set up \(/,
	},
	{
		title: 'a mount error without a marker, which is not guessed to be the overlay',
		output: `mount: /m: ${wrongFsType}\n${dmesgLine}\n`,
		backend: 'kernel',
		errorClass: MountError,
		details: [`mount: /m: ${wrongFsType}`],
		hint: /^the run's namespace could not be set up \(/,
	},
	{
		title: 'several lines of output',
		output: `  first line  \n\nmount: /m: wrong fs type, bad option.\n${dmesgLine}\n${marker('overlay', merged)}`,
		backend: 'kernel',
		errorClass: MountError,
		details: ['(first line | mount: /m: wrong fs type, bad option.)'],
		hint: /^mounting the overlay failed/,
	},
	{
		title: 'no output at all',
		output: '',
		backend: 'kernel',
		errorClass: MountError,
		details: ['(no message)'],
		hint: /^the run's namespace could not be set up/,
	},
	{
		title: 'only the dmesg line',
		output: `${dmesgLine}\n`,
		backend: 'kernel',
		errorClass: MountError,
		details: ['(no message)'],
		hint: /^the run's namespace could not be set up/,
	},
	{
		title: 'an unknown step, which falls back to the text',
		output: `something odd\n${marker('frobnicate', '/x')}`,
		backend: 'kernel',
		errorClass: MountError,
		details: ['something odd'],
		hint: /^the run's namespace could not be set up/,
	},
	{
		title: "an overlay failure with a store whose path says 'tmpfs'",
		output: `mount: /mnt/tmpfs/scratch/runs/r1/merged: ${wrongFsType}\n${dmesgLine}\n${marker('overlay', '/mnt/tmpfs/scratch/runs/r1/merged')}`,
		backend: 'kernel',
		store: '/mnt/tmpfs/scratch',
		errorClass: MountError,
		details: [`mount: /mnt/tmpfs/scratch/runs/r1/merged: ${wrongFsType}`],
		hint: /^mounting the overlay failed .*the store \/mnt\/tmpfs\/scratch must be on a local filesystem/,
	},
	{
		title: "a missing working directory with a store whose path says 'tmpfs'",
		output: `scratch: 27: cd: can't cd to /tmpfs/runs/r1/merged/sub\n${marker('cwd', '/tmpfs/runs/r1/merged/sub')}`,
		backend: 'userns',
		store: '/tmpfs',
		errorClass: InvalidPathError,
		details: ["scratch: 27: cd: can't cd to /tmpfs/runs/r1/merged/sub"],
		hint: /^cannot enter the working directory \/tmpfs\/runs\/r1\/merged\/sub inside the view/,
	},
	{
		title: "a missing view mount point with a store whose path says 'tmpfs'",
		output: marker('mount-point', '/srv/tmpfs-store/runs/r1/merged'),
		backend: 'kernel',
		store: '/srv/tmpfs-store',
		errorClass: InvalidPathError,
		details: ['/srv/tmpfs-store/runs/r1/merged'],
		hint: /^mount point \/srv\/tmpfs-store\/runs\/r1\/merged is missing in the run/,
	},
	{
		title: "a failure without a marker with a store whose path says 'tmpfs'",
		output: 'sh: 1: cannot open /mnt/tmpfs/scratch/x: No such file\n',
		backend: 'kernel',
		store: '/mnt/tmpfs/scratch',
		errorClass: MountError,
		details: ['sh: 1: cannot open /mnt/tmpfs/scratch/x: No such file'],
		hint: /^the run's namespace could not be set up/,
	},
];

for (const {title, output, backend, errorClass, details, hint, ...rest} of cases) {
	test(`translateSetupFailure turns ${title} into a one-line ${errorClass.name}`, (t) => {
		const error = translateSetupFailure(output, backend, rest.store ?? store);
		t.true(error instanceof errorClass, `got ${error.constructor.name}: ${error.message}`);
		t.is(error.name, errorClass.name);
		t.false(error.message.includes('\n'));
		t.regex(error.message, hint);
		for (const detail of details) {
			t.true(error.message.includes(detail), error.message);
		}

		t.false(error.message.includes('dmesg(1)'));
		t.false(error.message.includes('\u001E'), 'the marker never leaks into the message');
		t.false(error.message.includes('scratch-failed'), 'the marker never leaks into the message');
		t.false(/\s{2,}/.test(error.message), 'indentation of the raw lines is trimmed');
	});
}

test('translateSetupFailure names the store it was given in the overlay mount hint', (t) => {
	const error = translateSetupFailure(
		`mount: /x: wrong fs type, bad option, bad superblock on scratch.\n${dmesgLine}\n${marker('overlay', '/x')}`,
		'userns',
		'/home/u/.local/share/scratch',
	);
	t.regex(error.message, /the store \/home\/u\/\.local\/share\/scratch must be on a local filesystem/);
});

test("translateSetupFailure names only the overlay in its hint, never a --tmpfs, when the store's path says 'tmpfs'", (t) => {
	const error = translateSetupFailure(
		`mount: /tmpfs/runs/r1/merged: ${wrongFsType}\n${marker('overlay', '/tmpfs/runs/r1/merged')}`,
		'kernel',
		'/tmpfs',
	);
	t.true(error instanceof MountError);
	t.false(error.message.includes('--tmpfs'), error.message);
});

test('translateSetupFailure takes the step from the marker, not from words in the text', (t) => {
	// The same raw text, labelled by different steps, makes different errors.
	const text = `mount: /srv/cache: unknown filesystem type 'overlay'.\n${dmesgLine}\n`;
	const byStep = ['overlay', 'tmpfs', 'mount-point', 'cwd', 'source'].map((step) => [
		step,
		translateSetupFailure(`${text}${marker(step, '/srv/cache')}`, 'kernel', store).name,
	]);
	t.deepEqual(byStep, [
		['overlay', 'UnsupportedEnvironmentError'],
		['tmpfs', 'MountError'],
		['mount-point', 'InvalidPathError'],
		['cwd', 'InvalidPathError'],
		['source', 'NotFoundError'],
	]);
});

const parseCases: Array<{
	title: string;
	output: string;
	expected: ReturnType<typeof parseSetupOutput>;
}> = [
	{
		title: 'no output has no step and no message',
		output: '',
		expected: {detail: 'no message'},
	},
	{
		title: 'output without a marker has no step',
		output: 'unshare: unshare failed: Operation not permitted\n',
		expected: {detail: 'unshare: unshare failed: Operation not permitted'},
	},
	{
		title: 'a lone marker gives the step and subject and no message',
		output: marker('mount-point', '/srv/cache'),
		expected: {step: 'mount-point', subject: '/srv/cache', detail: 'no message'},
	},
	{
		title: "mount's message is kept, its dmesg line and the marker are not",
		output: `mount: ${merged}: ${wrongFsType}\n${dmesgLine}\n${marker('overlay', merged)}`,
		expected: {step: 'overlay', subject: merged, detail: `mount: ${merged}: ${wrongFsType}`},
	},
	{
		title: 'a subject with spaces is kept whole',
		output: marker('cwd', '/srv/a b/ c'),
		expected: {step: 'cwd', subject: '/srv/a b/ c', detail: 'no message'},
	},
	{
		title: 'a marker without a subject gives an empty subject',
		output: `${setupFailureMarker}overlay\n`,
		expected: {step: 'overlay', subject: '', detail: 'no message'},
	},
	{
		title: 'lines are trimmed, blank ones dropped and the rest joined with a bar',
		output: `  first  \n\n\tsecond\n${marker('tmpfs', '/t')}   \n`,
		expected: {step: 'tmpfs', subject: '/t', detail: 'first | second'},
	},
	{
		title: 'text after the marker is kept too',
		output: `${marker('tmpfs', '/t')}late line\n`,
		expected: {step: 'tmpfs', subject: '/t', detail: 'late line'},
	},
	{
		title: 'output without a final newline is read whole',
		output: `mount: /t: busy.\n${setupFailureMarker}tmpfs /t`,
		expected: {step: 'tmpfs', subject: '/t', detail: 'mount: /t: busy.'},
	},
];

for (const {title, output, expected} of parseCases) {
	test(`parseSetupOutput: ${title}`, (t) => {
		t.deepEqual(parseSetupOutput(output), expected);
	});
}

/*
Real failures: each cause is produced with a real mount(8) or fuse-overlayfs in a private mount
namespace (as root, or as nobody in a user namespace), and what mount printed plus the kernel's log
(readable as root) goes through the translation scratch uses.
*/
type RealCause = {
	title: string;
	/** Runs in a temp dir holding l/ (a file f), u/, w/, m/ and o/{l,u,w,m}/, all owned by the user. */
	script: string;
	user: 'root' | 'nobody';
	backend: BackendName;
	errorClass: new (message: string) => ScratchError;
	hint: RegExp;
};

const realCauses: RealCause[] = [
	{
		title: 'an upper dir on overlayfs (a store inside a container)',
		script:
			'mount -t overlay -o lowerdir=o/l,upperdir=o/u,workdir=o/w x o/m && mkdir o/m/u o/m/w && mount -t overlay -o lowerdir=l,upperdir=o/m/u,workdir=o/m/w,userxattr scratch m',
		user: 'root',
		backend: 'kernel',
		errorClass: MountError,
		hint: /^the kernel cannot put the run's upper dir on the store's file system \(kernel: overlay: filesystem on o\/m\/u not supported as upperdir\): .*or use --backend fuse \(fuse-overlayfs\)$/,
	},
	{
		title: 'upper and work dirs on different mounts',
		script: 'mount -t tmpfs t w && mount -t overlay -o lowerdir=l,upperdir=u,workdir=w,userxattr scratch m',
		user: 'root',
		backend: 'kernel',
		errorClass: MountError,
		hint: /^the run's upper and work dirs are on different mounts \(kernel: overlayfs: workdir and upperdir must reside under the same mount\): something is mounted inside the store/,
	},
	{
		title: 'more lower dirs than the kernel takes',
		script:
			'mkdir many && cd many && for i in $(seq 1 501); do mkdir $i; done && mount -t overlay -o lowerdir=$(seq -s: 1 501),upperdir=../u,workdir=../w,userxattr scratch ../m',
		user: 'root',
		backend: 'kernel',
		errorClass: LimitError,
		hint: /^the stack has more layers than the kernel takes \(kernel: overlayfs: too many lower directories, limit is 500\); flatten it with scratch squash/,
	},
	{
		title: 'mount options longer than mount(2) takes, cut by the kernel',
		script: `mount -t overlay -o lowerdir=l${':l'.repeat(2100)},upperdir=u,workdir=w scratch m`,
		user: 'root',
		backend: 'kernel',
		errorClass: LimitError,
		hint: /^the overlay's mount options were cut short \(kernel: overlayfs: unescaped trailing colons in lowerdir mount option\.\): .*4095 bytes/,
	},
	{
		title: 'a missing layer dir',
		script: 'mount -t overlay -o lowerdir=abcdef:l,upperdir=u,workdir=w,userxattr scratch m',
		user: 'root',
		backend: 'kernel',
		errorClass: NotFoundError,
		hint: /^layer abcdef of the stack is missing from the store \(kernel: overlayfs: failed to resolve 'abcdef': -2\)/,
	},
	{
		title: 'a missing layer dir in a user namespace, where only mount speaks',
		script: 'mount -t overlay -o lowerdir=abcdef:l,upperdir=u,workdir=w,userxattr scratch m',
		user: 'nobody',
		backend: 'userns',
		errorClass: NotFoundError,
		hint: /^a lower layer is missing from the store \(mount: .*special device scratch does not exist\.\)/,
	},
	{
		title: 'an option this kernel does not know',
		script: 'mount -t overlay -o lowerdir=l,upperdir=u,workdir=w,frobnicate scratch m',
		user: 'root',
		backend: 'kernel',
		errorClass: UnsupportedEnvironmentError,
		hint: /^this kernel's overlayfs does not know the mount option frobnicate \(kernel: overlay: Unknown parameter 'frobnicate'\)/,
	},
	{
		title: 'overlays nested deeper than the kernel stacks',
		script:
			'mkdir -p n/u n/w n/m && mount -t overlay -o lowerdir=l,upperdir=u,workdir=w x m && mount -t overlay -o lowerdir=m,upperdir=o/u,workdir=o/w x o/m && mount -t overlay -o lowerdir=o/m,upperdir=n/u,workdir=n/w scratch n/m',
		user: 'root',
		backend: 'kernel',
		errorClass: LimitError,
		hint: /^overlays nest too deep \(kernel: overlayfs: maximum fs stacking depth exceeded\)/,
	},
	{
		title: 'a source tree the user cannot read',
		script: 'mount -t overlay -o lowerdir=root-only/l,upperdir=u,workdir=w,userxattr scratch m',
		user: 'nobody',
		backend: 'userns',
		errorClass: PermissionError,
		hint: /^the overlay mount was refused \(mount: .*\): the source tree or a layer may not be readable by you/,
	},
	{
		title: 'a mount without the privilege to mount',
		script: 'mount -t overlay -o lowerdir=l,upperdir=u,workdir=w,userxattr scratch m',
		user: 'nobody',
		backend: 'kernel',
		errorClass: PermissionError,
		hint: /^the overlay mount was refused \(mount: .*must be superuser to use mount\.\): a container or security module/,
	},
	{
		title: 'fuse-overlayfs without access to /dev/fuse',
		script: 'fuse-overlayfs -o lowerdir=l,upperdir=u,workdir=w m',
		user: 'nobody',
		backend: 'fuse',
		errorClass: PermissionError,
		hint: /^fuse-overlayfs cannot open \/dev\/fuse \(fuse: failed to open \/dev\/fuse: Permission denied.*\); make it usable with chmod 0666/,
	},
	{
		title: 'fuse-overlayfs with a missing layer dir',
		script: 'fuse-overlayfs -o lowerdir=abcdef:l,upperdir=u,workdir=w m',
		user: 'root',
		backend: 'fuse',
		errorClass: NotFoundError,
		hint: /^layer abcdef of the stack is missing from the store \(cannot resolve path abcdef .*\): the store was changed by hand/,
	},
];

// Serial: the kernel's log is shared, and another test's failing mount must not be read as this one's.
for (const cause of realCauses) {
	test.serial(
		`a real mount failure, ${cause.title}, is translated into one line naming its cause (${cause.user})`,
		async (t) => {
			const directory = await dir({unsafeCleanup: true});
			t.teardown(directory.cleanup);
			for (const sub of ['l', 'u', 'w', 'm', 'o/l', 'o/u', 'o/w', 'o/m']) {
				mkdirSync(path.join(directory.path, sub), {recursive: true});
			}

			writeFileSync(path.join(directory.path, 'l', 'f'), 'f\n');
			if (cause.user === 'nobody') {
				spawnSync('chown', ['-R', '65534:65534', directory.path]);
			}

			// Root's own, closed to others (made after the chown).
			mkdirSync(path.join(directory.path, 'root-only', 'l'), {recursive: true, mode: 0o700});
			chmodSync(path.join(directory.path, 'root-only'), 0o700);

			const since = uptimeSeconds() ?? 0;
			const inNamespace =
				cause.user === 'root'
					? ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', cause.script]
					: [
							'setpriv',
							'--reuid',
							'65534',
							'--regid',
							'65534',
							'--clear-groups',
							'unshare',
							...(cause.backend === 'kernel' ? [] : ['--user', '--map-root-user']),
							...(cause.backend === 'kernel' ? [] : ['--mount']),
							'sh',
							'-c',
							cause.script,
						];
			const result = spawnSync(inNamespace[0] as string, inNamespace.slice(1), {
				cwd: directory.path,
				encoding: 'utf8',
			});
			t.not(result.status, 0, `the mount failed: ${result.stdout}${result.stderr}`);
			const output = `${result.stdout}${result.stderr}${marker('overlay', path.join(directory.path, 'm'))}`;
			const kernelMessages =
				cause.user === 'root' ? readKernelErrors(since, /^(overlay|overlayfs|fuse)\b/) : [];
			const error = translateSetupFailure(output, cause.backend, '/srv/store', kernelMessages);
			t.true(error instanceof cause.errorClass, `${error.name}: ${error.message}`);
			t.regex(error.message, cause.hint);
			t.false(error.message.includes('\n'));
			t.false(error.message.includes('dmesg(1)'));
		},
	);
}

test('readKernelErrors reads nothing it cannot: as nobody the log is closed (dmesg_restrict), and the list is empty', (t) => {
	const result = spawnSync(
		'setpriv',
		[
			'--reuid',
			'65534',
			'--regid',
			'65534',
			'--clear-groups',
			process.execPath,
			'--import=tsx',
			'-e',
			"import('./src/system/kernel-messages.ts').then((m) => console.log(JSON.stringify(m.readKernelErrors(0, /./))))",
		],
		{encoding: 'utf8', cwd: path.resolve('.')},
	);
	t.is(result.stdout.trim(), '[]', result.stderr);
});

test("kernelMessagesAbout keeps messages naming this mount's paths or options, and those naming none", (t) => {
	const options =
		'lowerdir=aaaaaa:/proc/self/fd/5,upperdir=../runs/r1/upper,workdir=../runs/r1/work,userxattr';
	t.deepEqual(
		kernelMessagesAbout(
			[
				'overlay: filesystem on ../runs/r1/upper not supported as upperdir',
				'overlay: filesystem on ../runs/r2/upper not supported as upperdir',
				"overlayfs: failed to resolve 'aaaaaa': -2",
				"overlayfs: failed to resolve 'bbbbbb': -2",
				"overlay: Unknown parameter 'userxattr'",
				"overlay: Unknown parameter 'redirect_dir'",
				'overlayfs: maximum fs stacking depth exceeded',
			],
			options,
		),
		[
			'overlay: filesystem on ../runs/r1/upper not supported as upperdir',
			"overlayfs: failed to resolve 'aaaaaa': -2",
			"overlay: Unknown parameter 'userxattr'",
			'overlayfs: maximum fs stacking depth exceeded',
		],
	);
});

test('translateSetupFailure reads the newest kernel message first, the likeliest to be about this mount', (t) => {
	const error = translateSetupFailure(
		`mount: /m: ${wrongFsType}\n${marker('overlay', '/m')}`,
		'kernel',
		store,
		['overlayfs: too many lower directories, limit is 500', 'overlayfs: maximum fs stacking depth exceeded'],
	);
	t.regex(error.message, /^overlays nest too deep/);
});
