import {readFileSync} from 'node:fs';
import os from 'node:os';
import {UnsupportedEnvironmentError, UsageError} from '../errors.js';

/** How a run gets its overlay: `kernel` mounts as real root, `userns` as root of a user namespace. */
export type BackendName = 'kernel' | 'userns';
/** What callers may ask for; `auto` picks the first one that works and never a non-isolating one. */
export type BackendChoice = 'auto' | BackendName;

export const backendChoices: readonly BackendChoice[] = ['auto', 'kernel', 'userns'];

/** Facts about the host that decide which backends can work; read from /proc, overridable in tests. */
export type HostFacts = {
	euid: number;
	kernelRelease: string;
	filesystems: string;
	maxUserNamespaces: number | undefined;
	unprivilegedUsernsClone: number | undefined;
	apparmorRestrictsUserns: number | undefined;
};

function readNumber(file: string): number | undefined {
	try {
		return Number(readFileSync(file, 'utf8').trim());
	} catch {
		return undefined;
	}
}

/** Read the facts from this host. */
export function readHostFacts(): HostFacts {
	let filesystems = '';
	try {
		filesystems = readFileSync('/proc/filesystems', 'utf8');
	} catch {}

	return {
		euid: process.geteuid?.() ?? -1,
		kernelRelease: os.release(),
		filesystems,
		maxUserNamespaces: readNumber('/proc/sys/user/max_user_namespaces'),
		unprivilegedUsernsClone: readNumber('/proc/sys/kernel/unprivileged_userns_clone'),
		apparmorRestrictsUserns: readNumber('/proc/sys/kernel/apparmor_restrict_unprivileged_userns'),
	};
}

function kernelAtLeast(release: string, major: number, minor: number): boolean {
	const [releaseMajor = 0, releaseMinor = 0] = release.split(/[.-]/).map(Number);
	return releaseMajor > major || (releaseMajor === major && releaseMinor >= minor);
}

/** Why a backend cannot work here, or undefined when it can. */
export function backendProblem(backend: BackendName, facts: HostFacts): string | undefined {
	if (!/\toverlay$/m.test(facts.filesystems)) {
		return "the kernel has no overlay filesystem (not in /proc/filesystems); load it with 'modprobe overlay'";
	}

	if (backend === 'kernel') {
		return facts.euid === 0 ? undefined : `the kernel backend needs root (you are uid ${facts.euid})`;
	}

	if (!kernelAtLeast(facts.kernelRelease, 5, 11)) {
		return `overlay in a user namespace needs Linux 5.11 or later (this is ${facts.kernelRelease})`;
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

/** Pick the backend for a run, or explain in one line why none can isolate it. */
export function selectBackend(choice: string, facts: HostFacts = readHostFacts()): BackendName {
	if (!backendChoices.includes(choice as BackendChoice)) {
		throw new UsageError(`unknown backend '${choice}'; use one of ${backendChoices.join(', ')}`);
	}

	if (choice !== 'auto') {
		const backend = choice as BackendName;
		const problem = backendProblem(backend, facts);
		if (problem) {
			const other = backend === 'kernel' ? 'userns' : 'kernel';
			throw new UnsupportedEnvironmentError(
				`backend ${backend} cannot run here: ${problem}; try --backend ${other} or --backend auto`,
			);
		}

		return backend;
	}

	const order: BackendName[] = facts.euid === 0 ? ['kernel', 'userns'] : ['userns'];
	const problems: string[] = [];
	for (const backend of order) {
		const problem = backendProblem(backend, facts);
		if (!problem) {
			return backend;
		}

		problems.push(`${backend}: ${problem}`);
	}

	throw new UnsupportedEnvironmentError(
		`no backend can isolate a run on this host (${problems.join('; ')}); scratch never runs without isolation`,
	);
}
