import path from 'node:path';
import type {BackendName} from './backend.js';

/** Written by the namespace's setup on the control pipe once the view is ready and the command starts. */
export const readyMarker = '\u001Escratch-ready\n';

/** Everything the namespace needs to build the run's view. Pure data, built and checked by `run`. */
export type NamespacePlan = {
	backend: BackendName;
	/** Real path of the source tree: the bottom of the stack, opened as fd 5 so no escaping is needed. */
	source: string;
	/** Absolute mount point of the overlay: the run's `merged` dir, or the source itself (`--in-place`). */
	target: string;
	/** Absolute directory the command starts in, inside the view. */
	workingDirectory: string;
	/** Discard-only runs skip the upper's syncs; the upper is thrown away after a crash anyway. */
	volatile: boolean;
	/**
	Private tmpfs mounts; `create` ones lie inside the view (their mount point, if missing, is a discarded
	write), the others elsewhere in the namespace (their mount point must exist on the host).
	*/
	tmpfs: Array<{path: string; create: boolean}>;
	command: string[];
};

/** Absolute paths of the programs the namespace runs, resolved outside it. */
export type NamespaceTools = {setpriv: string; unshare: string; sh: string; mount: string; mkdir: string};

/**
The overlay's mount options. The source is `/proc/self/fd/5` and upper and work are relative to the
run dir (the mount's working directory), so no user path ever appears in the option string: nothing
to escape (`:`, `,`, `\`), and the 4095-byte limit is never reached by long paths.
*/
export function buildOverlayOptions({volatile}: {volatile: boolean}): string {
	const options = [
		'lowerdir=/proc/self/fd/5',
		'upperdir=upper',
		'workdir=work',
		// One portable layer format for root and rootless (see DESIGN: Layer format).
		'userxattr',
		'index=off',
		'metacopy=off',
	];
	if (volatile) {
		options.push('volatile');
	}

	return options.join(',');
}

/*
Runs as pid 1 of the run's PID namespace. It never execs the command: pid 1 ignores signals it has no
handler for, so the command runs as its child, where forwarded signals reach it. fd 2 is scratch's
control pipe until the view is ready; fd 3 is the caller's stderr, which the command gets as fd 2.
Order matters: tmpfs mounts outside the view come first, so one that covers the view's mount point
(--tmpfs /tmp with the store under /tmp) is mounted over, not the other way round; the mount point is
then recreated inside that private tmpfs. Upper and work are reached through the working directory and
the source through fd 5, which stay valid whatever gets covered. Missing mount points are only ever
created inside the view or inside one of the run's own tmpfs mounts (preflight checked the others).
*/
const setupScript = `set -u
mount=$1 mkdir=$2 source=$3 target=$4 cwd=$5 options=$6
shift 6
tmpfs() {
	[ -d "$1" ] || "$mkdir" -p -- "$1" || exit 125
	"$mount" -t tmpfs -o mode=1777,nosuid,nodev scratch-tmpfs "$1" || exit 125
}
exec 5<"$source" || exit 125
count=$1
shift
while [ "$count" -gt 0 ]; do tmpfs "$1"; shift; count=$((count - 1)); done
[ -d "$target" ] || "$mkdir" -p -- "$target" || exit 125
"$mount" -t overlay -o "$options" scratch "$target" || exit 125
exec 5<&-
count=$1
shift
while [ "$count" -gt 0 ]; do tmpfs "$1"; shift; count=$((count - 1)); done
shift
cd -- "$cwd" || exit 125
printf '\\036scratch-ready\\n' >&2
exec 2>&3 3>&-
( exec "$@" )
exit $?`;

/**
The command line that builds the namespace and runs the command: setpriv makes the chain die with
scratch (parent-death signal), unshare makes private mount and PID namespaces (and a user namespace for
the rootless backend) and kills its child when it dies, so a SIGKILLed scratch takes the command and
every mount with it.
*/
export function buildNamespaceCommand(
	plan: NamespacePlan,
	tools: NamespaceTools,
): {file: string; args: string[]} {
	const unshareArguments = [
		...(plan.backend === 'userns' ? ['--user', '--map-root-user'] : []),
		'--mount',
		'--propagation',
		'private',
		'--pid',
		'--fork',
		'--kill-child=SIGKILL',
		'--mount-proc',
	];
	const outsideView = plan.tmpfs.filter((mount) => !mount.create).map((mount) => mount.path);
	const insideView = plan.tmpfs.filter((mount) => mount.create).map((mount) => mount.path);
	return {
		file: tools.setpriv,
		args: [
			'--pdeathsig',
			'KILL',
			'--',
			tools.unshare,
			...unshareArguments,
			'--',
			tools.sh,
			'-c',
			setupScript,
			'scratch',
			tools.mount,
			tools.mkdir,
			plan.source,
			plan.target,
			plan.workingDirectory,
			buildOverlayOptions({volatile: plan.volatile}),
			String(outsideView.length),
			...outsideView,
			String(insideView.length),
			...insideView,
			'--',
			...plan.command,
		],
	};
}

/**
Where a `--tmpfs PATH` goes in the namespace. A relative PATH is inside the view; an absolute PATH
inside the source tree is mapped into the view; any other absolute PATH is mounted where it is.
*/
export function resolveTmpfsPath(
	requested: string,
	{source, target}: {source: string; target: string},
): {path: string; create: boolean} {
	const absolute = path.isAbsolute(requested) ? path.normalize(requested) : path.join(source, requested);
	const relativeToSource = path.relative(source, absolute);
	const insideSource =
		relativeToSource === '' || (!relativeToSource.startsWith('..') && !path.isAbsolute(relativeToSource));
	if (insideSource) {
		return {path: path.join(target, relativeToSource), create: true};
	}

	return {path: absolute, create: false};
}

/** Map a wait status to the exit status scratch reports: the command's own, or 128+N for signal N. */
export function exitStatusOf(code: number | null, signalNumber: number | undefined): number {
	if (code !== null) {
		return code;
	}

	return 128 + (signalNumber ?? 9);
}
