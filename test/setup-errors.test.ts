import test from 'ava';
import {
	InvalidPathError,
	MountError,
	NotFoundError,
	PermissionError,
	type ScratchError,
	UnsupportedEnvironmentError,
} from '../src/errors.js';
import type {BackendName} from '../src/run/backend.js';
import {setupFailureMarker} from '../src/run/namespace-plan.js';
import {parseSetupOutput, translateSetupFailure} from '../src/run/setup-errors.js';

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
