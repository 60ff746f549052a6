import {createHash} from 'node:crypto';
import {
	chownSync,
	cpSync,
	existsSync,
	lstatSync,
	mkdirSync,
	mkdtempSync,
	readdirSync,
	readFileSync,
	readlinkSync,
	rmSync,
	writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import type {ExecutionContext} from 'ava';
import {execa, type Options, type ResultPromise} from 'execa';

/** Who runs scratch in a test: real root, or an unprivileged user (uid/gid 65534) through setpriv. */
export type User = 'root' | 'nobody';
export const users: User[] = ['root', 'nobody'];
export const nobodyId = 65_534;

const repositoryDist = fileURLToPath(new URL('../../dist', import.meta.url));
let nobodyDist: string | undefined;

/*
The unprivileged user may not be able to read the checkout (CI clones under root's home), so it runs
a copy of the self-contained bundle from a world-readable temp dir, removed when the worker exits.
*/
function cliFor(user: User): string {
	if (!existsSync(path.join(repositoryDist, 'cli.cjs'))) {
		throw new Error('dist/cli.cjs is missing: run `npm run build` before the tests');
	}

	if (user === 'root') {
		return path.join(repositoryDist, 'cli.cjs');
	}

	if (!nobodyDist) {
		const copy = mkdtempSync(path.join(os.tmpdir(), 'scratch-test-dist-'));
		cpSync(repositoryDist, copy, {recursive: true});
		chownTree(copy, nobodyId);
		nobodyDist = copy;
		process.once('exit', () => rmSync(copy, {recursive: true, force: true}));
	}

	return path.join(nobodyDist, 'cli.cjs');
}

/** Give a tree to a user, as if that user had made it. */
export function chownTree(root: string, id: number): void {
	chownSync(root, id, id);
	for (const entry of readdirSync(root, {withFileTypes: true, recursive: true})) {
		const entryPath = path.join(entry.parentPath, entry.name);
		if (!lstatSync(entryPath).isSymbolicLink()) {
			chownSync(entryPath, id, id);
		}
	}
}

/** A temp dir for one test with a source tree and a store path, owned by the test's user. */
export type Sandbox = {user: User; root: string; src: string; store: string};

/** Make a sandbox; `files` maps relative paths to content (a trailing slash makes a directory). */
export function makeSandbox(t: ExecutionContext, user: User, files: Record<string, string> = {}): Sandbox {
	const root = mkdtempSync(path.join(os.tmpdir(), 'scratch-test-'));
	t.teardown(() => {
		rmSync(root, {recursive: true, force: true});
	});
	const src = path.join(root, 'src');
	writeTree(src, {
		'README.md': '# fixture\n',
		'lib/code.c': 'int main(void) { return 0; }\n',
		'lib/deep/x.txt': 'x\n',
		...files,
	});
	if (user === 'nobody') {
		chownTree(root, nobodyId);
	}

	return {user, root, src, store: path.join(root, 'store')};
}

/** Create files (and directories, for keys ending in '/') under a root. */
export function writeTree(root: string, files: Record<string, string>): void {
	mkdirSync(root, {recursive: true});
	for (const [relative, content] of Object.entries(files)) {
		const target = path.join(root, relative);
		if (relative.endsWith('/')) {
			mkdirSync(target, {recursive: true});
		} else {
			mkdirSync(path.dirname(target), {recursive: true});
			writeFileSync(target, content);
		}
	}
}

/**
What a private mount namespace (made as root) holds for one scratch process, so that a test can give it a
host it would otherwise need to change: an overlayfs under the store (as inside a container), and a
/dev/fuse any user may open (Debian's usual mode 0666; this machine's is 0600). Nothing reaches the host:
the namespace and its mounts die with the process.
*/
export type NamespaceSetup = {
	/** Bind a mode-0666 FUSE device over /dev/fuse. */
	fuseDevice?: boolean;
	/** Mount an overlay (lower, upper, work: absolute dirs) on `target` first. */
	overlayfs?: {lower: string; upper: string; work: string; target: string};
	/**
	Instead of a new namespace, enter the mount namespace of this process (one the test started and holds,
	see mount-namespace.ts), where mounts last from one scratch process to the next.
	*/
	enter?: number;
};

const namespaceSetupScript = `set -e
if [ -n "$1" ]; then mount -t overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" scratch-test-overlay "$4"; fi
if [ "$5" = 1 ]; then
	device=$(mktemp -d)
	mknod -m 666 "$device/fuse" c 10 229
	mount --bind "$device/fuse" /dev/fuse
	rm -rf "$device"
fi
shift 5
exec "$@"`;

/** The command line that runs the built CLI as a user (root, or uid 65534 through setpriv). */
export function cliCommand(user: User, args: string[], setup?: NamespaceSetup): [string, string[]] {
	const cli = cliFor(user);
	const [file, fileArguments]: [string, string[]] =
		user === 'root'
			? [process.execPath, [cli, ...args]]
			: [
					'setpriv',
					[
						'--reuid',
						String(nobodyId),
						'--regid',
						String(nobodyId),
						'--clear-groups',
						process.execPath,
						cli,
						...args,
					],
				];
	if (!setup) {
		return [file, fileArguments];
	}

	if (setup.enter !== undefined) {
		return ['nsenter', [`--target=${setup.enter}`, '--mount', '--', file, ...fileArguments]];
	}

	const {overlayfs} = setup;
	return [
		'unshare',
		[
			'--mount',
			'--propagation',
			'private',
			'sh',
			'-c',
			namespaceSetupScript,
			'sh',
			overlayfs?.lower ?? '',
			overlayfs?.upper ?? '',
			overlayfs?.work ?? '',
			overlayfs?.target ?? '',
			setup.fuseDevice ? '1' : '0',
			file,
			...fileArguments,
		],
	];
}

/** Run the built CLI as the sandbox's user; never rejects, the test checks status and output. */
export function scratch(
	sandbox: Pick<Sandbox, 'user'>,
	args: string[],
	options: Options & {cwd?: string; setup?: NamespaceSetup} = {},
): ResultPromise<Options & {reject: false}> {
	const {setup, ...execaOptions} = options;
	const [file, fileArguments] = cliCommand(sandbox.user, args, setup);
	return execa(file, fileArguments, {
		reject: false,
		...(options.input === undefined ? {stdin: 'ignore' as const} : {}),
		...execaOptions,
		// The unprivileged user gets a PATH it can search: a PATH entry it may not enter turns
		// "not found" (127) into "permission denied" (126), as in any shell.
		env: {
			...(sandbox.user === 'root'
				? {HOME: '/root'}
				: {HOME: '/nonexistent', PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'}),
			...options.env,
		},
	}) as ResultPromise<Options & {reject: false}>;
}

/** `scratch run --store STORE --src SRC ARGS...` in the sandbox, as its user. */
export function scratchRun(
	sandbox: Sandbox,
	args: string[],
	options: Options & {cwd?: string; setup?: NamespaceSetup} = {},
): ResultPromise<Options & {reject: false}> {
	return scratch(sandbox, ['run', '--store', sandbox.store, '--src', sandbox.src, ...args], options);
}

/** Everything about a tree that a run must not change: types, modes, owners, content, link targets, mtimes. */
export function fingerprintTree(root: string): Record<string, string> {
	const fingerprint: Record<string, string> = {};
	const visit = (directory: string) => {
		for (const name of readdirSync(directory).sort()) {
			const entryPath = path.join(directory, name);
			const info = lstatSync(entryPath, {bigint: true});
			let detail = `${info.mode.toString(8)} ${info.uid}:${info.gid} ${info.mtimeNs}`;
			if (info.isSymbolicLink()) {
				detail += ` -> ${readlinkSync(entryPath)}`;
			} else if (info.isFile()) {
				detail += ` ${createHash('sha256').update(readFileSync(entryPath)).digest('hex')}`;
			}

			fingerprint[path.relative(root, entryPath)] = detail;
			if (info.isDirectory()) {
				visit(entryPath);
			}
		}
	};

	fingerprint['.'] = String(lstatSync(root).mode);
	visit(root);
	return fingerprint;
}

/** Mount points on the host that lie under a directory. */
export function hostMountsUnder(directory: string): string[] {
	return readFileSync('/proc/self/mountinfo', 'utf8')
		.split('\n')
		.map((line) => line.split(' ')[4] ?? '')
		.filter((mountPoint) => mountPoint === directory || mountPoint.startsWith(`${directory}/`));
}

/** Pids of processes whose command line contains a marker. */
export function processesWith(marker: string): number[] {
	const pids: number[] = [];
	for (const name of readdirSync('/proc')) {
		if (!/^\d+$/.test(name)) {
			continue;
		}

		try {
			if (readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(marker)) {
				pids.push(Number(name));
			}
		} catch {}
	}

	return pids;
}

/** A `sleep` duration no other process on the machine uses, to find the command's processes. */
export function uniqueSleep(): string {
	return `${4000 + Math.floor(Math.random() * 1000)}.${process.pid}${Math.floor(Math.random() * 1e6)}`;
}

/** Entries left in the store's working directories (runs, tmp, trash). */
export function storeLeftovers(store: string): string[] {
	return ['runs', 'tmp', 'trash'].flatMap((directory) => {
		const full = path.join(store, directory);
		return existsSync(full) ? readdirSync(full).map((name) => `${directory}/${name}`) : [];
	});
}

/** Wait for a condition with a deadline (for the kernel's asynchronous teardown, not as a sleep). */
export async function eventually(condition: () => boolean, timeoutMs = 5000): Promise<boolean> {
	const deadline = Date.now() + timeoutMs;
	while (Date.now() < deadline) {
		if (condition()) {
			return true;
		}

		await new Promise((resolve) => setTimeout(resolve, 10));
	}

	return condition();
}

/** Resolve once the running command has printed a line (it is then surely running inside its view). */
export async function waitForLine(subprocess: ResultPromise, line: string): Promise<void> {
	await new Promise<void>((resolve, reject) => {
		let seen = '';
		subprocess.stdout?.on('data', (chunk: Buffer) => {
			seen += chunk.toString();
			if (seen.split('\n').includes(line)) {
				resolve();
			}
		});
		subprocess.once('exit', () => reject(new Error(`exited before printing ${line}: ${seen}`)));
	});
}
