import test from 'ava';
import {UnsupportedEnvironmentError, UsageError} from '../src/errors.js';
import {
	autoOrder,
	type BackendName,
	backendChoices,
	backendProblem,
	chooseBackend,
	describePassedOver,
	filesystemOf,
	type HostFacts,
	readHostFacts,
	readStoreFacts,
	type StoreFacts,
	selectBackend,
} from '../src/run/backend.js';

const filesystemsWithOverlay = 'nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\toverlay\n';
const filesystemsWithoutOverlay = 'nodev\tsysfs\nnodev\ttmpfs\n\text4\n';

/** A host where both backends work for root: overlay loaded, recent kernel, user namespaces allowed. */
function facts(overrides: Partial<HostFacts> = {}): HostFacts {
	return {
		euid: 0,
		kernelRelease: '6.8.0-45-generic',
		filesystems: filesystemsWithOverlay,
		maxUserNamespaces: 63_432,
		unprivilegedUsernsClone: undefined,
		apparmorRestrictsUserns: undefined,
		...overrides,
	};
}

const root = facts({euid: 0});
const user = facts({euid: 1000});

const selectionCases: Array<{title: string; choice: string; facts: HostFacts; expected: BackendName}> = [
	{title: 'auto picks kernel for root', choice: 'auto', facts: root, expected: 'kernel'},
	{title: 'auto picks userns for a normal user', choice: 'auto', facts: user, expected: 'userns'},
	{
		title: 'auto picks kernel for root even on a kernel too old for userns',
		choice: 'auto',
		facts: facts({euid: 0, kernelRelease: '5.4.0'}),
		expected: 'kernel',
	},
	{title: 'kernel is granted to root', choice: 'kernel', facts: root, expected: 'kernel'},
	{title: 'userns is granted to root', choice: 'userns', facts: root, expected: 'userns'},
	{title: 'userns is granted to a normal user', choice: 'userns', facts: user, expected: 'userns'},
	{
		title: 'userns works on exactly Linux 5.11',
		choice: 'userns',
		facts: facts({euid: 1000, kernelRelease: '5.11.0'}),
		expected: 'userns',
	},
	{
		title: 'userns works on a release with a suffix on the minor number',
		choice: 'userns',
		facts: facts({euid: 1000, kernelRelease: '6.1-rc3'}),
		expected: 'userns',
	},
	{
		title: 'root ignores the unprivileged user namespace switches',
		choice: 'userns',
		facts: facts({euid: 0, unprivilegedUsernsClone: 0, apparmorRestrictsUserns: 1}),
		expected: 'userns',
	},
	{
		title: 'a normal user is not held back by switches that allow user namespaces',
		choice: 'auto',
		facts: facts({euid: 1000, unprivilegedUsernsClone: 1, apparmorRestrictsUserns: 0}),
		expected: 'userns',
	},
];

for (const {title, choice, facts: hostFacts, expected} of selectionCases) {
	test(`selectBackend: ${title}`, (t) => {
		t.is(selectBackend(choice, hostFacts), expected);
	});
}

const problemCases: Array<{
	title: string;
	backend: BackendName;
	facts: HostFacts;
	problem: RegExp | undefined;
}> = [
	{title: 'kernel as root has no problem', backend: 'kernel', facts: root, problem: undefined},
	{title: 'userns as a normal user has no problem', backend: 'userns', facts: user, problem: undefined},
	{
		title: 'kernel needs overlay in /proc/filesystems',
		backend: 'kernel',
		facts: facts({filesystems: filesystemsWithoutOverlay}),
		problem: /modprobe overlay/,
	},
	{
		title: 'userns needs overlay in /proc/filesystems',
		backend: 'userns',
		facts: facts({euid: 1000, filesystems: filesystemsWithoutOverlay}),
		problem: /modprobe overlay/,
	},
	{
		title: 'an unreadable /proc/filesystems counts as no overlay',
		backend: 'kernel',
		facts: facts({filesystems: ''}),
		problem: /modprobe overlay/,
	},
	{
		title: 'a filesystem merely named like overlay does not count',
		backend: 'kernel',
		facts: facts({filesystems: 'nodev\toverlayfoo\nnodev\tfuse.overlay\n'}),
		problem: /modprobe overlay/,
	},
	{title: 'kernel needs root', backend: 'kernel', facts: user, problem: /needs root \(you are uid 1000\)/},
	{
		title: 'userns needs Linux 5.11',
		backend: 'userns',
		facts: facts({euid: 1000, kernelRelease: '5.10.0-28-amd64'}),
		problem: /needs Linux 5\.11 or later \(this is 5\.10\.0-28-amd64\)/,
	},
	{
		title: 'userns needs Linux 5.11 even for root',
		backend: 'userns',
		facts: facts({euid: 0, kernelRelease: '4.19.0'}),
		problem: /needs Linux 5\.11/,
	},
	{
		title: 'userns needs user.max_user_namespaces above 0',
		backend: 'userns',
		facts: facts({euid: 1000, maxUserNamespaces: 0}),
		problem: /max_user_namespaces = 0/,
	},
	{
		title: 'userns needs user.max_user_namespaces above 0 even for root',
		backend: 'userns',
		facts: facts({euid: 0, maxUserNamespaces: 0}),
		problem: /max_user_namespaces = 0/,
	},
	{
		title: 'userns for a normal user needs kernel.unprivileged_userns_clone',
		backend: 'userns',
		facts: facts({euid: 1000, unprivilegedUsernsClone: 0}),
		problem: /unprivileged_userns_clone = 0/,
	},
	{
		title: 'userns for a normal user is blocked by the AppArmor restriction',
		backend: 'userns',
		facts: facts({euid: 1000, apparmorRestrictsUserns: 1}),
		problem: /AppArmor restricts unprivileged user namespaces/,
	},
];

for (const {title, backend, facts: hostFacts, problem} of problemCases) {
	test(`backendProblem: ${title}`, (t) => {
		const found = backendProblem(backend, hostFacts);
		if (problem === undefined) {
			t.is(found, undefined);
		} else {
			t.regex(found ?? '', problem);
			t.false(found?.includes('\n'));
		}
	});
}

const refusalCases: Array<{title: string; choice: string; facts: HostFacts; message: RegExp}> = [
	{
		title: 'no backend without overlay in /proc/filesystems',
		choice: 'auto',
		facts: facts({euid: 1000, filesystems: filesystemsWithoutOverlay}),
		message: /no backend can isolate a run.*modprobe overlay.*never runs without isolation/,
	},
	{
		title: 'no backend for root without overlay, naming both backends',
		choice: 'auto',
		facts: facts({filesystems: filesystemsWithoutOverlay}),
		message: /kernel: .*modprobe overlay.*; userns: .*modprobe overlay/,
	},
	{
		title: 'no backend for a normal user on Linux 5.10',
		choice: 'auto',
		facts: facts({euid: 1000, kernelRelease: '5.10.0'}),
		message: /userns: overlay in a user namespace needs Linux 5\.11/,
	},
	{
		title: 'no backend for a normal user when max_user_namespaces is 0',
		choice: 'auto',
		facts: facts({euid: 1000, maxUserNamespaces: 0}),
		message: /max_user_namespaces = 0/,
	},
	{
		title: 'no backend for a normal user when unprivileged_userns_clone is 0',
		choice: 'auto',
		facts: facts({euid: 1000, unprivilegedUsernsClone: 0}),
		message: /unprivileged_userns_clone = 0/,
	},
	{
		title: 'no backend for a normal user under the AppArmor restriction',
		choice: 'auto',
		facts: facts({euid: 1000, apparmorRestrictsUserns: 1}),
		message: /AppArmor/,
	},
	{
		title: 'explicit kernel for a normal user, suggesting --backend userns',
		choice: 'kernel',
		facts: user,
		message: /^backend kernel cannot run here: .*needs root.*; try --backend userns$/,
	},
	{
		title: 'explicit userns on Linux 5.10, suggesting --backend kernel',
		choice: 'userns',
		facts: facts({euid: 0, kernelRelease: '5.10.0'}),
		message: /^backend userns cannot run here: .*Linux 5\.11.*; try --backend kernel$/,
	},
];

for (const {title, choice, facts: hostFacts, message} of refusalCases) {
	test(`selectBackend refuses with a one-line UnsupportedEnvironmentError: ${title}`, (t) => {
		const error = t.throws(() => selectBackend(choice, hostFacts), {
			instanceOf: UnsupportedEnvironmentError,
			message,
		});
		t.is(error?.code, 'ERR_SCRATCH_UNSUPPORTED');
		t.false(error?.message.includes('\n'));
	});
}

for (const choice of ['docker', 'Kernel', '', 'none']) {
	test(`selectBackend rejects the unknown choice '${choice}' with a UsageError listing the choices`, (t) => {
		t.throws(() => selectBackend(choice, root), {
			instanceOf: UsageError,
			message: /unknown backend .*; use one of auto, kernel, userns, fuse$/,
		});
	});
}

test('selectBackend with auto never returns a backend that has a problem', (t) => {
	const variants: HostFacts[] = [];
	for (const euid of [0, 1000]) {
		for (const filesystems of [filesystemsWithOverlay, filesystemsWithoutOverlay]) {
			for (const kernelRelease of ['4.19.0', '5.10.0', '5.11.0', '6.8.0']) {
				for (const maxUserNamespaces of [undefined, 0, 100]) {
					for (const unprivilegedUsernsClone of [undefined, 0, 1]) {
						for (const apparmorRestrictsUserns of [undefined, 0, 1]) {
							variants.push({
								euid,
								filesystems,
								kernelRelease,
								maxUserNamespaces,
								unprivilegedUsernsClone,
								apparmorRestrictsUserns,
							});
						}
					}
				}
			}
		}
	}

	let selected = 0;
	for (const hostFacts of variants) {
		let backend: BackendName | undefined;
		try {
			backend = selectBackend('auto', hostFacts);
		} catch (error) {
			t.true(error instanceof UnsupportedEnvironmentError, JSON.stringify(hostFacts));
			const candidates = autoOrder(hostFacts);
			t.true(
				candidates.every((name) => backendProblem(name, hostFacts) !== undefined),
				`auto refused although a backend works: ${JSON.stringify(hostFacts)}`,
			);
			continue;
		}

		selected++;
		t.is(backendProblem(backend, hostFacts), undefined, JSON.stringify(hostFacts));
		if (hostFacts.euid !== 0) {
			t.is(backend, 'userns', 'auto never picks the kernel backend for a normal user');
		}
	}

	t.true(selected > 0);
});

test('backendChoices lists auto, kernel, userns and fuse', (t) => {
	t.deepEqual([...backendChoices], ['auto', 'kernel', 'userns', 'fuse']);
});

test('readHostFacts reads this host: the effective uid and a /proc/filesystems with overlay', (t) => {
	const hostFacts = readHostFacts();
	t.is(hostFacts.euid, process.geteuid?.() ?? -1);
	t.regex(hostFacts.filesystems, /\toverlay$/m);
	t.regex(hostFacts.kernelRelease, /^\d+\.\d+/);
});

const filesystemsWithFuse = `${filesystemsWithOverlay}nodev\tfuse\nnodev\tfusectl\n`;

/** A host where fuse-overlayfs works too: FUSE loaded, the program installed, /dev/fuse usable. */
function fuseFacts(overrides: Partial<HostFacts> = {}): HostFacts {
	return facts({
		filesystems: filesystemsWithFuse,
		fuseOverlayfs: '/usr/bin/fuse-overlayfs',
		devFuse: 'ok',
		...overrides,
	});
}

function storeFacts(overrides: Partial<StoreFacts> = {}): StoreFacts {
	return {root: '/var/lib/scratch', filesystem: 'ext4', layerFormat: 'overlay-userxattr-1', ...overrides};
}

const onOverlayfs = storeFacts({
	root: '/data/store',
	filesystem: 'overlayfs',
	layerFormat: 'whiteout-files-1',
});

const fuseProblemCases: Array<{
	title: string;
	backend: BackendName;
	facts: HostFacts;
	store?: StoreFacts;
	problem: RegExp | undefined;
}> = [
	{title: 'fuse as root has no problem', backend: 'fuse', facts: fuseFacts(), problem: undefined},
	{
		title: 'fuse as a normal user has no problem',
		backend: 'fuse',
		facts: fuseFacts({euid: 1000}),
		problem: undefined,
	},
	{
		title: 'fuse needs no overlay in /proc/filesystems',
		backend: 'fuse',
		facts: fuseFacts({filesystems: `${filesystemsWithoutOverlay}nodev\tfuse\n`}),
		problem: undefined,
	},
	{
		title: 'fuse needs FUSE in /proc/filesystems',
		backend: 'fuse',
		facts: fuseFacts({filesystems: filesystemsWithOverlay}),
		problem: /no FUSE \(fuse is not in \/proc\/filesystems\); load it with 'modprobe fuse'/,
	},
	{
		title: 'fuseblk alone is not FUSE',
		backend: 'fuse',
		facts: fuseFacts({filesystems: `${filesystemsWithOverlay}\tfuseblk\n`}),
		problem: /modprobe fuse/,
	},
	{
		title: 'fuse needs the fuse-overlayfs program',
		backend: 'fuse',
		facts: fuseFacts({fuseOverlayfs: undefined}),
		problem: /fuse-overlayfs is not installed; install the fuse-overlayfs package/,
	},
	{
		title: "fuse needs the teardown's programs too",
		backend: 'fuse',
		facts: fuseFacts({missingFusePrograms: ['getfattr', 'setfattr', 'awk']}),
		problem:
			/^the fuse backend also runs getfattr, setfattr, awk, which are not installed; install attr, mawk$/,
	},
	{
		title: 'fuse needs /dev/fuse',
		backend: 'fuse',
		facts: fuseFacts({devFuse: 'missing'}),
		problem: /\/dev\/fuse does not exist .*--device \/dev\/fuse/,
	},
	{
		title: 'fuse needs /dev/fuse to be usable by the caller',
		backend: 'fuse',
		facts: fuseFacts({euid: 1000, devFuse: 'denied'}),
		problem: /\/dev\/fuse cannot be opened by uid 1000 .*chmod 0666 \/dev\/fuse/,
	},
	{
		title: 'fuse for a normal user needs user namespaces',
		backend: 'fuse',
		facts: fuseFacts({euid: 1000, maxUserNamespaces: 0}),
		problem: /max_user_namespaces = 0/,
	},
	{
		title: 'fuse for a normal user works from Linux 4.18 (FUSE in user namespaces)',
		backend: 'fuse',
		facts: fuseFacts({euid: 1000, kernelRelease: '4.18.0'}),
		problem: undefined,
	},
	{
		title: 'fuse for a normal user needs Linux 4.18',
		backend: 'fuse',
		facts: fuseFacts({euid: 1000, kernelRelease: '4.15.0'}),
		problem: /FUSE in a user namespace needs Linux 4\.18 or later/,
	},
	{
		title: 'fuse as root needs no user namespaces',
		backend: 'fuse',
		facts: fuseFacts({maxUserNamespaces: 0, kernelRelease: '4.15.0'}),
		problem: undefined,
	},
	{
		title: 'kernel cannot put an upper dir on a store on overlayfs',
		backend: 'kernel',
		facts: fuseFacts(),
		store: onOverlayfs,
		problem:
			/^the store \/data\/store is on overlayfs \(as inside a container\), which the kernel refuses as an upper dir$/,
	},
	{
		title: 'userns cannot put an upper dir on a store on overlayfs',
		backend: 'userns',
		facts: fuseFacts({euid: 1000}),
		store: onOverlayfs,
		problem: /is on overlayfs/,
	},
	{
		title: 'fuse can put an upper dir on a store on overlayfs',
		backend: 'fuse',
		facts: fuseFacts({euid: 1000}),
		store: onOverlayfs,
		problem: undefined,
	},
	{
		title: 'kernel refuses a store on NFS',
		backend: 'kernel',
		facts: fuseFacts(),
		store: storeFacts({filesystem: 'nfs'}),
		problem: /is on NFS, which the kernel refuses as an upper dir/,
	},
	{
		title: 'kernel cannot read a whiteout-files store even off overlayfs',
		backend: 'kernel',
		facts: fuseFacts(),
		store: storeFacts({layerFormat: 'whiteout-files-1'}),
		problem: /keeps its layers' whiteouts as \.wh\. files .*only fuse-overlayfs reads/,
	},
	{
		title: 'no backend can write to a store on squashfs',
		backend: 'fuse',
		facts: fuseFacts(),
		store: storeFacts({filesystem: 'squashfs'}),
		problem: /is on squashfs, which is read-only/,
	},
	{
		title: 'a store on ext4 is fine for the kernel',
		backend: 'kernel',
		facts: fuseFacts(),
		store: storeFacts(),
		problem: undefined,
	},
];

for (const {title, backend, facts: hostFacts, store, problem} of fuseProblemCases) {
	test(`backendProblem: ${title}`, (t) => {
		const found = backendProblem(backend, hostFacts, store);
		if (problem === undefined) {
			t.is(found, undefined);
		} else {
			t.regex(found ?? '', problem);
			t.false(found?.includes('\n'));
		}
	});
}

test('auto takes fuse for root only when both kernel backends cannot work, and says why once', (t) => {
	const selection = chooseBackend('auto', fuseFacts(), onOverlayfs);
	t.is(selection.backend, 'fuse');
	t.deepEqual(
		selection.passedOver.map(({backend}) => backend),
		['kernel', 'userns'],
	);
	t.is(
		describePassedOver(selection.passedOver),
		'the store /data/store is on overlayfs (as inside a container), which the kernel refuses as an upper dir',
	);
});

test('auto takes fuse for a normal user whose user namespaces cannot mount overlay (Linux 5.10)', (t) => {
	const selection = chooseBackend('auto', fuseFacts({euid: 1000, kernelRelease: '5.10.0'}), storeFacts());
	t.is(selection.backend, 'fuse');
	t.regex(describePassedOver(selection.passedOver), /^overlay in a user namespace needs Linux 5\.11/);
});

test('describePassedOver names the backends when their problems differ', (t) => {
	t.is(
		describePassedOver([
			{backend: 'kernel', problem: 'a'},
			{backend: 'userns', problem: 'b'},
		]),
		'kernel: a; userns: b',
	);
});

test('auto never takes fuse while a kernel backend works, and passes over nothing then', (t) => {
	t.deepEqual(chooseBackend('auto', fuseFacts(), storeFacts()), {backend: 'kernel', passedOver: []});
	t.deepEqual(chooseBackend('auto', fuseFacts({euid: 1000}), storeFacts()), {
		backend: 'userns',
		passedOver: [],
	});
});

test('auto refuses when fuse cannot work either, naming every backend and never running unisolated', (t) => {
	const error = t.throws(() => chooseBackend('auto', fuseFacts({devFuse: 'missing'}), onOverlayfs), {
		instanceOf: UnsupportedEnvironmentError,
	});
	t.regex(
		error?.message ?? '',
		/^no backend can isolate a run on this host \(kernel: .*; userns: .*; fuse: \/dev\/fuse does not exist/,
	);
	t.regex(error?.message ?? '', /scratch never runs without isolation$/);
});

test('an explicit fuse that cannot work suggests the backends that can', (t) => {
	t.throws(() => selectBackend('fuse', fuseFacts({fuseOverlayfs: undefined}), storeFacts()), {
		instanceOf: UnsupportedEnvironmentError,
		message:
			/^backend fuse cannot run here: fuse-overlayfs is not installed; install the fuse-overlayfs package; try --backend kernel or --backend userns$/,
	});
});

test('an explicit kernel on a store on overlayfs suggests fuse', (t) => {
	t.throws(() => selectBackend('kernel', fuseFacts(), onOverlayfs), {
		instanceOf: UnsupportedEnvironmentError,
		message: /is on overlayfs .*; try --backend fuse$/,
	});
});

test('an explicit backend where nothing works points to scratch doctor', (t) => {
	t.throws(() => selectBackend('userns', facts({euid: 1000, maxUserNamespaces: 0})), {
		instanceOf: UnsupportedEnvironmentError,
		message: /; run scratch doctor to see what works here$/,
	});
});

test('readStoreFacts reads a new store path from its nearest existing ancestor, with the default format', (t) => {
	const facts = readStoreFacts('/tmp/scratch-no-such-dir/deeper/store');
	t.is(facts.root, '/tmp/scratch-no-such-dir/deeper/store');
	t.is(facts.filesystem, filesystemOf('/tmp'));
	t.is(facts.layerFormat, 'overlay-userxattr-1');
});

test('filesystemOf names file systems it knows and gives the magic number of others', (t) => {
	t.is(filesystemOf('/proc'), '0x9fa0');
	t.regex(filesystemOf('/'), /^(ext4|xfs|btrfs|tmpfs|overlayfs|zfs|f2fs|0x[\da-f]+)$/);
});

test('readHostFacts finds fuse-overlayfs and /dev/fuse on this host (CI installs the fuse-overlayfs package)', (t) => {
	const hostFacts = readHostFacts();
	t.is(hostFacts.fuseOverlayfs, '/usr/bin/fuse-overlayfs');
	t.is(hostFacts.devFuse, 'ok', 'the tests run as root, who can open /dev/fuse');
	t.regex(hostFacts.filesystems, /\tfuse$/m);
});
