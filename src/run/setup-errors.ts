import {
	InvalidPathError,
	MountError,
	NotFoundError,
	PermissionError,
	type ScratchError,
	UnsupportedEnvironmentError,
} from '../errors.js';
import type {BackendName} from './backend.js';
import {setupFailureMarker} from './namespace-plan.js';

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
		} else if (line.trim() && !line.trim().startsWith('dmesg(1)')) {
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
Turn what the namespace setup printed before failing into one clear line. The setup names the step
that failed; the raw text (unshare's or mount's own message) is kept so nothing is hidden.
*/
export function translateSetupFailure(output: string, backend: BackendName, store: string): ScratchError {
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
			if (/unknown filesystem type/i.test(detail)) {
				return new UnsupportedEnvironmentError(
					`the kernel cannot mount overlayfs (${detail}); load it with 'modprobe overlay'`,
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
