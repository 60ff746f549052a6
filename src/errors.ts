/**
Every error scratch raises on purpose is a `ScratchError`: `message` is one line that says what failed,
why, and what to do; `code` is stable and machine-readable. Anything else that escapes is a bug.
*/
export class ScratchError extends Error {
	override name = 'ScratchError';
	/** Stable identifier, for example `ERR_SCRATCH_NOT_FOUND`. */
	readonly code: string = 'ERR_SCRATCH';

	constructor(message: string, options?: {cause?: unknown}) {
		super(message, options);
	}
}

/** The arguments do not make sense: an unknown or repeated flag, a missing command. */
export class UsageError extends ScratchError {
	override name = 'UsageError';
	override readonly code: string = 'ERR_SCRATCH_USAGE';
}

/** A snapshot name breaks the naming rules (a usage error: exit status 2). */
export class InvalidNameError extends UsageError {
	override name = 'InvalidNameError';
	override readonly code = 'ERR_SCRATCH_INVALID_NAME';
}

/** A name to be created exists already. */
export class ExistsError extends ScratchError {
	override name = 'ExistsError';
	override readonly code = 'ERR_SCRATCH_EXISTS';
}

/** What was asked for is in use by someone else: a workspace with a run in progress. */
export class BusyError extends ScratchError {
	override name = 'BusyError';
	override readonly code = 'ERR_SCRATCH_BUSY';
}

/** A limit of the kernel or of scratch would be passed: too many layers, too long a mount option. */
export class LimitError extends ScratchError {
	override name = 'LimitError';
	override readonly code = 'ERR_SCRATCH_LIMIT';
}

/** Something named on the command line does not exist. */
export class NotFoundError extends ScratchError {
	override name = 'NotFoundError';
	override readonly code = 'ERR_SCRATCH_NOT_FOUND';
}

/** A path cannot be used where it was given: not a directory, inside the store, and so on. */
export class InvalidPathError extends ScratchError {
	override name = 'InvalidPathError';
	override readonly code = 'ERR_SCRATCH_INVALID_PATH';
}

/** Mounting the overlay (or a tmpfs) inside the run's namespace failed. */
export class MountError extends ScratchError {
	override name = 'MountError';
	override readonly code = 'ERR_SCRATCH_MOUNT';
}

/** The caller lacks a permission scratch needs: writing the store, creating namespaces. */
export class PermissionError extends ScratchError {
	override name = 'PermissionError';
	override readonly code = 'ERR_SCRATCH_PERMISSION';
}

/** This host cannot provide an isolating backend, or not the one asked for. */
export class UnsupportedEnvironmentError extends ScratchError {
	override name = 'UnsupportedEnvironmentError';
	override readonly code = 'ERR_SCRATCH_UNSUPPORTED';
}

/** The store is in a state scratch will not touch: another format, another owner, a broken record. */
export class StoreError extends ScratchError {
	override name = 'StoreError';
	override readonly code = 'ERR_SCRATCH_STORE';
}

/** A registry refused, could not be reached, or sent something that is not what was asked for. */
export class RegistryError extends ScratchError {
	override name = 'RegistryError';
	override readonly code = 'ERR_SCRATCH_REGISTRY';
}

/** An archive to import is damaged, or holds what a layer must not: a path outside it, a device node. */
export class ArchiveError extends ScratchError {
	override name = 'ArchiveError';
	override readonly code = 'ERR_SCRATCH_ARCHIVE';
}

/** Turn a Node.js system error into the short reason used inside our one-line messages. */
export function describeSystemError(error: unknown): string {
	if (error instanceof Error) {
		const {code} = error as NodeJS.ErrnoException;
		const reasons: Record<string, string> = {
			EACCES: 'permission denied',
			EPERM: 'operation not permitted',
			ENOENT: 'no such file or directory',
			ENOTDIR: 'not a directory',
			EEXIST: 'already exists',
			ENOSPC: 'no space left on device',
			EROFS: 'read-only file system',
			ELOOP: 'too many levels of symbolic links',
			EXDEV: 'crosses a file system boundary',
			EIO: 'input/output error',
			EDQUOT: 'disk quota exceeded',
		};
		return (code && reasons[code]) ?? error.message;
	}

	return String(error);
}
