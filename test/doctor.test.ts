import {existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, statSync} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test, {type ExecutionContext} from 'ava';
import {execa} from 'execa';
import {describeBackend, renderDoctorReport, statusWord} from '../src/cli/render-doctor.js';
import {decideAuto, describeProblems, runDoctor} from '../src/doctor/doctor.js';
import {hasFilesystem, hostChecks, kernelAtLeast, parseFuseOverlayfsVersion} from '../src/doctor/host.js';
import {computeLimits, formatCount, limitChecks} from '../src/doctor/limits.js';
import {removeProbe} from '../src/doctor/probe.js';
import {
	findPrograms,
	missingProgramProblem,
	programChecks,
	requiredPrograms,
} from '../src/doctor/programs.js';
import type {BackendReport, DoctorCheck, DoctorReport, StoreReport} from '../src/doctor/report.js';
import {storeChecks} from '../src/doctor/store.js';
import {runTrial} from '../src/doctor/trial.js';
import type {HostFacts} from '../src/run/backend.js';
import {filesystemOf as statfsName} from '../src/run/backend.js';
import {buildFuseOptions, buildOverlayOptions} from '../src/run/namespace-plan.js';
import {fuseSetup, overlayfsStore} from './helpers/fuse.js';
import {
	cliCommand,
	eventually,
	fingerprintTree,
	hostMountsUnder,
	makeSandbox,
	processesWith,
	type Sandbox,
	scratch,
	scratchRun,
	storeLeftovers,
	uniqueSleep,
	users,
} from './helpers/scratch.js';

// ---------------------------------------------------------------------------------------------
// Pure parts, as tables.

const versionCases: Array<[string, string | undefined]> = [
	[
		'fusermount3 version: 3.14.0\nfuse-overlayfs: version 1.10\nFUSE library version 3.14.0\nusing FUSE kernel interface version 7.31\n',
		'1.10',
	],
	['fuse-overlayfs: version 0.7.6\nFUSE library version 3.4.1\n', '0.7.6'],
	['fuse-overlayfs: version 1.13-dev\n', '1.13-dev'],
	['unknown argument ignored: lazytime\nfuse-overlayfs: version 1.9\n', '1.9'],
	['fusermount3 version: 3.14.0\n', undefined],
	['', undefined],
	['not-fuse-overlayfs: version 2.0\n', undefined],
];

for (const [output, version] of versionCases) {
	test(`the version in fuse-overlayfs --version output ${JSON.stringify(output.slice(0, 40))} is ${String(version)}`, (t) => {
		t.is(parseFuseOverlayfsVersion(output), version);
	});
}

test('/proc/filesystems lines match a file system by its exact name', (t) => {
	const filesystems = 'nodev\tsysfs\nnodev\toverlay\n\text4\nfuseblk\nnodev\tfuse.overlay\n';
	const cases: Array<[string, boolean]> = [
		['overlay', true],
		['ext4', true],
		['fuse', false],
		['fuseblk', true],
		['sysfs', true],
		['overla', false],
		['btrfs', false],
	];
	for (const [name, expected] of cases) {
		t.is(hasFilesystem(filesystems, name), expected, name);
	}
});

test('kernel releases compare by major and minor number', (t) => {
	const cases: Array<[string, number, number, boolean]> = [
		['6.18.44-fc-v1147', 5, 11, true],
		['5.11.0', 5, 11, true],
		['5.10.209-1', 5, 11, false],
		['4.18.0-553.el8', 4, 18, true],
		['6.1-rc3', 5, 11, true],
		['3.10.0', 4, 18, false],
	];
	for (const [release, major, minor, expected] of cases) {
		t.is(kernelAtLeast(release, major, minor), expected, `${release} >= ${major}.${minor}`);
	}
});

test("a 499-layer stack's mount options take 3,629 bytes (fuse 3,608, the longest workspace 3,860), within mount(2)'s 4,095", (t) => {
	const limits = computeLimits();
	t.deepEqual(limits, {
		maxLowerLayers: 500,
		maxStackedLayers: 499,
		maxMountOptionsBytes: 4095,
		fullStackOptionsBytes: {kernel: 3629, fuse: 3608, workspace: 3860},
	});
	// The same numbers as the strings runs build, with real-length ids.
	const layers = Array.from({length: 499}, (_, index) => index.toString(36).padStart(6, '0'));
	t.is(buildOverlayOptions({volatile: true, layers, runId: 'abcdefghjkmn'}).length, 3629);
	t.is(buildFuseOptions({volatile: true, layers, runId: 'abcdefghjkmn'}).length, 3608);
	const [layerCheck, optionsCheck] = limitChecks(limits);
	t.is(layerCheck?.ok, true);
	t.regex(layerCheck?.detail ?? '', /at most 500 lower layers: 499 layers over the source/);
	t.is(optionsCheck?.ok, true);
	t.is(
		optionsCheck?.detail,
		"a 499-layer run takes 3,629 of mount(2)'s 4,095 option bytes (fuse-overlayfs 3,608, a workspace with the longest name 3,860)",
	);
});

test('limits that would not fit mount(2) fail the mount-options check and say what to do', (t) => {
	const limits = {...computeLimits(), fullStackOptionsBytes: {kernel: 4100, fuse: 4000, workspace: 4300}};
	const optionsCheck = limitChecks(limits).find((check) => check.id === 'mount-options');
	t.is(optionsCheck?.ok, false);
	t.regex(
		optionsCheck?.detail ?? '',
		/takes 4,100 of mount\(2\)'s 4,095 .*cannot be mounted: flatten them with scratch squash$/,
	);
});

test('counts are written with thousands separators', (t) => {
	const cases: Array<[number, string]> = [
		[0, '0'],
		[999, '999'],
		[4095, '4,095'],
		[16_328_152, '16,328,152'],
	];
	for (const [count, text] of cases) {
		t.is(formatCount(count), text);
	}
});

const goodHost: HostFacts = {
	euid: 1000,
	kernelRelease: '6.8.0-45-generic',
	filesystems: 'nodev\toverlay\nnodev\tfuse\n\text4\n',
	maxUserNamespaces: 63_432,
	unprivilegedUsernsClone: undefined,
	apparmorRestrictsUserns: undefined,
	fuseOverlayfs: '/usr/bin/fuse-overlayfs',
	devFuse: 'ok',
};
const openFuse = {state: 'open', mode: 0o666, uid: 0, gid: 0} as const;

const hostCases: Array<{
	title: string;
	facts: Partial<HostFacts>;
	devFuse?: Parameters<typeof hostChecks>[1]['devFuse'];
	id: string;
	ok: boolean | null;
	detail: RegExp;
}> = [
	{
		title: 'overlay loaded',
		facts: {},
		id: 'overlay',
		ok: true,
		detail: /^overlay is in \/proc\/filesystems$/,
	},
	{
		title: 'overlay missing',
		facts: {filesystems: '\text4\n'},
		id: 'overlay',
		ok: false,
		detail: /not in \/proc\/filesystems; load it with 'modprobe overlay'/,
	},
	{title: 'root', facts: {euid: 0}, id: 'root', ok: true, detail: /uid 0: the kernel backend can be used/},
	{title: 'not root', facts: {}, id: 'root', ok: false, detail: /uid 1000: the kernel backend needs root/},
	{
		title: 'Linux 5.10',
		facts: {kernelRelease: '5.10.0-28-amd64'},
		id: 'kernel-version',
		ok: false,
		detail: /overlay in a user namespace needs 5\.11 or later/,
	},
	{
		title: 'user namespaces disabled',
		facts: {maxUserNamespaces: 0},
		id: 'max-user-namespaces',
		ok: false,
		detail: /= 0: user namespaces are disabled; raise it with sysctl/,
	},
	{
		title: 'no user namespaces at all',
		facts: {maxUserNamespaces: undefined},
		id: 'max-user-namespaces',
		ok: false,
		detail: /this kernel has no user namespaces/,
	},
	{
		title: 'Debian switch absent',
		facts: {},
		id: 'unprivileged-userns-clone',
		ok: true,
		detail: /is not present/,
	},
	{
		title: 'Debian switch off for a user',
		facts: {unprivilegedUsernsClone: 0},
		id: 'unprivileged-userns-clone',
		ok: false,
		detail:
			/= 0: only root may make user namespaces; enable them with sysctl -w kernel\.unprivileged_userns_clone=1/,
	},
	{
		title: 'Debian switch off for root',
		facts: {euid: 0, unprivilegedUsernsClone: 0},
		id: 'unprivileged-userns-clone',
		ok: true,
		detail: /does not restrict root/,
	},
	{
		title: 'AppArmor restriction absent',
		facts: {},
		id: 'apparmor-userns',
		ok: true,
		detail: /is not present: AppArmor does not restrict/,
	},
	{
		title: 'AppArmor restriction off',
		facts: {apparmorRestrictsUserns: 0},
		id: 'apparmor-userns',
		ok: true,
		detail: /^kernel\.apparmor_restrict_unprivileged_userns = 0$/,
	},
	{
		title: 'AppArmor restriction on for a user',
		facts: {apparmorRestrictsUserns: 1},
		id: 'apparmor-userns',
		ok: false,
		detail: /= 1: AppArmor keeps unprivileged users from using user namespaces; allow them with sysctl/,
	},
	{
		title: 'AppArmor restriction on for root',
		facts: {euid: 0, apparmorRestrictsUserns: 1},
		id: 'apparmor-userns',
		ok: true,
		detail: /does not restrict root/,
	},
	{title: 'FUSE loaded', facts: {}, id: 'fuse', ok: true, detail: /^fuse is in \/proc\/filesystems$/},
	{
		title: 'FUSE missing',
		facts: {filesystems: 'nodev\toverlay\n'},
		id: 'fuse',
		ok: false,
		detail: /modprobe fuse/,
	},
	{
		title: 'fuse-overlayfs installed',
		facts: {},
		id: 'fuse-overlayfs',
		ok: true,
		detail: /^\/usr\/bin\/fuse-overlayfs, version 1\.10$/,
	},
	{
		title: 'fuse-overlayfs missing',
		facts: {fuseOverlayfs: undefined},
		id: 'fuse-overlayfs',
		ok: false,
		detail: /^not installed; install the fuse-overlayfs package$/,
	},
	{
		title: '/dev/fuse open',
		facts: {},
		id: 'dev-fuse',
		ok: true,
		detail: /^mode 0666, owned by 0:0; uid 1000 can open it for reading and writing$/,
	},
	{
		title: '/dev/fuse denied',
		facts: {},
		devFuse: {state: 'denied', mode: 0o600, uid: 0, gid: 0, error: 'EACCES'},
		id: 'dev-fuse',
		ok: false,
		detail:
			/^mode 0600, owned by 0:0; uid 1000 cannot open it \(EACCES\): make it mode 0666 \(chmod 0666 \/dev\/fuse/,
	},
	{
		title: '/dev/fuse missing',
		facts: {},
		devFuse: {state: 'missing'},
		id: 'dev-fuse',
		ok: false,
		detail: /does not exist; .*docker run --device \/dev\/fuse/,
	},
];

for (const {title, facts, devFuse, id, ok, detail} of hostCases) {
	test(`host check ${id}: ${title}`, (t) => {
		const checks = hostChecks(
			{...goodHost, ...facts},
			{devFuse: devFuse ?? openFuse, fuseOverlayfsVersion: '1.10'},
		);
		const check = checks.find((candidate) => candidate.id === id);
		t.is(check?.ok, ok);
		t.regex(check?.detail ?? '', detail);
		t.true(checks.every((candidate) => candidate.group === 'host' && !candidate.detail.includes('\n')));
	});
}

test('programs are looked up one by one, and a missing one names its Debian package and what needs it', (t) => {
	const missing = new Set(['getfattr', 'du', 'unshare']);
	const programs = findPrograms((name) => (missing.has(name) ? undefined : `/usr/bin/${name}`));
	t.is(programs.length, requiredPrograms.length);
	const checks = programChecks(programs);
	const byId = new Map(checks.map((check) => [check.id, check]));
	t.deepEqual(byId.get('program-sh'), {
		id: 'program-sh',
		group: 'programs',
		label: 'sh',
		ok: true,
		detail: '/usr/bin/sh',
	});
	t.is(
		byId.get('program-getfattr')?.detail,
		'not found; install the attr package (the fuse backend needs it)',
	);
	t.is(byId.get('program-unshare')?.detail, 'not found; install the util-linux package (every run needs it)');
	t.regex(byId.get('program-du')?.detail ?? '', /^not found; install the coreutils package \(gc, keep/);
	const cases: Array<['kernel' | 'userns' | 'fuse', RegExp]> = [
		['kernel', /^scratch needs the program 'unshare' \(package util-linux\) and cannot find it; install it$/],
		['userns', /^scratch needs the program 'unshare' \(package util-linux\)/],
		[
			'fuse',
			/^scratch needs the programs 'unshare' \(package util-linux\), 'getfattr' \(package attr\) and cannot find them/,
		],
	];
	for (const [backend, problem] of cases) {
		t.regex(missingProgramProblem(backend, programs) ?? '', problem, backend);
	}

	const allFound = findPrograms((name) => `/bin/${name}`);
	t.is(missingProgramProblem('fuse', allFound), undefined);
	t.is(
		missingProgramProblem(
			'kernel',
			findPrograms((name) => (name === 'mknod' ? undefined : `/bin/${name}`)),
		),
		undefined,
	);
});

const baseStore: StoreReport = {
	path: '/var/lib/scratch',
	exists: true,
	filesystem: 'ext4',
	onOverlayfs: false,
	layerFormat: 'overlay-userxattr-1',
	layerFormatSource: 'recorded',
	dType: true,
	userXattr: true,
	freeBytes: 80 * 1024 ** 3,
	freeInodes: 1_000_000,
	writable: true,
	owner: {uid: 0, mode: '0700'},
};

const storeCases: Array<{
	title: string;
	store: Partial<StoreReport>;
	options?: Partial<Parameters<typeof storeChecks>[1]>;
	id: string;
	ok: boolean | null;
	detail: RegExp;
}> = [
	{title: 'ext4', store: {}, id: 'store-filesystem', ok: true, detail: /^ext4$/},
	{
		title: 'overlayfs',
		store: {filesystem: 'overlayfs', onOverlayfs: true},
		options: {fileSystemProblem: 'the store /s is on overlayfs'},
		id: 'store-filesystem',
		ok: false,
		detail:
			/^overlayfs: the store \/s is on overlayfs; the kernel and userns backends cannot be used, auto takes fuse$/,
	},
	{title: 'd_type', store: {}, id: 'store-d-type', ok: true, detail: /tells entries' types/},
	{title: 'no d_type', store: {dType: false}, id: 'store-d-type', ok: false, detail: /ftype=0.*--store DIR/},
	{
		title: 'd_type unknown',
		store: {dType: null},
		options: {unchecked: {dType: 'nothing to read'}},
		id: 'store-d-type',
		ok: null,
		detail: /^could not be checked: nothing to read$/,
	},
	{
		title: 'no user xattrs',
		store: {userXattr: false},
		options: {unchecked: {userXattr: 'Operation not supported'}},
		id: 'store-user-xattr',
		ok: false,
		detail: /^does not take user\.\* extended attributes \(Operation not supported\)/,
	},
	{title: 'room', store: {}, id: 'store-space', ok: true, detail: /^80\.0 GiB and 1,000,000 inodes free$/},
	{
		title: 'no inode limit',
		store: {freeInodes: null},
		id: 'store-space',
		ok: true,
		detail: /^80\.0 GiB and no fixed limit of inodes free$/,
	},
	{
		title: 'full',
		store: {freeBytes: 0},
		id: 'store-space',
		ok: false,
		detail: /^0 B and 1,000,000 inodes free; .*free some space/,
	},
	{
		title: 'out of inodes',
		store: {freeInodes: 12},
		id: 'store-space',
		ok: false,
		detail: /12 inodes free; .*free some inodes/,
	},
	{title: 'writable', store: {}, id: 'store-writable', ok: true, detail: /^uid 0 can write to it$/},
	{
		title: 'missing but makeable',
		store: {exists: false},
		id: 'store-writable',
		ok: true,
		detail: /^does not exist yet; uid 0 can make it \(scratch run does, doctor does not\)$/,
	},
	{
		title: 'not writable',
		store: {writable: false, problem: 'the store /s is not writable by uid 0 (read-only file system)'},
		id: 'store-writable',
		ok: false,
		detail: /read-only file system/,
	},
	{
		title: 'private and mine',
		store: {},
		id: 'store-owner',
		ok: true,
		detail: /^mode 0700, owned by uid 0 \(you\)$/,
	},
	{
		title: 'too open',
		store: {owner: {uid: 0, mode: '0755'}},
		id: 'store-owner',
		ok: false,
		detail: /mode 0755, .*should be mode 0700 and yours: chmod 0700 \/var\/lib\/scratch$/,
	},
	{
		title: "another user's",
		store: {owner: {uid: 1000, mode: '0700'}},
		id: 'store-owner',
		ok: false,
		detail: /owned by uid 1000; .*use a store of your own/,
	},
	{
		title: 'no dir yet',
		store: {owner: undefined},
		id: 'store-owner',
		ok: null,
		detail: /makes it mode 0700, owned by uid 0/,
	},
	{
		title: 'recorded format',
		store: {},
		id: 'store-layer-format',
		ok: true,
		detail: /^overlay-userxattr-1 \(recorded in the store\): whiteouts are 0\/0 character devices/,
	},
	{
		title: 'new store on overlayfs',
		store: {layerFormat: 'whiteout-files-1', layerFormatSource: 'new', onOverlayfs: true},
		id: 'store-layer-format',
		ok: true,
		detail: /^whiteout-files-1 \(what a new store gets on overlayfs\): whiteouts are \.wh\. files/,
	},
	{
		title: 'whiteout files off overlayfs',
		store: {layerFormat: 'whiteout-files-1'},
		options: {formatProblem: 'only fuse-overlayfs reads it'},
		id: 'store-layer-format',
		ok: false,
		detail: /; only fuse-overlayfs reads it$/,
	},
];

for (const {title, store, options, id, ok, detail} of storeCases) {
	test(`store check ${id}: ${title}`, (t) => {
		const checks = storeChecks(
			{...baseStore, ...store},
			{euid: 0, fileSystemProblem: undefined, formatProblem: undefined, unchecked: {}, ...options},
		);
		const check = checks.find((candidate) => candidate.id === id);
		t.is(check?.ok, ok);
		t.regex(check?.detail ?? '', detail);
	});
}

function backend(name: BackendReport['backend'], problem?: string, trialFailed = false): BackendReport {
	return {
		backend: name,
		ok: problem === undefined,
		...(problem ? {problem} : {}),
		...(problem && !trialFailed ? {factsProblem: problem} : {}),
		trial:
			problem && !trialFailed ? null : {ok: !trialFailed, layerFormat: 'overlay-userxattr-1', durationMs: 5},
	};
}

const autoCases: Array<{
	title: string;
	facts: Partial<HostFacts>;
	backends: BackendReport[];
	backend: BackendReport['backend'] | null;
	factsPick: BackendReport['backend'] | null;
	summary: RegExp;
	store?: {root: string; filesystem: string; layerFormat: 'overlay-userxattr-1' | 'whiteout-files-1'};
}> = [
	{
		title: 'root where everything works',
		facts: {euid: 0},
		backends: [backend('kernel'), backend('userns'), backend('fuse')],
		backend: 'kernel',
		factsPick: 'kernel',
		summary: /^auto picks kernel$/,
	},
	{
		title: 'a user: kernel is not in the order',
		facts: {},
		backends: [backend('kernel', 'needs root'), backend('userns'), backend('fuse', '/dev/fuse denied')],
		backend: 'userns',
		factsPick: 'userns',
		summary: /^auto picks userns$/,
	},
	{
		title: 'a store on overlayfs',
		facts: {euid: 0},
		backends: [backend('kernel', 'on overlayfs'), backend('userns', 'on overlayfs'), backend('fuse')],
		store: {root: '/s', filesystem: 'overlayfs', layerFormat: 'whiteout-files-1'},
		backend: 'fuse',
		factsPick: 'fuse',
		summary: /^auto picks fuse, passing over kernel and userns: on overlayfs$/,
	},
	{
		title: 'a trial that failed where the facts were fine',
		facts: {euid: 0},
		backends: [
			backend('kernel', 'its trial run failed: mount: permission denied', true),
			backend('userns'),
			backend('fuse'),
		],
		backend: 'userns',
		factsPick: 'kernel',
		summary:
			/^auto picks userns, passing over kernel: its trial run failed: mount: permission denied; but scratch run --backend auto goes by the facts alone and would take kernel and fail: pass --backend userns$/,
	},
	{
		title: 'nothing works',
		facts: {},
		backends: [
			backend('kernel', 'needs root'),
			backend('userns', 'disabled'),
			backend('fuse', 'not installed'),
		],
		backend: null,
		factsPick: 'userns',
		summary: /^no backend can isolate a run here: userns: disabled; fuse: not installed/,
	},
];

for (const {title, facts, backends, backend: expected, factsPick, summary, store} of autoCases) {
	test(`auto's pick: ${title}`, (t) => {
		const auto = decideAuto({...goodHost, ...facts}, backends, store);
		t.is(auto.backend, expected);
		t.is(auto.factsPick, factsPick);
		t.regex(auto.summary, summary);
		t.is(
			auto.passedOver.length,
			expected === null
				? facts.euid === 0
					? 3
					: 2
				: ['kernel', 'userns', 'fuse'].indexOf(expected) - (facts.euid === 0 ? 0 : 1),
		);
	});
}

test('problems shared by backends are named once', (t) => {
	t.is(
		describeProblems([
			{backend: 'kernel', problem: 'A'},
			{backend: 'userns', problem: 'A'},
			{backend: 'fuse', problem: 'B'},
		]),
		'kernel and userns: A; fuse: B',
	);
});

test('status words and backend lines say ok, no or -- and why', (t) => {
	t.deepEqual([statusWord(true), statusWord(false), statusWord(null)], ['ok', 'no', '--']);
	t.is(describeBackend(backend('kernel', 'needs root')), 'needs root (not tried)');
	t.is(describeBackend(backend('fuse', 'its trial run failed: X', true)), 'its trial run failed: X');
	t.regex(
		describeBackend({
			backend: 'kernel',
			ok: true,
			trial: {
				ok: true,
				layerFormat: 'overlay-userxattr-1',
				upper: {written: true, whiteout: true, opaque: true},
				durationMs: 42,
			},
		}),
		/^trial run passed in 42 ms: .*its upper is in the overlay-userxattr-1 layer format$/,
	);
});

// ---------------------------------------------------------------------------------------------
// Real runs, as root and as uid 65534.

/** `scratch doctor --store STORE --json` parsed, with its exit status. */
async function doctorJson(
	sandbox: Pick<Sandbox, 'user'>,
	store: string,
	options: Parameters<typeof scratch>[2] = {},
): Promise<{exitCode: number | undefined; report: DoctorReport; stderr: string}> {
	const result = await scratch(sandbox, ['doctor', '--json', '--store', store], options);
	return {
		exitCode: result.exitCode,
		report: JSON.parse(String(result.stdout)) as DoctorReport,
		stderr: String(result.stderr),
	};
}

function checkOf(report: DoctorReport, id: string): DoctorCheck | undefined {
	return report.checks.find((check) => check.id === id);
}

function backendOf(report: DoctorReport, name: BackendReport['backend']): BackendReport | undefined {
	return report.backends.find((candidate) => candidate.backend === name);
}

/** Pids of processes whose working directory is under a directory (a trial's chain or deleter). */
function processesWorkingUnder(directory: string): number[] {
	return readdirSync('/proc')
		.filter((name) => /^\d+$/.test(name))
		.filter((name) => {
			try {
				const cwd = readlinkSync(`/proc/${name}/cwd`).replace(/ \(deleted\)$/, '');
				return cwd === directory || cwd.startsWith(`${directory}/`);
			} catch {
				return false;
			}
		})
		.map(Number);
}

/** The sandbox as doctor must leave it: its tree (but for `ignore`d paths) and its root's mtime. */
type SandboxState = {tree: Record<string, string>; rootMtime: bigint};

function snapshot(sandbox: Sandbox, ignore: readonly string[] = []): SandboxState {
	const tree = Object.fromEntries(
		Object.entries(fingerprintTree(sandbox.root)).filter(
			([entry]) => !ignore.some((prefix) => entry === prefix || entry.startsWith(`${prefix}/`)),
		),
	);
	return {tree, rootMtime: statSync(sandbox.root, {bigint: true}).mtimeNs};
}

/** What every doctor run must leave: no mounts, no processes, nothing in the sandbox changed. */
async function assertNoTrace(
	t: ExecutionContext,
	sandbox: Sandbox,
	before: SandboxState,
	ignore: readonly string[] = [],
): Promise<void> {
	t.deepEqual(hostMountsUnder(sandbox.root), []);
	t.true(await eventually(() => processesWorkingUnder(sandbox.root).length === 0, 10_000), 'no process left');
	const after = snapshot(sandbox, ignore);
	t.deepEqual(after.tree, before.tree);
	t.is(after.rootMtime, before.rootMtime, "the probe's parent keeps its mtime");
}

/** A store made by a real run (with a layer, a ref and a kept run), its background deletion finished. */
async function makeStore(
	t: ExecutionContext,
	sandbox: Sandbox,
	options: Parameters<typeof scratchRun>[2] = {},
) {
	const promoted = await scratchRun(
		sandbox,
		['--promote', 'base', '--', 'sh', '-c', 'echo made > made'],
		options,
	);
	t.is(promoted.exitCode, 0, String(promoted.stderr));
	const kept = await scratchRun(
		sandbox,
		['--keep', '--base', 'base', '--', 'sh', '-c', 'rm made; echo kept > kept'],
		options,
	);
	t.is(kept.exitCode, 0, String(kept.stderr));
}

test('as root on this host kernel, userns and fuse all pass their trials and auto picks kernel (JSON)', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	const before = snapshot(sandbox);
	const {exitCode, report, stderr} = await doctorJson(sandbox, sandbox.store);
	t.is(exitCode, 0, stderr);
	t.is(stderr, '');
	t.is(report.doctor, 1);
	t.is(report.works, true);
	t.deepEqual(report.host, {kernelRelease: os.release(), euid: 0});
	for (const check of report.checks) {
		t.deepEqual(Object.keys(check).sort(), ['detail', 'group', 'id', 'label', 'ok'], check.id);
		t.true(check.ok === true || check.ok === false || check.ok === null, check.id);
		t.false(check.detail.includes('\n'), check.id);
	}

	const ids = report.checks.map((check) => check.id);
	for (const id of [
		'overlay',
		'root',
		'kernel-version',
		'max-user-namespaces',
		'unprivileged-userns-clone',
		'apparmor-userns',
		'userxattr',
		'fuse',
		'fuse-overlayfs',
		'dev-fuse',
		'store-filesystem',
		'store-d-type',
		'store-user-xattr',
		'store-space',
		'store-writable',
		'store-owner',
		'store-layer-format',
		'layer-limit',
		'mount-options',
		'program-setpriv',
		'program-getfattr',
		'program-fuse-overlayfs',
	]) {
		t.true(ids.includes(id), id);
	}

	t.is(new Set(ids).size, ids.length, 'ids are unique');
	t.is(checkOf(report, 'userxattr')?.ok, true);
	t.regex(
		checkOf(report, 'userxattr')?.detail ?? '',
		/the kernel trial's upper holds a 0\/0 whiteout and a user\.overlay\.opaque=y dir/,
	);
	t.regex(checkOf(report, 'fuse-overlayfs')?.detail ?? '', /^\/usr\/bin\/fuse-overlayfs, version \d+\.\d+/);
	t.regex(checkOf(report, 'dev-fuse')?.detail ?? '', /^mode 0600, owned by 0:0; uid 0 can open it/);
	for (const name of ['kernel', 'userns', 'fuse'] as const) {
		const found = backendOf(report, name);
		t.is(found?.ok, true, name);
		t.is(found?.problem, undefined, name);
		t.like(
			found?.trial ?? {},
			{ok: true, layerFormat: 'overlay-userxattr-1', upper: {written: true, whiteout: true, opaque: true}},
			name,
		);
	}

	t.deepEqual(report.auto, {
		backend: 'kernel',
		passedOver: [],
		factsPick: 'kernel',
		summary: 'auto picks kernel',
	});
	t.like(report.store, {
		path: sandbox.store,
		exists: false,
		filesystem: statfsName(sandbox.root),
		onOverlayfs: false,
		layerFormat: 'overlay-userxattr-1',
		layerFormatSource: 'new',
		dType: true,
		userXattr: true,
		writable: true,
	});
	t.true(report.store.freeBytes > 0);
	t.is(report.store.owner, undefined);
	t.deepEqual(report.limits.fullStackOptionsBytes, {kernel: 3629, fuse: 3608, workspace: 3860});
	t.like(report.probe, {where: 'next-to-store', sameFilesystem: true, removed: true});
	t.is(path.dirname(report.probe.directory), sandbox.root);
	t.false(existsSync(report.probe.directory));
	t.is(report.programs.length, requiredPrograms.length);
	t.false(existsSync(sandbox.store), 'a missing store stays missing');
	await assertNoTrace(t, sandbox, before);
});

test('as root the human output is aligned ok/no lines by section, ending with auto pick', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	const result = await scratch(sandbox, ['doctor', '--store', sandbox.store]);
	t.is(result.exitCode, 0, String(result.stderr));
	const stdout = String(result.stdout);
	const lines = stdout.trimEnd().split('\n');
	t.is(lines.at(-1), 'auto picks kernel');
	t.regex(stdout, /^host \(Linux .*, uid 0\):$/m);
	t.regex(
		stdout,
		new RegExp(`^store ${sandbox.store} \\(does not exist yet; doctor does not make it\\):$`, 'm'),
	);
	t.regex(stdout, /^limits:$/m);
	t.regex(stdout, /^programs:$/m);
	t.regex(stdout, /^backends \(trial runs in .*, removed afterwards\):$/m);
	t.regex(stdout, /^ok {2}kernel overlay {2,}overlay is in \/proc\/filesystems$/m);
	t.regex(
		stdout,
		/^ok {2}kernel {2,}trial run passed in \d+ ms: wrote a file, deleted a lower file, replaced a lower dir; its upper is in the overlay-userxattr-1 layer format$/m,
	);
	t.regex(stdout, /^ok {2}userns {2,}trial run passed/m);
	t.regex(stdout, /^ok {2}fuse {2,}trial run passed/m);
	t.regex(stdout, /^ok {2}programs {2,}all 22 found: setpriv, /m);
	t.regex(stdout, /^ok {2}mount options {2,}a 499-layer run takes 3,629 of mount\(2\)'s 4,095 option bytes/m);
	// Every status line has its detail in the same column.
	const statusLines = lines.filter((line) => /^(ok|no|--) {2}/.test(line));
	t.true(statusLines.length > 20);
	const columns = new Set(
		statusLines.map((line) => /^(?:ok|no|--) {2}\S+(?: \S+)* {2,}/.exec(line)?.[0].length),
	);
	t.is(columns.size, 1, 'one detail column');
});

for (const user of users) {
	test(`an existing store is byte for byte the same after doctor, whose trials ran in its tmp/ (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		await makeStore(t, sandbox);
		t.true(await eventually(() => storeLeftovers(sandbox.store).length === 0), 'the runs were cleaned up');
		const before = snapshot(sandbox);
		const {exitCode, report, stderr} = await doctorJson(sandbox, sandbox.store);
		t.is(exitCode, 0, stderr);
		t.like(report.store, {
			exists: true,
			layerFormatSource: 'recorded',
			writable: true,
			owner: {uid: user === 'root' ? 0 : 65_534, mode: '0700'},
		});
		t.is(checkOf(report, 'store-owner')?.ok, true);
		t.like(report.probe, {where: 'store-tmp', sameFilesystem: true, removed: true});
		t.is(path.dirname(report.probe.directory), path.join(sandbox.store, 'tmp'));
		t.regex(
			path.basename(report.probe.directory),
			/^doctor\.[\da-f]{8}\.\d+\.\d+\.[\da-z]{6}$/,
			'a leased name gc reclaims',
		);
		t.is(report.auto.backend, user === 'root' ? 'kernel' : 'userns');
		await assertNoTrace(t, sandbox, before);
	});
}

test('as nobody without a usable /dev/fuse, userns works and fuse is reported with the /dev/fuse reason and the fix', async (t) => {
	const sandbox = makeSandbox(t, 'nobody');
	const before = snapshot(sandbox);
	const {exitCode, report, stderr} = await doctorJson(sandbox, sandbox.store);
	t.is(exitCode, 0, stderr);
	t.deepEqual(report.host.euid, 65_534);
	t.like(backendOf(report, 'kernel'), {
		ok: false,
		trial: null,
		problem: 'the kernel backend needs root (you are uid 65534)',
	});
	t.like(backendOf(report, 'userns'), {
		ok: true,
		trial: {ok: true, upper: {written: true, whiteout: true, opaque: true}},
	});
	const fuse = backendOf(report, 'fuse');
	t.is(fuse?.ok, false);
	t.is(fuse?.trial, null);
	t.regex(
		fuse?.problem ?? '',
		/^\/dev\/fuse cannot be opened by uid 65534 .*chmod 0666 \/dev\/fuse, or run as root/,
	);
	t.is(checkOf(report, 'dev-fuse')?.ok, false);
	t.regex(
		checkOf(report, 'dev-fuse')?.detail ?? '',
		/^mode 0600, owned by 0:0; uid 65534 cannot open it \(EACCES\): make it mode 0666/,
	);
	t.is(checkOf(report, 'root')?.ok, false);
	t.is(checkOf(report, 'userxattr')?.ok, true);
	t.like(report.auto, {backend: 'userns', factsPick: 'userns', passedOver: []});
	t.false(existsSync(sandbox.store));
	await assertNoTrace(t, sandbox, before);

	const human = await scratch(sandbox, ['doctor', '--store', sandbox.store]);
	t.is(human.exitCode, 0);
	t.regex(
		String(human.stdout),
		/^no {2}kernel {2,}the kernel backend needs root \(you are uid 65534\) \(not tried\)$/m,
	);
	t.regex(
		String(human.stdout),
		/^no {2}fuse {2,}\/dev\/fuse cannot be opened by uid 65534 .* \(not tried\)$/m,
	);
	t.regex(String(human.stdout), /^ok {2}userns {2,}trial run passed/m);
	t.is(String(human.stdout).trimEnd().split('\n').at(-1), 'auto picks userns');
});

test('as nobody with a usable /dev/fuse, the fuse trial passes too', async (t) => {
	const sandbox = makeSandbox(t, 'nobody');
	const before = snapshot(sandbox);
	const {exitCode, report, stderr} = await doctorJson(sandbox, sandbox.store, {setup: fuseSetup(sandbox)});
	t.is(exitCode, 0, stderr);
	t.regex(checkOf(report, 'dev-fuse')?.detail ?? '', /^mode 0666, .*uid 65534 can open it/);
	t.like(backendOf(report, 'fuse'), {
		ok: true,
		trial: {
			ok: true,
			layerFormat: 'overlay-userxattr-1',
			upper: {written: true, whiteout: true, opaque: true},
		},
	});
	t.like(backendOf(report, 'userns'), {ok: true});
	t.is(report.auto.backend, 'userns');
	await assertNoTrace(t, sandbox, before);
});

for (const user of users) {
	test(`a store on overlayfs rules out kernel and userns, fuse passes in the whiteout-files format, auto is fuse (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const container = overlayfsStore(sandbox);
		const backing = path.dirname(container.backing);
		// First a store that does not exist yet: probed beside it, on the overlay, and not made. The
		// overlay's work dir is the test's own mount's business.
		const overlayWork = ['container/work'];
		const before = snapshot(sandbox, overlayWork);
		const missing = await doctorJson(sandbox, container.store, {setup: container.setup});
		t.is(missing.exitCode, 0, missing.stderr);
		t.like(missing.report.store, {
			filesystem: 'overlayfs',
			onOverlayfs: true,
			layerFormat: 'whiteout-files-1',
			exists: false,
		});
		t.like(missing.report.probe, {where: 'next-to-store', sameFilesystem: true, removed: true});
		await assertNoTrace(t, sandbox, before, overlayWork);
		t.deepEqual(readdirSync(backing), [], 'nothing left in the overlay');

		// Then an existing one, made by a real (fuse) run.
		await makeStore(t, {...sandbox, store: container.store}, {setup: container.setup});
		t.true(await eventually(() => storeLeftovers(container.backing).length === 0));
		const beforeStore = fingerprintTree(container.backing);
		const {exitCode, report, stderr} = await doctorJson(sandbox, container.store, {setup: container.setup});
		t.is(exitCode, 0, stderr);
		for (const name of ['kernel', 'userns'] as const) {
			const found = backendOf(report, name);
			t.is(found?.ok, false, name);
			t.is(found?.trial, null, name);
			t.regex(
				found?.problem ?? '',
				user === 'nobody' && name === 'kernel'
					? /needs root/
					: /is on overlayfs \(as inside a container\), which the kernel refuses as an upper dir/,
				name,
			);
		}

		t.like(backendOf(report, 'fuse'), {
			ok: true,
			trial: {
				ok: true,
				layerFormat: 'whiteout-files-1',
				upper: {written: true, whiteout: true, opaque: true},
			},
		});
		t.is(report.auto.backend, 'fuse');
		t.regex(report.auto.summary, /^auto picks fuse, passing over .*on overlayfs[^;]*$/);
		t.is(report.auto.factsPick, 'fuse', 'scratch run makes the same pick');
		t.is(checkOf(report, 'store-filesystem')?.ok, false);
		t.regex(checkOf(report, 'store-filesystem')?.detail ?? '', /^overlayfs: .*auto takes fuse$/);
		t.is(checkOf(report, 'userxattr')?.ok, null);
		t.like(report.store, {exists: true, layerFormatSource: 'recorded', layerFormat: 'whiteout-files-1'});
		t.like(report.probe, {where: 'store-tmp', removed: true});
		t.deepEqual(fingerprintTree(container.backing), beforeStore);
		t.deepEqual(hostMountsUnder(sandbox.root), []);
		t.true(await eventually(() => processesWorkingUnder(sandbox.root).length === 0, 10_000));
	});
}

/**
Run `scratch ARGS` as the sandbox's user in a private mount namespace, after `script` (run as root, with
$DIR set to `directory`) has changed that namespace's view of the host: a test's own NamespaceSetup.
*/
function scratchInNamespace(sandbox: Sandbox, script: string, directory: string, args: string[]) {
	const [file, fileArguments] = cliCommand(sandbox.user, args);
	return execa(
		'unshare',
		[
			'--mount',
			'--propagation',
			'private',
			'sh',
			'-c',
			`set -e\n${script}\nexec "$@"`,
			'sh',
			file,
			...fileArguments,
		],
		{
			reject: false,
			stdin: 'ignore',
			env: {
				DIR: directory,
				...(sandbox.user === 'root'
					? {HOME: '/root'}
					: {HOME: '/nonexistent', PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'}),
			},
		},
	);
}

for (const user of users) {
	test(`no backend works with a store on a read-only file system: exit 1 and each backend says why (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		await makeStore(t, sandbox);
		t.true(await eventually(() => storeLeftovers(sandbox.store).length === 0));
		const before = snapshot(sandbox);
		const readOnly = 'mount --bind "$DIR" "$DIR"\nmount -o remount,bind,ro "$DIR"';
		const result = await scratchInNamespace(sandbox, readOnly, sandbox.store, [
			'doctor',
			'--json',
			'--store',
			sandbox.store,
		]);
		t.is(result.exitCode, 1, String(result.stderr));
		const report = JSON.parse(String(result.stdout)) as DoctorReport;
		t.false(report.works);
		t.is(report.auto.backend, null);
		t.regex(report.auto.summary, /^no backend can isolate a run here: /);
		t.is(checkOf(report, 'store-writable')?.ok, false);
		t.regex(
			checkOf(report, 'store-writable')?.detail ?? '',
			/is not writable by uid \d+ \(read-only file system\)/,
		);
		for (const found of report.backends) {
			t.false(found.ok, found.backend);
			t.regex(
				found.problem ?? '',
				user === 'nobody' && found.backend !== 'userns'
					? /needs root|\/dev\/fuse/
					: /the store .* is not writable by uid \d+ \(read-only file system\); use a store you own on a writable file system with --store DIR/,
				found.backend,
			);
		}

		// The trials ran elsewhere, and say so.
		t.like(report.probe, {where: 'system-tmp', removed: true});
		t.regex(
			report.probe.note ?? '',
			/^the trials ran in .*, not (where the store is|on the store's file system).*read-only file system/,
		);
		await assertNoTrace(t, sandbox, before);

		const human = await scratchInNamespace(sandbox, readOnly, sandbox.store, [
			'doctor',
			'--store',
			sandbox.store,
		]);
		t.is(human.exitCode, 1);
		t.regex(
			String(human.stdout).trimEnd().split('\n').at(-1) ?? '',
			/^no backend can isolate a run here: .*read-only file system/,
		);
		t.regex(String(human.stdout), /^-- {2}trials {2,}the trials ran in /m);
	});

	test(`a full file system fails the trials where the facts look fine: exit 1, and auto says run would fail (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const full = path.join(sandbox.root, 'full');
		mkdirSync(full);
		const before = snapshot(sandbox);
		const fill =
			'mount -t tmpfs -o size=64k,mode=0777 scratch-test-full "$DIR"\nhead -c 1M /dev/zero > "$DIR/fill" 2>/dev/null || :';
		const store = path.join(full, 'store');
		const result = await scratchInNamespace(sandbox, fill, full, ['doctor', '--json', '--store', store]);
		t.is(result.exitCode, 1, String(result.stderr));
		const report = JSON.parse(String(result.stdout)) as DoctorReport;
		const tried = report.backends.filter((found) => found.factsProblem === undefined);
		t.deepEqual(
			tried.map((found) => found.backend),
			user === 'root' ? ['kernel', 'userns', 'fuse'] : ['userns'],
		);
		for (const found of tried) {
			t.false(found.ok);
			t.false(found.trial?.ok);
			t.regex(found.problem ?? '', /^its trial run failed: .*no space left on device/);
		}

		t.is(checkOf(report, 'store-space')?.ok, false);
		t.regex(checkOf(report, 'store-space')?.detail ?? '', /^0 B and .* free; .*free some space/);
		t.is(report.auto.backend, null);
		t.is(report.auto.factsPick, user === 'root' ? 'kernel' : 'userns');
		t.regex(report.auto.summary, /goes by the facts alone and would take (kernel|userns) and fail/);
		t.like(report.probe, {where: 'next-to-store', sameFilesystem: true, removed: true});
		await assertNoTrace(t, sandbox, before);
	});
}

test('a trial that does not finish in time is killed and reported, and leaves no process, mount or file', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	for (const backendName of ['kernel', 'userns', 'fuse'] as const) {
		const probeDirectory = mkdtempSync(path.join(sandbox.root, 'probe-'));
		const marker = uniqueSleep();
		const trial = await runTrial({
			backend: backendName,
			probeDirectory,
			layerFormat: 'overlay-userxattr-1',
			timeoutMs: 1500,
			command: ['sleep', marker],
		});
		t.like(
			trial,
			{ok: false, timedOut: true, problem: 'it did not finish within 1500 ms and was killed'},
			backendName,
		);
		t.true(await eventually(() => processesWith(marker).length === 0), `${backendName}: the command is gone`);
		const removal = await removeProbe({
			directory: probeDirectory,
			where: 'system-tmp',
			sameFilesystem: true,
			notes: [],
		});
		t.deepEqual(removal, {removed: true}, backendName);
		t.false(existsSync(probeDirectory));
		// The trial's background deleter may still be finishing (it waits for the run's namespace to be gone).
		t.true(
			await eventually(() => processesWorkingUnder(probeDirectory).length === 0, 10_000),
			`${backendName}: nothing works there any more`,
		);
	}

	t.deepEqual(hostMountsUnder(sandbox.root), []);
});

test('runDoctor with a timeout no trial can meet reports every trial killed, works: false, and cleans up', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	const before = snapshot(sandbox);
	const report = await runDoctor({store: sandbox.store, trialTimeoutMs: 1});
	t.false(report.works);
	for (const found of report.backends) {
		t.like(found, {ok: false, trial: {ok: false, timedOut: true}}, found.backend);
		t.is(found.problem, 'its trial run failed: it did not finish within 1 ms and was killed');
	}

	t.is(report.auto.backend, null);
	t.is(report.auto.factsPick, 'kernel');
	t.like(report.probe, {removed: true});
	await assertNoTrace(t, sandbox, before);
	t.is(
		renderDoctorReport(report)
			.trimEnd()
			.split('\n')
			.at(-1)
			?.startsWith('no backend can isolate a run here: '),
		true,
	);
});

/** The probe dir a running doctor made in `parent`, once its first trial has begun. */
function probeWithTrial(parent: string, prefix: string, firstTrial: string): string | undefined {
	for (const name of existsSync(parent) ? readdirSync(parent) : []) {
		if (name.startsWith(prefix) && existsSync(path.join(parent, name, firstTrial))) {
			return path.join(parent, name);
		}
	}

	return undefined;
}

/**
Resolve true once a running doctor has begun its first trial (kernel as root, userns as nobody) in a probe
dir under `parent`, false if it exits first. Slow on a loaded machine, so the deadline is generous.
*/
async function duringFirstTrial(
	doctor: ReturnType<typeof scratch>,
	parent: string,
	prefix: string,
	user: 'root' | 'nobody',
): Promise<boolean> {
	let exited = false;
	void doctor.finally(() => {
		exited = true;
	});
	const firstTrial = user === 'root' ? 'kernel' : 'userns';
	const found = () => probeWithTrial(parent, prefix, firstTrial) !== undefined;
	await eventually(() => exited || found(), 60_000);
	return found() && !exited;
}

for (const user of users) {
	test(`doctor interrupted by SIGTERM during a trial removes what it made and exits 143 (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const before = snapshot(sandbox);
		const doctor = scratch(sandbox, ['doctor', '--store', sandbox.store]);
		t.true(
			await duringFirstTrial(doctor, sandbox.root, 'scratch-doctor-', user),
			'caught doctor in its first trial',
		);
		doctor.kill('SIGTERM');
		const result = await doctor;
		t.is(result.exitCode, 143, String(result.stderr));
		t.is(String(result.stderr), 'scratch: doctor was interrupted; what its trials made was removed');
		t.is(String(result.stdout), '');
		t.false(existsSync(sandbox.store));
		await assertNoTrace(t, sandbox, before);
	});

	test(`doctor killed with SIGKILL during a trial leaves only a leased dir in tmp/, which gc removes (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		await makeStore(t, sandbox);
		t.true(await eventually(() => storeLeftovers(sandbox.store).length === 0));
		const tmp = path.join(sandbox.store, 'tmp');
		const doctor = scratch(sandbox, ['doctor', '--store', sandbox.store]);
		t.true(await duringFirstTrial(doctor, tmp, 'doctor.', user), 'caught doctor in its first trial');
		doctor.kill('SIGKILL');
		const result = await doctor;
		t.is(result.signal, 'SIGKILL');
		// The trial's namespace dies with doctor (setpriv --pdeathsig), its mounts with the namespace.
		t.true(
			await eventually(() => processesWorkingUnder(sandbox.root).length === 0, 10_000),
			'no process left',
		);
		t.deepEqual(hostMountsUnder(sandbox.root), []);
		t.deepEqual(readdirSync(tmp).length, 1);
		const gc = await scratch(sandbox, ['gc', '--store', sandbox.store]);
		t.is(gc.exitCode, 0, String(gc.stderr));
		t.true(await eventually(() => storeLeftovers(sandbox.store).length === 0), 'gc removed the probe dir');
		const after = await doctorJson(sandbox, sandbox.store);
		t.is(after.exitCode, 0);
	});
}

test('doctor takes no positional arguments or unknown options (exit 2)', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	for (const args of [
		['doctor', 'extra'],
		['doctor', '--frobnicate'],
	]) {
		const result = await scratch(sandbox, [...args, '--store', sandbox.store]);
		t.is(result.exitCode, 2, args.join(' '));
		t.regex(String(result.stderr), /^scratch: [^\n]+\n?$/);
		t.is(String(result.stdout), '');
	}

	t.false(existsSync(sandbox.store));
});

test('doctor --help says what it checks and its exit statuses', async (t) => {
	const result = await scratch({user: 'root'}, ['doctor', '--help']);
	t.is(result.exitCode, 0);
	const text = String(result.stdout).replaceAll(/\s+/g, ' ');
	t.true(text.includes('--json'));
	t.true(text.includes('tries each backend'));
	t.true(
		text.includes(
			'Exit status: 0 when at least one backend can isolate runs here, 1 when none can, 2 usage error.',
		),
	);
});

// Every test needs the built CLI and a real kernel: fail loudly where they are missing.
test('the machine has what these tests need: root, overlay, fuse-overlayfs', (t) => {
	t.is(process.geteuid?.(), 0);
	t.true(hasFilesystem(readFileSync('/proc/filesystems', 'utf8'), 'overlay'));
	t.true(findPrograms().some((program) => program.name === 'fuse-overlayfs' && program.path !== undefined));
});
