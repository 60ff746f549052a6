import {existsSync, mkdtempSync, rmSync} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {execa} from 'execa';
import {
	chownTree,
	cliCommand,
	eventually,
	fingerprintTree,
	type NamespaceSetup,
	nobodyId,
	scratch,
	storeLeftovers,
	type User,
	writeTree,
} from './scratch.js';

/*
Helpers of the hostile-input suite (test/hostile-input.test.ts): a populated store copied into each
case, the ways a case can start scratch (plainly, with read-only mounts, on an overlayfs store, or where
user namespaces are disabled), and what "changed nothing" means.
*/

/** How a case starts scratch. Every way but `plain` lives in a private mount namespace made as root. */
export type Launcher =
	| {kind: 'plain'}
	/** These directories are read-only mounts (bind, remount ro) for scratch, whoever runs it. */
	| {kind: 'read-only'; directories: string[]}
	/** The namespace setup of test/helpers/scratch.ts (an overlayfs under the store, a usable /dev/fuse). */
	| {kind: 'setup'; setup: NamespaceSetup}
	/**
	A user namespace made by root (identity map of uids and gids 0-65535) whose
	user.max_user_namespaces is 0, so no process in it can make another user namespace, and /dev/fuse
	that uid 65534 cannot open: the host of an unprivileged user without user namespaces.
	*/
	| {kind: 'no-user-namespaces'};

const readOnlyScript = `set -e
count=$1
shift
while [ "$count" -gt 0 ]; do
	mount --bind "$1" "$1"
	mount -o remount,bind,ro "$1"
	shift
	count=$((count - 1))
done
exec "$@"`;

/*
The per-user-namespace sysctl user.max_user_namespaces can be set by a namespace's own root (with
CAP_SYS_RESOURCE in it). Its uid_map must be written from outside before it execs anything that needs
that capability, so the child waits on a fifo; the "ready" fifo tells the parent the namespace exists.
*/
const noUserNamespacesScript = `set -e
blocker=$(mktemp)
chmod 000 "$blocker"
mount --bind "$blocker" /dev/fuse
rm -f "$blocker"
fifos=$(mktemp -d)
mkfifo "$fifos/ready" "$fifos/go"
unshare --user sh -c '
	echo ready > "$1/ready"
	read go < "$1/go"
	shift
	exec sh -c "echo 0 > /proc/sys/user/max_user_namespaces && exec \\"\\$@\\"" sh "$@"
' sh "$fifos" "$@" &
child=$!
read ready < "$fifos/ready"
echo "0 0 65536" > "/proc/$child/uid_map"
echo "0 0 65536" > "/proc/$child/gid_map"
echo go > "$fifos/go"
rm -rf "$fifos"
status=0
wait "$child" || status=$?
exit "$status"`;

/** The environment scratch gets, as in scratch(): a searchable PATH and a HOME for the user. */
function environmentFor(user: User): Record<string, string> {
	return user === 'root'
		? {HOME: '/root'}
		: {HOME: '/nonexistent', PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'};
}

/** Run the built CLI as `user`, started the way `launcher` says; never rejects. */
export async function launch(user: User, args: string[], launcher: Launcher, cwd: string) {
	if (launcher.kind === 'plain') {
		return scratch({user}, args, {cwd});
	}

	if (launcher.kind === 'setup') {
		return scratch({user}, args, {cwd, setup: launcher.setup});
	}

	const [file, fileArguments] = cliCommand(user, args);
	const prefix =
		launcher.kind === 'read-only'
			? [readOnlyScript, 'sh', String(launcher.directories.length), ...launcher.directories]
			: [noUserNamespacesScript, 'sh'];
	return execa(
		'unshare',
		['--mount', '--propagation', 'private', 'sh', '-c', ...prefix, file, ...fileArguments],
		{
			cwd,
			reject: false,
			stdin: 'ignore',
			env: environmentFor(user),
		},
	);
}

/** Names and layers every populated store holds (see populatedStore). */
export const populated = {
	/** A name on a layer holding app.txt. */
	name: 'app',
	/** A workspace, ready, with a run's writes pending. */
	workspace: 'WS',
	/** A snapshot of WS. */
	snapshot: 'WS/postinit',
} as const;

const templates = new Map<User, Promise<string>>();

/**
A store made by `user` through the CLI (once per test process, then copied): name `app` on a layer,
an unreachable layer (so that gc has something to free), workspace WS with pending writes. Its source
tree lives beside it and stays until the process exits.
*/
export async function populatedStore(user: User): Promise<string> {
	let template = templates.get(user);
	if (!template) {
		template = makeTemplate(user);
		templates.set(user, template);
	}

	return template;
}

async function makeTemplate(user: User): Promise<string> {
	const root = mkdtempSync(path.join(os.tmpdir(), 'scratch-hostile-template-'));
	process.once('exit', () => rmSync(root, {recursive: true, force: true}));
	const src = path.join(root, 'src');
	const store = path.join(root, 'store');
	writeTree(src, {'README.md': '# template\n'});
	if (user === 'nobody') {
		chownTree(root, nobodyId);
	}

	const steps: string[][] = [
		[
			'run',
			'--store',
			store,
			'--src',
			src,
			'--promote',
			'orphan',
			'--',
			'sh',
			'-c',
			'echo orphan > orphan.txt',
		],
		['rm', '--store', store, 'orphan'],
		[
			'run',
			'--store',
			store,
			'--src',
			src,
			'--promote',
			populated.name,
			'--',
			'sh',
			'-c',
			'echo app > app.txt',
		],
		['ws', 'init', populated.workspace, '--store', store, '--src', src],
		['ws', 'run', populated.workspace, '--store', store, '--', 'sh', '-c', 'echo pending > pending.txt'],
	];
	for (const step of steps) {
		const result = await scratch({user}, step, {cwd: root});
		if (result.exitCode !== 0) {
			throw new Error(`making the template store failed at ${step.join(' ')}: ${String(result.stderr)}`);
		}
	}

	// Runs delete their leftovers in the background; a copy taken meanwhile would hold half of them.
	if (!(await eventually(() => storeLeftovers(store).length === 0, 20_000))) {
		throw new Error(`the template store keeps leftovers: ${storeLeftovers(store).join(', ')}`);
	}

	return store;
}

/** Copy a populated store to `target` (owners, modes, times and xattrs kept). */
export async function copyPopulatedStore(user: User, target: string): Promise<void> {
	const template = await populatedStore(user);
	if (existsSync(target)) {
		throw new Error(`${target} exists already`);
	}

	// cp -a, not fs.cpSync: it keeps owners and xattrs.
	const copied = await execa('cp', ['-a', '--', template, target], {reject: false});
	if (copied.exitCode !== 0) {
		throw new Error(`cp -a ${template} ${target} failed: ${String(copied.stderr)}`);
	}
}

/** The store's working directories, whose contents a run creates and removes (see snapshotOf). */
const workingDirectories = ['runs', 'tmp', 'trash'];

/**
Everything under a sandbox, for "changed nothing": types, modes, owners, contents, link targets and
mtimes of every entry (but those under `ignore`: the test's own scaffolding). Locks are taken by reading commands too (a lock file is opened, a holder file
made and removed), so the mtimes of `locks/` and its files are left out, never its entries. With `runs`,
the command itself ran (126, 127, or a run that works), so entries came and went in the store's working
directories (runs, tmp, trash): their own mtimes are left out too, not what they hold.
*/
export function snapshotOf(
	root: string,
	{store, runs = false, ignore = []}: {store: string; runs?: boolean; ignore?: string[]},
) {
	const fingerprint = fingerprintTree(root);
	const storeRelative = path.relative(root, store);
	const ignored = ignore.map((entry) => path.relative(root, entry));
	for (const key of Object.keys(fingerprint)) {
		if (ignored.some((entry) => key === entry || key.startsWith(`${entry}/`))) {
			delete fingerprint[key];
			continue;
		}

		const inStore = path.relative(storeRelative, key);
		if (inStore.startsWith('..') || path.isAbsolute(inStore)) {
			continue;
		}

		const [top, ...rest] = inStore.split('/');
		if (top === 'locks' || (runs && workingDirectories.includes(top ?? '') && rest.length === 0)) {
			// Mode and owner stay: "drwx------ 0:0".
			fingerprint[key] = (fingerprint[key] ?? '').split(' ').slice(0, 2).join(' ');
		}
	}

	return fingerprint;
}
