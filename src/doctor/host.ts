import {spawn} from 'node:child_process';
import {closeSync, constants, openSync, statSync} from 'node:fs';
import type {HostFacts} from '../run/backend.js';
import type {DoctorCheck} from './report.js';

/** What doctor found out about /dev/fuse by opening it, as this user. */
export type DevFuseFacts =
	| {state: 'missing'}
	| {state: 'open' | 'denied'; mode: number; uid: number; gid: number; error?: string};

/** Open /dev/fuse for reading and writing (and close it at once): the only sure test. */
export function readDevFuse(device = '/dev/fuse'): DevFuseFacts {
	let info: ReturnType<typeof statSync>;
	try {
		info = statSync(device);
	} catch {
		return {state: 'missing'};
	}

	const owner = {mode: Number(info.mode) & 0o7777, uid: Number(info.uid), gid: Number(info.gid)};
	try {
		closeSync(openSync(device, constants.O_RDWR));
		return {state: 'open', ...owner};
	} catch (error) {
		return {state: 'denied', ...owner, error: (error as NodeJS.ErrnoException).code ?? String(error)};
	}
}

/** The version in `fuse-overlayfs --version`'s output (`fuse-overlayfs: version 1.10`), if any. */
export function parseFuseOverlayfsVersion(output: string): string | undefined {
	return /^fuse-overlayfs:\s+version\s+(\S+)/m.exec(output)?.[1];
}

/** Run `fuse-overlayfs --version` (it prints to stdout or stderr, depending on the version); give up after a while. */
export async function readFuseOverlayfsVersion(
	executable: string,
	timeoutMs = 5000,
): Promise<string | undefined> {
	return new Promise((resolve) => {
		const child = spawn(executable, ['--version'], {stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs});
		let output = '';
		child.stdout.on('data', (chunk: Buffer) => {
			output += chunk.toString();
		});
		child.stderr.on('data', (chunk: Buffer) => {
			output += chunk.toString();
		});
		child.on('error', () => {
			resolve(undefined);
		});
		child.on('close', () => {
			resolve(parseFuseOverlayfsVersion(output));
		});
	});
}

/** Whether /proc/filesystems lists a file system (exactly that name). */
export function hasFilesystem(filesystems: string, name: string): boolean {
	return filesystems.split('\n').some((line) => line.split('\t').at(-1)?.trim() === name);
}

/** Whether a kernel release (`6.8.0-45-generic`) is at least major.minor. */
export function kernelAtLeast(release: string, major: number, minor: number): boolean {
	const [releaseMajor = 0, releaseMinor = 0] = release.split(/[.-]/).map(Number);
	return releaseMajor > major || (releaseMajor === major && releaseMinor >= minor);
}

/** `0600` for a mode's permission bits. */
export function formatMode(mode: number): string {
	return (mode & 0o7777).toString(8).padStart(4, '0');
}

function devFuseCheck(devFuse: DevFuseFacts, euid: number): DoctorCheck {
	const check = {id: 'dev-fuse', group: 'host', label: '/dev/fuse'} as const;
	if (devFuse.state === 'missing') {
		return {
			...check,
			ok: false,
			detail:
				'/dev/fuse does not exist; load FUSE (modprobe fuse), or in a container pass the device in (docker run --device /dev/fuse)',
		};
	}

	const owner = `mode ${formatMode(devFuse.mode)}, owned by ${devFuse.uid}:${devFuse.gid}`;
	if (devFuse.state === 'open') {
		return {...check, ok: true, detail: `${owner}; uid ${euid} can open it for reading and writing`};
	}

	return {
		...check,
		ok: false,
		detail: `${owner}; uid ${euid} cannot open it (${devFuse.error ?? 'denied'}): make it mode 0666 (chmod 0666 /dev/fuse, as most distributions do) or run as root`,
	};
}

/** Checks of the host from its facts (pure). `userxattr` comes from the trials, see doctor.ts. */
export function hostChecks(
	facts: HostFacts,
	{devFuse, fuseOverlayfsVersion}: {devFuse: DevFuseFacts; fuseOverlayfsVersion: string | undefined},
): DoctorCheck[] {
	const root = facts.euid === 0;
	const checks: DoctorCheck[] = [];
	const add = (id: string, label: string, ok: boolean | null, detail: string) => {
		checks.push({id, group: 'host', label, ok, detail});
	};

	const overlay = hasFilesystem(facts.filesystems, 'overlay');
	add(
		'overlay',
		'kernel overlay',
		overlay,
		overlay
			? 'overlay is in /proc/filesystems'
			: "overlay is not in /proc/filesystems; load it with 'modprobe overlay' (package kmod)",
	);
	add(
		'root',
		'root',
		root,
		root
			? 'running as uid 0: the kernel backend can be used'
			: `running as uid ${facts.euid}: the kernel backend needs root (userns and fuse do not)`,
	);

	const userns511 = kernelAtLeast(facts.kernelRelease, 5, 11);
	add(
		'kernel-version',
		'Linux 5.11+',
		userns511,
		userns511
			? `Linux ${facts.kernelRelease}: overlay can be mounted in a user namespace`
			: `Linux ${facts.kernelRelease}: overlay in a user namespace needs 5.11 or later (FUSE in one: 4.18); upgrade the kernel${root ? ' or use the kernel backend' : ''}`,
	);

	if (facts.maxUserNamespaces === undefined) {
		add(
			'max-user-namespaces',
			'user namespaces',
			false,
			'/proc/sys/user/max_user_namespaces is missing: this kernel has no user namespaces (CONFIG_USER_NS)',
		);
	} else {
		add(
			'max-user-namespaces',
			'user namespaces',
			facts.maxUserNamespaces > 0,
			facts.maxUserNamespaces > 0
				? `user.max_user_namespaces = ${facts.maxUserNamespaces}`
				: 'user.max_user_namespaces = 0: user namespaces are disabled; raise it with sysctl -w user.max_user_namespaces=15000',
		);
	}

	const clone = facts.unprivilegedUsernsClone;
	add(
		'unprivileged-userns-clone',
		'unprivileged userns',
		clone !== 0 || root,
		clone === undefined
			? 'kernel.unprivileged_userns_clone is not present (only some Debian kernels have it): nothing restricts user namespaces'
			: clone !== 0
				? `kernel.unprivileged_userns_clone = ${clone}`
				: root
					? 'kernel.unprivileged_userns_clone = 0, which does not restrict root'
					: 'kernel.unprivileged_userns_clone = 0: only root may make user namespaces; enable them with sysctl -w kernel.unprivileged_userns_clone=1',
	);

	const apparmor = facts.apparmorRestrictsUserns;
	add(
		'apparmor-userns',
		'AppArmor userns',
		apparmor !== 1 || root,
		apparmor === undefined
			? 'kernel.apparmor_restrict_unprivileged_userns is not present: AppArmor does not restrict user namespaces'
			: apparmor !== 1
				? `kernel.apparmor_restrict_unprivileged_userns = ${apparmor}`
				: root
					? 'kernel.apparmor_restrict_unprivileged_userns = 1, which does not restrict root'
					: 'kernel.apparmor_restrict_unprivileged_userns = 1: AppArmor keeps unprivileged users from using user namespaces; allow them with sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for node granting userns',
	);

	const fuse = hasFilesystem(facts.filesystems, 'fuse');
	add(
		'fuse',
		'FUSE',
		fuse,
		fuse ? 'fuse is in /proc/filesystems' : "fuse is not in /proc/filesystems; load it with 'modprobe fuse'",
	);
	add(
		'fuse-overlayfs',
		'fuse-overlayfs',
		Boolean(facts.fuseOverlayfs),
		facts.fuseOverlayfs
			? `${facts.fuseOverlayfs}, ${fuseOverlayfsVersion ? `version ${fuseOverlayfsVersion}` : 'version unknown (fuse-overlayfs --version did not say)'}`
			: 'not installed; install the fuse-overlayfs package',
	);
	checks.push(devFuseCheck(devFuse, facts.euid));
	return checks;
}
