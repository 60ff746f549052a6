import {accessSync, constants} from 'node:fs';
import path from 'node:path';
import {UnsupportedEnvironmentError} from '../errors.js';

/** The Debian package of each program scratch runs. */
export const programPackages: Readonly<Record<string, string>> = {
	setpriv: 'util-linux',
	unshare: 'util-linux',
	mount: 'mount',
	flock: 'util-linux',
	sh: 'dash',
	rm: 'coreutils',
	sync: 'coreutils',
	nice: 'coreutils',
	ionice: 'util-linux',
	mkdir: 'coreutils',
	cp: 'coreutils',
	du: 'coreutils',
	getfattr: 'attr',
	setfattr: 'attr',
	'fuse-overlayfs': 'fuse-overlayfs',
	umount: 'mount',
	find: 'findutils',
	xargs: 'findutils',
	awk: 'mawk',
	mknod: 'coreutils',
	sleep: 'coreutils',
	mkfifo: 'coreutils',
};

const found = new Map<string, string>();

/**
Absolute path of a program scratch runs, looked up once. The system directories come first so that a
PATH set for the user's command cannot replace the tools scratch builds its namespace with.
*/
export function findExecutable(name: string): string {
	const executable = findExecutableOrUndefined(name);
	if (executable) {
		return executable;
	}

	throw new UnsupportedEnvironmentError(
		`scratch needs the program '${name}' and cannot find it; install the ${programPackages[name] ?? name} package`,
	);
}

/** Absolute path of a program, looked up as `findExecutable` does, or undefined when it is not installed. */
export function findExecutableOrUndefined(name: string): string | undefined {
	const cached = found.get(name);
	if (cached) {
		return cached;
	}

	const directories = ['/usr/bin', '/bin', '/usr/sbin', '/sbin', ...(process.env['PATH'] ?? '').split(':')];
	for (const directory of directories) {
		if (!directory) {
			continue;
		}

		const candidate = path.join(directory, name);
		try {
			accessSync(candidate, constants.X_OK);
			found.set(name, candidate);
			return candidate;
		} catch {}
	}

	return undefined;
}
