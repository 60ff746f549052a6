import {realpathSync, statSync} from 'node:fs';
import path from 'node:path';
import {describeSystemError, InvalidPathError, NotFoundError, UsageError} from '../errors.js';
import {isWithin} from './namespace-plan.js';

/** The source tree's real path, or a clear error when it cannot be one. */
export function resolveSourceTree(source: string): string {
	let real: string;
	try {
		real = realpathSync(source);
	} catch (error) {
		const {code} = error as NodeJS.ErrnoException;
		if (code === 'ENOENT') {
			throw new NotFoundError(
				`source tree ${source} does not exist; pass an existing directory with --src DIR`,
			);
		}

		throw new InvalidPathError(
			`source tree ${source} cannot be used: ${describeSystemError(error)}; pass a readable directory with --src DIR`,
		);
	}

	if (!statSync(real).isDirectory()) {
		throw new InvalidPathError(`source ${source} is not a directory; pass a directory with --src DIR`);
	}

	return real;
}

/** Real path of a path that may not exist yet: its deepest existing ancestor resolved, the rest appended. */
export function realpathOfFuture(target: string): {path: string; existingAncestor: string} {
	const missing: string[] = [];
	let current = path.resolve(target);
	for (;;) {
		try {
			const real = realpathSync(current);
			return {path: path.join(real, ...missing.reverse()), existingAncestor: real};
		} catch {
			const parent = path.dirname(current);
			if (parent === current) {
				return {path: path.resolve(target), existingAncestor: '/'};
			}

			missing.push(path.basename(current));
			current = parent;
		}
	}
}

/**
Refuse stores the overlay cannot use with this source: nested in it, or containing it. Checked before
the store is created, so a refused run creates nothing. (Whether the store's file system can hold an
upper dir decides the backend: see backend.ts.)
*/
export function checkStorePlacement(storeRoot: string, source: string): void {
	const {path: store} = realpathOfFuture(storeRoot);
	if (isWithin(store, source)) {
		throw new InvalidPathError(
			`store ${store} is inside the source tree ${source}: the run would see (and overlap) its own store; put the store elsewhere with --store DIR`,
		);
	}

	if (isWithin(source, store)) {
		throw new InvalidPathError(
			`source ${source} is inside the store ${store}; run on a directory outside the store`,
		);
	}
}

/** The directory the command starts in, relative to the view: the caller's, if it stood inside the source. */
export function relativeWorkingDirectory(source: string, callerDirectory: string): string {
	let real: string;
	try {
		real = realpathSync(callerDirectory);
	} catch {
		return '';
	}

	return isWithin(real, source) ? path.relative(source, real) : '';
}

/** A command is required, and its name cannot be empty. */
export function checkCommand(command: readonly string[]): void {
	if (command.length === 0) {
		throw new UsageError("no command to run; put it after '--', for example: scratch run -- make");
	}

	if (command[0] === '') {
		throw new UsageError("the command name is empty; put the command after '--'");
	}
}

/**
A `--tmpfs` outside the view may not cover what the run itself needs: `/` (everything) or `/proc` (the
overlay reaches the source through /proc/self/fd, and the command's /proc is the run's own).
*/
export function checkTmpfsTarget(mountPoint: string, requested: string): void {
	if (mountPoint === '/' || isWithin(mountPoint, '/proc')) {
		throw new UsageError(
			`--tmpfs ${requested}: the run needs the real ${mountPoint === '/' ? '/' : '/proc'}; give another directory, such as /tmp`,
		);
	}
}

/** A `--tmpfs` mount point outside the view must already exist: scratch never creates host directories. */
export function checkTmpfsMountPoint(mountPoint: string, requested: string): void {
	let isDirectory = false;
	try {
		isDirectory = statSync(mountPoint).isDirectory();
	} catch {}

	if (!isDirectory) {
		throw new InvalidPathError(
			`--tmpfs ${requested}: ${mountPoint} is not an existing directory outside the source tree; name an existing directory such as /tmp, or a path inside the source`,
		);
	}
}

/**
A `--touch GLOB` as the setup expands it: relative to the view's root (a leading `/` means the same),
never climbing out of it, and without `\n` so the shell sees one word.
*/
export function normalizeTouchGlob(glob: string): string {
	const relative = glob.replace(/^\/+/, '');
	if (relative === '' || relative.split('/').every((segment) => segment === '' || segment === '.')) {
		throw new UsageError(
			`--touch ${JSON.stringify(glob)} names no files; give a glob below the view's root such as 'var/lib/rpm/*'`,
		);
	}

	if (relative.split('/').includes('..')) {
		throw new UsageError(
			`--touch ${glob} climbs out of the view with '..'; give a glob relative to the view's root such as 'var/lib/rpm/*'`,
		);
	}

	if (/[\n\0]/.test(relative)) {
		throw new UsageError(`--touch ${JSON.stringify(glob)} holds a newline or NUL; give a plain glob`);
	}

	return relative;
}
