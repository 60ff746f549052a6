import {
	BusyError,
	InvalidPathError,
	LimitError,
	MountError,
	NotFoundError,
	PermissionError,
	type ScratchError,
	UnsupportedEnvironmentError,
} from '../errors.js';
import type {BackendName} from './backend.js';
import {setupFailureMarker} from './namespace-plan.js';

// What fuse-overlayfs always says, failure or not: libfuse passing on a mount flag it has no use for.
const fuseNoise = /^unknown argument ignored: /;

/** Which setup step failed, from the marker line the setup script prints, and everything else it printed. */
export function parseSetupOutput(output: string): {step?: string; subject?: string; detail: string} {
	let step: string | undefined;
	let subject: string | undefined;
	const lines: string[] = [];
	for (const line of output.split('\n')) {
		if (line.startsWith(setupFailureMarker)) {
			const rest = line.slice(setupFailureMarker.length);
			const space = rest.indexOf(' ');
			step = space === -1 ? rest : rest.slice(0, space);
			subject = space === -1 ? '' : rest.slice(space + 1);
		} else if (line.trim() && !line.trim().startsWith('dmesg(1)') && !fuseNoise.test(line.trim())) {
			lines.push(line.trim());
		}
	}

	return {
		...(step === undefined ? {} : {step}),
		...(subject === undefined ? {} : {subject}),
		detail: lines.join(' | ') || 'no message',
	};
}

/**
A known cause of a failed overlay mount: what the kernel (its messages, when scratch can read them), mount(8)
or fuse-overlayfs said, and the one line that explains it. Checked in order; the first match wins.
*/
type MountCause = {
	pattern: RegExp;
	explain(context: {said: string; store: string; backend: BackendName; match: RegExpExecArray}): ScratchError;
};

const otherBackends = (backend: BackendName) =>
	backend === 'fuse' ? 'put the store elsewhere with --store DIR' : 'or use --backend fuse (fuse-overlayfs)';

export const mountCauses: readonly MountCause[] = [
	{
		pattern: /unknown filesystem type 'overlay'/i,
		explain: ({said}) =>
			new UnsupportedEnvironmentError(
				`the kernel cannot mount overlayfs (${said}); load it with 'modprobe overlay'`,
			),
	},
	{
		pattern: /fuse: device not found|unknown filesystem type 'fuse/i,
		explain: ({said}) =>
			new UnsupportedEnvironmentError(`the kernel cannot mount FUSE (${said}); load it with 'modprobe fuse'`),
	},
	{
		pattern: /failed to open \/dev\/fuse: (Permission denied|Operation not permitted)/i,
		explain: ({said}) =>
			new PermissionError(
				`fuse-overlayfs cannot open /dev/fuse (${said}); make it usable with chmod 0666 /dev/fuse (in a container: --device /dev/fuse), or run as root`,
			),
	},
	{
		pattern: /fuse: mount failed: (Operation not permitted|Permission denied)|fusermount3?: mount failed/i,
		explain: ({said}) =>
			new PermissionError(
				`mounting FUSE was refused (${said}): a container without CAP_SYS_ADMIN or a seccomp profile blocks it; run the container with --cap-add SYS_ADMIN --device /dev/fuse`,
			),
	},
	{
		pattern: /not supported as upperdir/,
		explain: ({said, store, backend}) =>
			new MountError(
				`the kernel cannot put the run's upper dir on the store's file system (${said}): the store ${store} is probably on overlayfs (inside a container) or a network file system; put it on ext4, xfs, btrfs or tmpfs with --store DIR, ${otherBackends(backend)}`,
			),
	},
	{
		pattern: /workdir and upperdir must reside under the same mount/,
		explain: ({said, store}) =>
			new MountError(
				`the run's upper and work dirs are on different mounts (${said}): something is mounted inside the store ${store}; unmount it or use another --store`,
			),
	},
	{
		pattern: /maximum fs stacking depth exceeded/,
		explain: ({said}) =>
			new LimitError(
				`overlays nest too deep (${said}): the source tree or the store is on an overlay that is itself on an overlay, and the kernel stacks at most two; run on a source and store outside such mounts, or use --backend fuse`,
			),
	},
	{
		pattern: /too many lower directories/,
		explain: ({said}) =>
			new LimitError(
				`the stack has more layers than the kernel takes (${said}); flatten it with scratch squash NAME --as NEW`,
			),
	},
	{
		pattern: /unescaped trailing colons|Argument list too long|option too long/i,
		explain: ({said}) =>
			new LimitError(
				`the overlay's mount options were cut short (${said}): they hold more than mount(2)'s 4095 bytes; flatten the stack with scratch squash NAME --as NEW`,
			),
	},
	{
		pattern:
			/failed to resolve '([^']*)'|cannot resolve path (\S+)|cannot read lower dirs|special device \S+ does not exist/,
		explain: ({said, match}) => {
			const missing = match[1] ?? match[2];
			const layer =
				missing && /^[a-z\d]{6}$/.test(missing) ? `layer ${missing} of the stack` : 'a lower layer';
			return new NotFoundError(
				`${layer} is missing from the store (${said}): the store was changed by hand or is damaged; run scratch gc, then make the layer again (or pull it)`,
			);
		},
	},
	{
		pattern: /Unknown parameter '([^']+)'|unrecognized mount option "?([^"\s]+)/,
		explain: ({said, match, backend}) =>
			new UnsupportedEnvironmentError(
				`this kernel's overlayfs does not know the mount option ${match[1] ?? match[2]} (${said}); scratch needs Linux 5.11 or later for userxattr: upgrade the kernel, ${backend === 'fuse' ? 'or report this' : 'or use --backend fuse'}`,
			),
	},
	{
		pattern:
			/does not support xattr|failed to set xattr|needs to support d_type|does not support file handles/,
		explain: ({said, store, backend}) =>
			new MountError(
				`the store's file system lacks what an overlay upper dir needs (${said}); put the store ${store} on ext4, xfs, btrfs or tmpfs with --store DIR, ${otherBackends(backend)}`,
			),
	},
	{
		pattern: /Device or resource busy/i,
		explain: ({said}) =>
			new BusyError(
				`the run's upper dir is in use by another mount (${said}); wait for the other run of this workspace to finish, or run scratch gc if none is running`,
			),
	},
	{
		pattern: /Permission denied|Operation not permitted|must be superuser|cannot mount .* read-only/i,
		explain: ({said, backend}) =>
			new PermissionError(
				backend === 'kernel'
					? `the overlay mount was refused (${said}): a container or security module (AppArmor, SELinux, seccomp) forbids mounting here; run scratch doctor to see what works, or use --backend fuse`
					: `the overlay mount was refused (${said}): the source tree or a layer may not be readable by you, or mounting in a user namespace is forbidden here; check the source's permissions and run scratch doctor`,
			),
	},
];

// The kernel's messages about the overlay, or mount's and fuse-overlayfs's own text: the first that
// names a cause.
function explainMountFailure(
	detail: string,
	kernelMessages: readonly string[],
	backend: BackendName,
	store: string,
): ScratchError | undefined {
	// The newest first: the kernel's log is shared, and the last error is the likeliest to be ours.
	for (const said of [...kernelMessages.map((message) => `kernel: ${message}`).reverse(), detail]) {
		for (const cause of mountCauses) {
			const match = cause.pattern.exec(said);
			if (match) {
				return cause.explain({said, store, backend, match});
			}
		}
	}

	return undefined;
}

/**
The kernel's messages that may be about a mount with these options: one that names a path or an option
(the upper dir, a lower layer, a parameter) must name one of ours. Others' failing mounts at the same
moment are left out.
*/
export function kernelMessagesAbout(messages: readonly string[], options: string): string[] {
	return messages.filter((message) => {
		const named =
			/filesystem on (\S+) not supported|failed to resolve '([^']*)'|Unknown parameter '([^']*)'/.exec(
				message,
			);
		const token = named?.[1] ?? named?.[2] ?? named?.[3];
		return token === undefined || options.includes(token);
	});
}

/**
Turn what the namespace setup printed before failing into one clear line. The setup names the step
that failed; the raw text (unshare's or mount's own message, and the kernel's when scratch could read
it: as root) is kept so nothing is hidden.
*/
export function translateSetupFailure(
	output: string,
	backend: BackendName,
	store: string,
	kernelMessages: readonly string[] = [],
	{sourceOnOverlayfs = false}: {sourceOnOverlayfs?: boolean} = {},
): ScratchError {
	const {step, subject, detail} = parseSetupOutput(output);
	switch (step) {
		case 'source': {
			return new NotFoundError(
				`the source tree ${subject} could not be opened when the run started (${detail}); check --src`,
			);
		}

		case 'mount-point': {
			return new InvalidPathError(
				`mount point ${subject} is missing in the run (${detail}); name an existing directory with --tmpfs`,
			);
		}

		case 'layers': {
			return new MountError(
				`cannot enter the store's layers dir ${subject} when the run started (${detail}); check the store with scratch gc`,
			);
		}

		case 'touch': {
			return new MountError(
				`--touch could not copy ${subject} up into the writable layer (${detail}); check that the file is readable and writable in the view, or drop that --touch`,
			);
		}

		case 'tmpfs': {
			return new MountError(`cannot mount --tmpfs ${subject} (${detail})`);
		}

		case 'cwd': {
			return new InvalidPathError(
				`cannot enter the working directory ${subject} inside the view (${detail}); run from the source tree or pass --src`,
			);
		}

		case 'overlay': {
			const explained = explainMountFailure(detail, kernelMessages, backend, store);
			if (explained) {
				return explained;
			}

			// Without the kernel's words (not root), the likeliest cause a source on overlayfs gives.
			if (sourceOnOverlayfs && backend !== 'fuse') {
				return new LimitError(
					`mounting the overlay failed (${detail}): the source tree is itself on overlayfs, and the kernel stacks overlays at most two deep; run on a source outside such mounts, or use --backend fuse`,
				);
			}

			return new MountError(
				`mounting the overlay failed (${detail}); the store ${store} must be on a local filesystem with xattr and d_type support (ext4, xfs, btrfs, tmpfs), not on overlayfs, NFS or FUSE`,
			);
		}

		default: {
			break;
		}
	}

	// No step marker: the namespace itself could not be made (unshare, setpriv or sh failed).
	if (/unshare|uid_map|gid_map|setgroups|Operation not permitted/i.test(detail)) {
		const hint =
			backend === 'userns'
				? 'unprivileged user namespaces are blocked here; run as root (--backend kernel) or allow user namespaces'
				: 'creating namespaces needs CAP_SYS_ADMIN; run as root or use --backend userns';
		return new PermissionError(`cannot create the run's namespaces (${detail}): ${hint}`);
	}

	return new MountError(`the run's namespace could not be set up (${detail})`);
}
