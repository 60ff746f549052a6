import {
	InvalidPathError,
	MountError,
	NotFoundError,
	PermissionError,
	type ScratchError,
	UnsupportedEnvironmentError,
} from '../errors.js';
import type {BackendName} from './backend.js';

/**
Turn what the namespace setup printed before failing into one clear line. The raw text (unshare's or
mount's own message) is kept at the end so nothing is hidden.
*/
export function translateSetupFailure(output: string, backend: BackendName, store: string): ScratchError {
	const lines = output
		.split('\n')
		.map((line) => line.trim())
		.filter((line) => line && !line.startsWith('dmesg(1)'));
	const detail = lines.join(' | ') || 'no message';

	if (
		/unshare failed|cannot open \/proc\/self\/uid_map|write failed \/proc\/self\/(uid|gid)_map/i.test(output)
	) {
		const hint =
			backend === 'userns'
				? 'unprivileged user namespaces are blocked here; run as root (--backend kernel) or allow user namespaces'
				: 'creating namespaces needs CAP_SYS_ADMIN; run as root or use --backend userns';
		return new PermissionError(`cannot create the run's namespaces (${detail}): ${hint}`);
	}

	if (/tmpfs/.test(output)) {
		return new MountError(`cannot mount a --tmpfs (${detail}); name a directory that exists`);
	}

	if (/cannot open .*No such file|cannot open .*nonexistent/i.test(output)) {
		return new NotFoundError(`the source tree disappeared before the run started (${detail}); check --src`);
	}

	if (/can't cd|cd: /.test(output)) {
		return new InvalidPathError(
			`cannot enter the working directory inside the view (${detail}); run from the source tree or pass --src`,
		);
	}

	if (/unknown filesystem type|overlay.*not supported/i.test(output)) {
		return new UnsupportedEnvironmentError(
			`the kernel cannot mount overlayfs (${detail}); load it with 'modprobe overlay'`,
		);
	}

	if (/mount/.test(output)) {
		return new MountError(
			`mounting the overlay failed (${detail}); the store ${store} must be on a local filesystem with xattr and d_type support (ext4, xfs, btrfs, tmpfs), not on overlayfs, NFS or FUSE`,
		);
	}

	return new MountError(`the run's namespace could not be set up (${detail})`);
}
