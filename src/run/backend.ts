import {accessSync, constants, readFileSync, statfsSync} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {UnsupportedEnvironmentError, UsageError} from '../errors.js';
import {type LayerFormat, layerFormats} from '../store/layer-format.js';
import {layerFormatFor, nearestExistingDirectory} from '../store/store.js';
import {findExecutableOrUndefined, programPackages} from '../system/executables.js';
import {fuseToolNames} from './namespace-plan.js';

/**
How a run gets its overlay: `kernel` mounts kernel overlayfs as real root, `userns` as root of a user
namespace, `fuse` runs fuse-overlayfs (as root, or as root of a user namespace).
*/
export type BackendName = 'kernel' | 'userns' | 'fuse';
/** What callers may ask for; `auto` picks the first one that works and never a non-isolating one. */
export type BackendChoice = 'auto' | BackendName;

export const backendChoices: readonly BackendChoice[] = ['auto', 'kernel', 'userns', 'fuse'];

/** Facts about the host that decide which backends can work; read from /proc, overridable in tests. */
export type HostFacts = {
	euid: number;
	kernelRelease: string;
	filesystems: string;
	maxUserNamespaces: number | undefined;
	unprivilegedUsernsClone: number | undefined;
	apparmorRestrictsUserns: number | undefined;
	/** Absolute path of fuse-overlayfs, when installed. */
	fuseOverlayfs?: string | undefined;
	/** Whether /dev/fuse exists and this user may open it for reading and writing. */
	devFuse?: 'ok' | 'missing' | 'denied';
	/** Programs the fuse backend's teardown needs that are not installed. */
	missingFusePrograms?: string[];
};

/** What the fuse backend's teardown runs besides fuse-overlayfs (the setup script's fuse programs). */
export const fuseTeardownPrograms = fuseToolNames
	.map(([, program]) => program)
	.filter((program) => program !== 'fuse-overlayfs');

/** Facts about the store a run would use: where it is, what it sits on, how its layers are kept. */
export type StoreFacts = {
	/** The store's directory (it need not exist yet). */
	root: string;
	/** The file system it is on (or would be, from its nearest existing ancestor), e.g. `ext4`. */
	filesystem: string;
	/** Its layers' format: the one recorded, or the one a new store there would get. */
	layerFormat: LayerFormat;
};

function readNumber(file: string): number | undefined {
	try {
		return Number(readFileSync(file, 'utf8').trim());
	} catch {
		return undefined;
	}
}

function devFuseAccess(): 'ok' | 'missing' | 'denied' {
	try {
		accessSync('/dev/fuse', constants.R_OK | constants.W_OK);
		return 'ok';
	} catch (error) {
		return (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : 'denied';
	}
}

/**
Read the facts from this host. The fuse facts (a dozen program lookups and /dev/fuse) are read only
when something asks for them: a run with a kernel backend never does.
*/
export function readHostFacts(): HostFacts {
	let filesystems = '';
	try {
		filesystems = readFileSync('/proc/filesystems', 'utf8');
	} catch {}

	let fuse: Pick<HostFacts, 'fuseOverlayfs' | 'devFuse' | 'missingFusePrograms'> | undefined;
	const readFuseFacts = () =>
		(fuse ??= {
			fuseOverlayfs: findExecutableOrUndefined('fuse-overlayfs'),
			devFuse: devFuseAccess(),
			missingFusePrograms: fuseTeardownPrograms.filter((program) => !findExecutableOrUndefined(program)),
		});
	return {
		euid: process.geteuid?.() ?? -1,
		kernelRelease: os.release(),
		filesystems,
		maxUserNamespaces: readNumber('/proc/sys/user/max_user_namespaces'),
		unprivilegedUsernsClone: readNumber('/proc/sys/kernel/unprivileged_userns_clone'),
		apparmorRestrictsUserns: readNumber('/proc/sys/kernel/apparmor_restrict_unprivileged_userns'),
		get fuseOverlayfs() {
			return readFuseFacts().fuseOverlayfs;
		},
		get devFuse() {
			return readFuseFacts().devFuse;
		},
		get missingFusePrograms() {
			return readFuseFacts().missingFusePrograms;
		},
	};
}

// statfs(2) magic numbers of the file systems scratch has something to say about.
const filesystemNames = new Map<number, string>([
	[0xef_53, 'ext4'],
	[0x58_46_53_42, 'xfs'],
	[0x91_23_68_3e, 'btrfs'],
	[0x01_02_19_94, 'tmpfs'],
	[0x2f_c1_2f_c1, 'zfs'],
	[0xf2_f5_20_10, 'f2fs'],
	[0x79_4c_76_30, 'overlayfs'],
	[0x69_69, 'nfs'],
	[0xff_53_4d_42, 'cifs'],
	[0xfe_53_4d_42, 'smb2'],
	[0x65_73_55_46, 'fuse'],
	[0x01_02_19_97, '9p'],
	[0x4d_44, 'vfat'],
	[0x20_11_ba_b0, 'exfat'],
	[0x73_71_73_68, 'squashfs'],
	[0xe0_f5_e1_e2, 'erofs'],
	[0x96_60, 'iso9660'],
	[0xf1_5f, 'ecryptfs'],
	[0x85_84_58_f6, 'ramfs'],
]);

/** The name of the file system a directory is on, from statfs(2); `0x...` for one scratch does not know. */
export function filesystemOf(directory: string): string {
	const {type} = statfsSync(directory);
	return filesystemNames.get(type) ?? `0x${type.toString(16)}`;
}

/** Read the facts of a store (existing or not): its file system and its layers' format. */
export function readStoreFacts(storeRoot: string): StoreFacts {
	const root = path.resolve(storeRoot);
	const existing = nearestExistingDirectory(root);
	let layerFormat: LayerFormat | undefined;
	try {
		const record = JSON.parse(readFileSync(path.join(root, 'scratch-store.json'), 'utf8')) as {
			layerFormat?: unknown;
		};
		if (layerFormats.includes(record.layerFormat as LayerFormat)) {
			layerFormat = record.layerFormat as LayerFormat;
		}
	} catch {}

	return {root, filesystem: filesystemOf(existing), layerFormat: layerFormat ?? layerFormatFor(existing)};
}

// Where kernel overlayfs cannot put an upper dir, and why: the kernel refuses these as upperdir.
const kernelUpperProblems = new Map<string, string>([
	['overlayfs', 'is on overlayfs (as inside a container), which the kernel refuses as an upper dir'],
	['nfs', 'is on NFS, which the kernel refuses as an upper dir'],
	['cifs', 'is on CIFS, which the kernel refuses as an upper dir'],
	['smb2', 'is on SMB, which the kernel refuses as an upper dir'],
	['fuse', 'is on a FUSE file system, which the kernel refuses as an upper dir'],
	['9p', 'is on 9p, which the kernel refuses as an upper dir'],
	['vfat', 'is on FAT, which has no owners or extended attributes'],
	['exfat', 'is on exFAT, which has no owners or extended attributes'],
	['ecryptfs', 'is on eCryptfs, which the kernel refuses as an upper dir'],
]);

// Where no backend can keep a run's writes.
const readOnlyFilesystems = new Set(['squashfs', 'erofs', 'iso9660']);

function kernelAtLeast(release: string, major: number, minor: number): boolean {
	const [releaseMajor = 0, releaseMinor = 0] = release.split(/[.-]/).map(Number);
	return releaseMajor > major || (releaseMajor === major && releaseMinor >= minor);
}

function hasFilesystem(facts: HostFacts, name: string): boolean {
	return new RegExp(`\\t${name}$`, 'm').test(facts.filesystems);
}

// What a user namespace needs here; `minimum` is the kernel that can mount the backend's fs inside one.
function usernsProblem(
	facts: HostFacts,
	minimum: {major: number; minor: number; what: string},
): string | undefined {
	if (!kernelAtLeast(facts.kernelRelease, minimum.major, minimum.minor)) {
		return `${minimum.what} in a user namespace needs Linux ${minimum.major}.${minimum.minor} or later (this is ${facts.kernelRelease})`;
	}

	if (facts.maxUserNamespaces === 0) {
		return 'user namespaces are disabled (user.max_user_namespaces = 0); raise it with sysctl';
	}

	if (facts.euid !== 0 && facts.unprivilegedUsernsClone === 0) {
		return 'unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0); enable them with sysctl';
	}

	if (facts.euid !== 0 && facts.apparmorRestrictsUserns === 1) {
		return 'AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1); allow them with sysctl or an AppArmor profile';
	}

	return undefined;
}

function storeProblem(backend: BackendName, store: StoreFacts | undefined): string | undefined {
	if (!store) {
		return undefined;
	}

	if (readOnlyFilesystems.has(store.filesystem)) {
		return `the store ${store.root} is on ${store.filesystem}, which is read-only; put the store on a writable file system with --store DIR`;
	}

	if (backend === 'fuse') {
		return undefined;
	}

	const upperProblem = kernelUpperProblems.get(store.filesystem);
	if (upperProblem) {
		return `the store ${store.root} ${upperProblem}`;
	}

	if (store.layerFormat === 'whiteout-files-1') {
		return `the store ${store.root} keeps its layers' whiteouts as .wh. files (it was made on overlayfs), which only fuse-overlayfs reads`;
	}

	return undefined;
}

/** Why a backend cannot work here (for this store, when given), or undefined when it can. */
export function backendProblem(
	backend: BackendName,
	facts: HostFacts,
	store?: StoreFacts,
): string | undefined {
	if (backend === 'fuse') {
		if (!hasFilesystem(facts, 'fuse')) {
			return "the kernel has no FUSE (fuse is not in /proc/filesystems); load it with 'modprobe fuse'";
		}

		if (!facts.fuseOverlayfs) {
			return 'fuse-overlayfs is not installed; install the fuse-overlayfs package';
		}

		const missing = facts.missingFusePrograms ?? [];
		if (missing.length > 0) {
			const packages = [...new Set(missing.map((program) => programPackages[program] ?? program))];
			return `the fuse backend also runs ${missing.join(', ')}, which ${missing.length === 1 ? 'is' : 'are'} not installed; install ${packages.join(', ')}`;
		}

		if (facts.devFuse === 'missing') {
			return '/dev/fuse does not exist (in a container, pass the device in: docker run --device /dev/fuse)';
		}

		if (facts.devFuse === 'denied') {
			return `/dev/fuse cannot be opened by uid ${facts.euid} (it is usually mode 0666; make it so with chmod 0666 /dev/fuse, or run as root)`;
		}

		const namespaceProblem =
			facts.euid === 0 ? undefined : usernsProblem(facts, {major: 4, minor: 18, what: 'FUSE'});
		return namespaceProblem ?? storeProblem(backend, store);
	}

	if (!hasFilesystem(facts, 'overlay')) {
		return "the kernel has no overlay filesystem (not in /proc/filesystems); load it with 'modprobe overlay'";
	}

	if (backend === 'kernel') {
		return facts.euid === 0
			? storeProblem(backend, store)
			: `the kernel backend needs root (you are uid ${facts.euid})`;
	}

	return usernsProblem(facts, {major: 5, minor: 11, what: 'overlay'}) ?? storeProblem(backend, store);
}

/** The backend a run gets, and why `auto` passed over the ones before it. */
export type BackendSelection = {
	backend: BackendName;
	/** For `auto`: each backend tried before the one picked, and why it could not work. */
	passedOver: Array<{backend: BackendName; problem: string}>;
};

/** Why `auto` passed over backends, in one line: each distinct problem once, with the backends it stops. */
export function describePassedOver(passedOver: BackendSelection['passedOver']): string {
	const byProblem = new Map<string, BackendName[]>();
	for (const {backend, problem} of passedOver) {
		byProblem.set(problem, [...(byProblem.get(problem) ?? []), backend]);
	}

	return [...byProblem]
		.map(([problem, backends]) => (byProblem.size === 1 ? problem : `${backends.join(' and ')}: ${problem}`))
		.join('; ');
}

/** The order `auto` tries: kernel (root only) > userns > fuse. */
export function autoOrder(facts: HostFacts): BackendName[] {
	return facts.euid === 0 ? ['kernel', 'userns', 'fuse'] : ['userns', 'fuse'];
}

/** Pick the backend for a run and say why others were passed over, or explain why none can isolate it. */
export function chooseBackend(
	choice: string,
	facts: HostFacts = readHostFacts(),
	store?: StoreFacts,
): BackendSelection {
	if (!backendChoices.includes(choice as BackendChoice)) {
		throw new UsageError(`unknown backend '${choice}'; use one of ${backendChoices.join(', ')}`);
	}

	if (choice !== 'auto') {
		const backend = choice as BackendName;
		const problem = backendProblem(backend, facts, store);
		if (problem) {
			const others = autoOrder(facts)
				.filter((other) => other !== backend && !backendProblem(other, facts, store))
				.map((other) => `--backend ${other}`);
			const hint =
				others.length > 0 ? `try ${others.join(' or ')}` : 'run scratch doctor to see what works here';
			throw new UnsupportedEnvironmentError(`backend ${backend} cannot run here: ${problem}; ${hint}`);
		}

		return {backend, passedOver: []};
	}

	const passedOver: BackendSelection['passedOver'] = [];
	for (const backend of autoOrder(facts)) {
		const problem = backendProblem(backend, facts, store);
		if (!problem) {
			return {backend, passedOver};
		}

		passedOver.push({backend, problem});
	}

	throw new UnsupportedEnvironmentError(
		`no backend can isolate a run on this host (${passedOver.map(({backend, problem}) => `${backend}: ${problem}`).join('; ')}); scratch never runs without isolation`,
	);
}

/** Pick the backend for a run, or explain in one line why none can isolate it. */
export function selectBackend(
	choice: string,
	facts: HostFacts = readHostFacts(),
	store?: StoreFacts,
): BackendName {
	return chooseBackend(choice, facts, store).backend;
}

/** Whether a backend runs its namespace as root of a user namespace (not real root). */
export function usesUserNamespace(backend: BackendName, euid: number): boolean {
	return backend === 'userns' || (backend === 'fuse' && euid !== 0);
}
