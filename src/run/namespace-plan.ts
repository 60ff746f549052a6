import path from 'node:path';
import {LimitError, UsageError} from '../errors.js';
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
	/** Layers stacked over the source, bottom first (ids in the store's `layers/` dir). */
	layers: string[];
	/** The store's `layers/` dir: the overlay is mounted from there when `layers` is not empty. */
	layersDirectory: string;
	/** The run's id: its upper and work dirs are `../runs/ID/upper` and `../runs/ID/work` from `layers/`. */
	runId: string;
	/**
	A persistent upper and work dir elsewhere in the store (a workspace's), relative to `layersDirectory`;
	the overlay is then always mounted from there.
	*/
	writable?: {upper: string; work: string};
	/** Globs, relative to the view's root, whose matching files are copied up before the command starts. */
	touch?: string[];
	/**
	Private tmpfs mounts; `create` ones lie inside the view (their mount point, if missing, is a discarded
	write), the others elsewhere in the namespace (their mount point must exist on the host).
	*/
	tmpfs: Array<{path: string; create: boolean}>;
	command: string[];
};

/** Absolute paths of the programs the namespace runs, resolved outside it. */
export type NamespaceTools = {setpriv: string; unshare: string; sh: string; mount: string; mkdir: string};

/** mount(2) takes the options as one page: 4095 bytes and a terminating NUL. */
export const maxMountOptionsLength = 4095;

/**
The overlay's mount options. The source is `/proc/self/fd/5`, layers are named by their short ids from
inside the store's `layers/` dir, and upper and work are relative to the directory the mount runs in, so
no user path ever appears in the option string: nothing to escape (`:`, `,`, `\`), and 500 lower layers
fit in mount(2)'s 4095 bytes. Without layers the mount runs in the run's own dir.
*/
export function buildOverlayOptions({
	volatile,
	layers = [],
	runId = '',
	writable,
}: {
	volatile: boolean;
	layers?: readonly string[];
	runId?: string;
	writable?: {upper: string; work: string} | undefined;
}): string {
	const lowers = [...layers].reverse().concat('/proc/self/fd/5');
	const runPath = layers.length > 0 ? `../runs/${runId}/` : '';
	const options = [
		`lowerdir=${lowers.join(':')}`,
		`upperdir=${writable?.upper ?? `${runPath}upper`}`,
		`workdir=${writable?.work ?? `${runPath}work`}`,
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

/** The overlay's mount options for a plan. */
export function overlayOptionsOf(plan: NamespacePlan): string {
	return buildOverlayOptions({
		volatile: plan.volatile,
		layers: plan.layers,
		runId: plan.runId,
		writable: plan.writable,
	});
}

/** Whether the overlay is mounted from the store's `layers/` dir (else from the run's own dir). */
export function mountsFromLayers(plan: NamespacePlan): boolean {
	return plan.layers.length > 0 || plan.writable !== undefined;
}

/** Fail clearly, before anything is created, when the overlay's options would not fit mount(2). */
export function checkMountOptions(plan: NamespacePlan): void {
	const options = overlayOptionsOf(plan);
	if (options.length > maxMountOptionsLength) {
		throw new LimitError(
			`the overlay's mount options for ${plan.layers.length} layers are ${options.length} bytes, more than mount(2)'s ${maxMountOptionsLength}; flatten the stack with scratch squash NAME --as NEW`,
		);
	}
}

/*
Runs as pid 1 of the run's PID namespace. It never execs the command: pid 1 ignores signals it has no
handler for, so the command runs as its child, where forwarded signals reach it. fd 2 is scratch's
control pipe until the view is ready; fd 3 is the caller's stderr, which the command gets as fd 2.
Order matters: tmpfs mounts outside the view come first, so one that covers the view's mount point
(--tmpfs /tmp with the store under /tmp) is mounted over, not the other way round; the mount point is
then recreated inside that private tmpfs. Upper and work are reached through the working directory and
the source through fd 5, which stay valid whatever gets covered (the setup moves into the store's
layers dir before any tmpfs is mounted, when the run has layers). A missing mount point is created only
where the plan says so (inside the view, or inside one of the run's own tmpfs mounts): never on the
host. Each failing step says which it was on the control pipe (setupFailureMarker).
When the command has exited, pid 1 kills whatever it left in the PID namespace and reports the status
on the control pipe (exitMarker) before exiting itself. The kernel's teardown of the overlay (it evicts
every inode the run touched: ~50 ms for 20,000 files) then runs in the exit of unshare, the last holder
of the mount namespace, which a discarding run need not wait for. pid 1 exits only at EOF on fd 6,
which scratch holds: the teardown starts after scratch has exited (or at once, for a kept run, whose
upper must be unmounted before it is recorded).
*/
const setupScript = `set -u
mount=$1 mkdir=$2 source=$3 target=$4 target_mode=$5 cwd=$6 options=$7 mount_dir=$8
shift 8
fail() {
	printf '\\036scratch-failed %s %s\\n' "$1" "$2" >&2
	exit 125
}
mount_point() {
	[ -d "$2" ] && return 0
	[ "$1" = create ] || fail mount-point "$2"
	"$mkdir" -p -- "$2" || fail mount-point "$2"
}
tmpfs() {
	mount_point "$1" "$2"
	"$mount" -t tmpfs -o mode=1777,nosuid,nodev scratch-tmpfs "$2" || fail tmpfs "$2"
}
# Opening a file for appending copies it up without changing its data or times.
copy_up() {
	[ -L "$1" ] && return 0
	if [ -f "$1" ]; then
		: >>"$1" || fail touch "$1"
	elif [ -d "$1" ]; then
		for entry in "$1"/* "$1"/.[!.]* "$1"/..?*; do
			[ -e "$entry" ] || [ -L "$entry" ] || continue
			copy_up "$entry"
		done
	fi
}
touch_glob() {
	(
		cd -- "$target" || fail touch "$target"
		IFS=''
		for match in $1; do
			[ -e "$match" ] || continue
			copy_up "$match"
		done
	) || exit 125
}
command exec 5<"$source" || fail source "$source"
cd -- "$mount_dir" || fail layers "$mount_dir"
count=$1
shift
while [ "$count" -gt 0 ]; do tmpfs "$1" "$2"; shift 2; count=$((count - 1)); done
mount_point "$target_mode" "$target"
"$mount" -t overlay -o "$options" scratch "$target" || fail overlay "$target"
exec 5<&-
count=$1
shift
while [ "$count" -gt 0 ]; do touch_glob "$1"; shift; count=$((count - 1)); done
count=$1
shift
while [ "$count" -gt 0 ]; do tmpfs "$1" "$2"; shift 2; count=$((count - 1)); done
shift
cd -- "$cwd" || fail cwd "$cwd"
printf '\\036scratch-ready\\n' >&2
exec 4>&2 2>&3 3>&-
( exec "$@" ) 4>&- 6<&-
status=$?
# Only ever as pid 1 of the run's own PID namespace: anywhere else -1 means every process.
[ "$$" = 1 ] && kill -s KILL -- -1 2>/dev/null
printf '\\036scratch-exit %s\\n' "$status" >&4
read -r _ 2>/dev/null <&6 || :
exit "$status"`;

/** Prefix of the line pid 1 prints on the control pipe once the command and all it started are gone: the status follows. */
export const exitMarker = '\u001Escratch-exit ';

/** Prefix of the line the setup prints on the control pipe when a step fails: `STEP PATH` follows. */
export const setupFailureMarker = '\u001Escratch-failed ';

/** Whether `inner` is `outer` or lies below it (both absolute and normalised). */
export function isWithin(inner: string, outer: string): boolean {
	const relative = path.relative(outer, inner);
	return (
		relative === '' ||
		(relative !== '..' && !relative.startsWith(`..${path.sep}`) && !path.isAbsolute(relative))
	);
}

/**
Whether a tmpfs mount point outside the view lies under another of the run's outside tmpfs mounts. Such
a mount point is made inside that tmpfs; any other must already exist on the host (preflight checks).
*/
export function isUnderOtherTmpfs(mountPath: string, outsidePaths: readonly string[]): boolean {
	return outsidePaths.some((other) => other !== mountPath && isWithin(mountPath, other));
}

// Parents are mounted before children, so a covering tmpfs is there when a mount point is made in it.
function orderOutsideMounts(paths: string[]): Array<[mode: string, path: string]> {
	const sorted = [...new Set(paths)].sort(
		(a, b) => a.split('/').length - b.split('/').length || a.localeCompare(b),
	);
	return sorted.map((mountPath) => [isUnderOtherTmpfs(mountPath, sorted) ? 'create' : 'existing', mountPath]);
}

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
	const outsideView = orderOutsideMounts(
		plan.tmpfs.filter((mount) => !mount.create).map((mount) => mount.path),
	);
	const insideView = plan.tmpfs
		.filter((mount) => mount.create)
		.map((mount): [string, string] => ['create', mount.path]);
	const targetMode = outsideView.some(([, mountPath]) => isWithin(plan.target, mountPath))
		? 'create'
		: 'existing';
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
			targetMode,
			plan.workingDirectory,
			overlayOptionsOf(plan),
			mountsFromLayers(plan) ? plan.layersDirectory : '.',
			String(outsideView.length),
			...outsideView.flat(),
			String(plan.touch?.length ?? 0),
			...(plan.touch ?? []),
			String(insideView.length),
			...insideView.flat(),
			'--',
			...plan.command,
		],
	};
}

/**
Where a `--tmpfs PATH` goes in the namespace. A relative PATH is inside the view (it may not climb out
of it); an absolute PATH inside the source tree is mapped into the view; any other absolute PATH is
mounted where it is.
*/
export function resolveTmpfsPath(
	requested: string,
	{source, target}: {source: string; target: string},
): {path: string; create: boolean} {
	const absolute = path.resolve(source, requested);
	if (!isWithin(absolute, source)) {
		if (!path.isAbsolute(requested)) {
			throw new UsageError(
				`--tmpfs ${requested}: a relative PATH must stay inside the view; give an absolute path for other places`,
			);
		}

		return {path: absolute, create: false};
	}

	return {path: path.join(target, path.relative(source, absolute)), create: true};
}

/** Map a wait status to the exit status scratch reports: the command's own, or 128+N for signal N. */
export function exitStatusOf(code: number | null, signalNumber: number | undefined): number {
	if (code !== null) {
		return code;
	}

	return 128 + (signalNumber ?? 9);
}
