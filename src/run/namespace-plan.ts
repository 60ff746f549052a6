import path from 'node:path';
import {LimitError, UsageError} from '../errors.js';
import type {LayerFormat} from '../store/layer-format.js';
import type {BackendName} from './backend.js';

/** Written by the namespace's setup on the control pipe once the view is ready and the command starts. */
export const readyMarker = '\u001Escratch-ready\n';

/** Everything the namespace needs to build the run's view. Pure data, built and checked by `run`. */
export type NamespacePlan = {
	backend: BackendName;
	/**
	Whether the namespace gets a user namespace whose root is the caller (default: for the userns
	backend only; the fuse backend needs one when not run by root).
	*/
	userNamespace?: boolean;
	/** For the fuse backend: what its teardown does with the writes. */
	fuse?: FusePlan;
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

/**
How a fuse-overlayfs view ends. A view whose writes are kept is unmounted cleanly (everything else in the
run stopped first, so nothing holds it), which makes fuse-overlayfs finish every write, and its upper is
then put in the store's layer format: fuse-overlayfs marks opaque directories its own way and records
where copied-up files came from in xattrs of its own.
*/
export type FusePlan = {
	/** Unmount cleanly and normalise the upper (promoting, keeping, or a workspace's run). */
	keepWrites: boolean;
	/** Absolute path of the upper dir, for the normalisation. */
	upper: string;
	layerFormat: LayerFormat;
	/** Absolute path of a file in the run's dir for fuse-overlayfs's own messages and the xattr listing. */
	log: string;
};

/** Absolute paths of the programs the namespace runs, resolved outside it. */
export type NamespaceTools = {
	setpriv: string;
	unshare: string;
	sh: string;
	mount: string;
	mkdir: string;
	/** The fuse backend's programs (fuse-overlayfs, and what its teardown uses). */
	fuse?: FuseTools;
};

/** Programs of the fuse backend: the daemon, and the teardown's unmount and normalisation. */
export type FuseTools = {
	fuseOverlayfs: string;
	umount: string;
	getfattr: string;
	setfattr: string;
	find: string;
	awk: string;
	xargs: string;
	sleep: string;
	rm: string;
	mknod: string;
};

// The order of the setup script's fuse arguments (see fuseArguments).
export const fuseToolNames: ReadonlyArray<[keyof FuseTools, string]> = [
	['fuseOverlayfs', 'fuse-overlayfs'],
	['umount', 'umount'],
	['getfattr', 'getfattr'],
	['setfattr', 'setfattr'],
	['find', 'find'],
	['awk', 'awk'],
	['xargs', 'xargs'],
	['sleep', 'sleep'],
	['rm', 'rm'],
	['mknod', 'mknod'],
];

/** mount(2) takes the options as one page: 4095 bytes and a terminating NUL. */
export const maxMountOptionsLength = 4095;

/** What the mount options of a view are built from. */
export type ViewOptions = {
	volatile: boolean;
	layers?: readonly string[];
	runId?: string;
	writable?: {upper: string; work: string} | undefined;
};

/**
Lower, upper and work dirs, then the backend's own options, then `volatile` when asked. The source is
`/proc/self/fd/5`, layers are named by their short ids from inside the store's `layers/` dir, and upper
and work are relative to the directory the mount runs in, so no user path ever appears in the option
string: nothing to escape (`:`, `,`, `\`), and 500 lower layers fit in mount(2)'s 4095 bytes. Without
layers the mount runs in the run's own dir.
*/
function buildViewOptions(
	{volatile, layers = [], runId = '', writable}: ViewOptions,
	backendOptions: readonly string[],
): string {
	const lowers = [...layers].reverse().concat('/proc/self/fd/5');
	const runPath = layers.length > 0 ? `../runs/${runId}/` : '';
	return [
		`lowerdir=${lowers.join(':')}`,
		`upperdir=${writable?.upper ?? `${runPath}upper`}`,
		`workdir=${writable?.work ?? `${runPath}work`}`,
		...backendOptions,
		...(volatile ? ['volatile'] : []),
	].join(',');
}

/** The kernel overlay's mount options: one portable layer format for root and rootless (DESIGN: Layer format). */
export function buildOverlayOptions(view: ViewOptions): string {
	return buildViewOptions(view, ['userxattr', 'index=off', 'metacopy=off']);
}

/**
fuse-overlayfs's options: the same dirs (it resolves them itself, so the same relative names and
/proc/self/fd/5 work), without the kernel's format options (it reads both layer formats). Writes reach
the upper before write(2) returns, so a full disk is the writer's ENOSPC: with the kernel's writeback
cache the error would be lost and a writer could loop forever. `volatile` skips its fsyncs.
*/
export function buildFuseOptions(view: ViewOptions): string {
	return buildViewOptions(view, ['writeback=0']);
}

/** The overlay's mount options for a plan. */
export function overlayOptionsOf(plan: NamespacePlan): string {
	const build = plan.backend === 'fuse' ? buildFuseOptions : buildOverlayOptions;
	return build({
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
upper must be unmounted before it is recorded). Every process of the chain holds fd 7, whose other end the
run's background deleter reads: it deletes a discarded upper only after that teardown, which then only
evicts clean inodes (freeing 20,000 deleted ones in it took seconds, with the caller's stdout held).
The fuse backend mounts with fuse-overlayfs, whose daemon (forked once the mount is ready) lives in the
PID namespace like everything else, so it dies with the run whatever happens to scratch. When the writes
are kept, the teardown stops every other process first, unmounts the view (which makes the daemon finish
every write) and puts the upper in the store's layer format; the exit report then says `clean`, or
`died` when its daemon died before the command ended, `stuck` when the view could not be unmounted,
`unnormalized` when its upper could not be put in the layer format (in each case the writes must not be
trusted).
*/
const setupScript = `set -u
mount=$1 mkdir=$2 source=$3 target=$4 target_mode=$5 cwd=$6 options=$7 mount_dir=$8
mounter=$9 keep=\${10} upper=\${11} format=\${12} log=\${13}
fuse=\${14} umount=\${15} getfattr=\${16} setfattr=\${17} find=\${18} awk=\${19} xargs=\${20} sleep=\${21} rm=\${22} mknod=\${23} shell=\${24}
shift 24
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
mount_fuse() {
	"$fuse" -o "$options" "$target" 2>"$log" || {
		cat -- "$log" >&2
		fail overlay "$target"
	}
	# The daemon detached from fuse-overlayfs once the view was ready: the one other process here.
	fuse_pid=
	for entry in /proc/[0-9]*; do
		[ "\${entry#/proc/}" = "$$" ] && continue
		read -r comm <"$entry/comm" 2>/dev/null && [ "$comm" = fuse-overlayfs ] && fuse_pid=\${entry#/proc/}
	done
	# Without it the teardown could neither spare it nor tell whether it lived to serve every write.
	[ -n "$fuse_pid" ] || {
		cat -- "$log" >&2
		echo "fuse-overlayfs: no daemon serves the view" >&2
		fail overlay "$target"
	}
}
# Everything in the run but pid 1 and the daemon, so that nothing holds the view when it is unmounted.
stop_others() {
	for entry in /proc/[0-9]*; do
		pid=\${entry#/proc/}
		[ "$pid" = "$$" ] || [ "$pid" = "$fuse_pid" ] || kill -s KILL "$pid" 2>/dev/null
	done
}
# fuse-overlayfs marks an opaque directory with an xattr of its own plus a .wh..wh..opq file (and a
# .wh..opq whiteout), every new directory included, and records copied-up files' origins in xattrs. The
# store's format keeps a directory opaque only when something lies below it (as the kernel does: a new
# directory hides nothing), as user.overlay.opaque (overlay-userxattr-1) or the marker file
# (whiteout-files-1), and whiteouts as 0/0 devices or .wh.NAME files.
normalize() {
	lowers=\${options#lowerdir=}
	lowers=\${lowers%%,*}
	SCRATCH_FORMAT=$format SCRATCH_UPPER=$upper SCRATCH_SOURCE=/proc/$$/fd/5 SCRATCH_LAYERS=$mount_dir SCRATCH_IDS=\${lowers%/proc/self/fd/5} \
	"$find" "$upper" -depth -name '.wh.*' ! -type d -exec "$shell" -c '
		setfattr=$1 rm=$2 mknod=$3
		shift 3
		below() {
			[ -e "$SCRATCH_SOURCE/$1" ] && return 0
			IFS=:
			for id in $SCRATCH_IDS; do
				[ -e "$SCRATCH_LAYERS/$id/$1" ] && { unset IFS; return 0; }
			done
			unset IFS
			return 1
		}
		for entry; do
			directory=\${entry%/*} name=\${entry##*/}
			case $name in
			.wh..wh..opq)
				[ -f "$entry" ] || continue
				if ! below "\${directory#"$SCRATCH_UPPER"}"; then
					"$rm" -f -- "$entry" || exit 1
				elif [ "$SCRATCH_FORMAT" = overlay-userxattr-1 ]; then
					"$setfattr" -h -n user.overlay.opaque -v y -- "$directory" && "$rm" -f -- "$entry" || exit 1
				fi ;;
			.wh..opq) [ ! -c "$entry" ] || "$rm" -f -- "$entry" || exit 1 ;;
			*) if [ "$SCRATCH_FORMAT" = overlay-userxattr-1 ] && [ -f "$entry" ] && [ ! -s "$entry" ]; then
				"$rm" -f -- "$entry" && "$mknod" -m 000 -- "$directory/\${name#.wh.}" c 0 0 || exit 1
			fi ;;
			esac
		done' normalize "$setfattr" "$rm" "$mknod" {} + || return 1
	fuse_xattrs >"$log.xattrs" || return 1
	[ -s "$log.xattrs" ] || return 0
	for attribute in trusted.overlay.opaque trusted.overlay.origin user.fuseoverlayfs.opaque user.fuseoverlayfs.origin; do
		"$awk" -v want="$attribute" '/^# file: /{file = substr($0, 9); next} $0 == want && index(file, "\\\\") == 0 {print file}' "$log.xattrs" >"$log.files" || return 1
		"$xargs" -r -d '\\n' "$setfattr" -h -x "$attribute" -- <"$log.files" || return 1
		# getfattr escapes names holding a backslash or a line break: those need the slow way.
		if "$awk" -v want="$attribute" '/^# file: /{file = substr($0, 9); next} $0 == want && index(file, "\\\\") {found = 1} END {exit !found}' "$log.xattrs"; then
			"$find" "$upper" -exec "$setfattr" -h -x "$attribute" -- {} + 2>/dev/null
		fi
	done
	# Whatever went wrong above, the upper is in the layer format only if none of them is left.
	fuse_xattrs >"$log.xattrs" || return 1
	[ ! -s "$log.xattrs" ]
}
# fuse-overlayfs's own xattrs in the upper, as getfattr lists them (file lines, then attribute names).
fuse_xattrs() {
	"$getfattr" -R -P -h --absolute-names -m '^(trusted\\.overlay\\.(opaque|origin)|user\\.fuseoverlayfs\\.(opaque|origin))$' -- "$upper" 2>/dev/null
}
# Unmount the view cleanly: fuse-overlayfs has then done every write. Submounts (--tmpfs) go with it.
unmount_fuse() {
	cd / || return 1
	tries=0
	while [ "$tries" -lt 300 ]; do
		stop_others
		"$umount" -R -- "$target" 2>/dev/null && return 0
		tries=$((tries + 1))
		"$sleep" 0.01
	done
	return 1
}
command exec 5<"$source" || fail source "$source"
cd -- "$mount_dir" || fail layers "$mount_dir"
count=$1
shift
while [ "$count" -gt 0 ]; do tmpfs "$1" "$2"; shift 2; count=$((count - 1)); done
mount_point "$target_mode" "$target"
if [ "$mounter" = fuse ]; then
	mount_fuse
else
	"$mount" -t overlay -o "$options" scratch "$target" || fail overlay "$target"
fi
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
# pid 1 keeps the source open (fd 5) for the teardown, whatever the run covered it with; the command does not.
( exec "$@" ) 4>&- 5<&- 6<&- 7>&-
status=$?
# The teardown's own programs must finish whatever signal comes now (a terminal's ^C, or scratch
# passing one on): ignored signals stay ignored through exec.
trap '' INT TERM HUP QUIT
teardown=clean
if [ "$mounter" = fuse ] && [ "$keep" = 1 ]; then
	if ! kill -0 "$fuse_pid" 2>/dev/null; then
		teardown=died
	elif ! unmount_fuse 2>/dev/null; then
		teardown=stuck
	fi
fi
# Only ever as pid 1 of the run's own PID namespace: anywhere else -1 means every process.
[ "$$" = 1 ] && kill -s KILL -- -1 2>/dev/null
# With nothing left that could write to it, the upper is put in the store's format even when its writes
# are not trusted: a workspace keeps its upper whatever happened.
if [ "$mounter" = fuse ] && [ "$keep" = 1 ]; then
	normalize 2>/dev/null || { [ "$teardown" = clean ] && teardown=unnormalized; }
fi
printf '\\036scratch-exit %s %s\\n' "$status" "$teardown" >&4
read -r _ 2>/dev/null <&6 || :
exit "$status"`;

/** How many named positional parameters the setup script takes before its counted lists (`shift 24`). */
export const setupNamedParameters = 24;

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
	const userNamespace = plan.userNamespace ?? plan.backend === 'userns';
	const unshareArguments = [
		...(userNamespace ? ['--user', '--map-root-user'] : []),
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
			...fuseArguments(plan, tools),
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

// The setup script's fuse arguments: the teardown's plan and the programs; placeholders for the kernel.
function fuseArguments(plan: NamespacePlan, tools: NamespaceTools): string[] {
	if (plan.backend !== 'fuse') {
		return ['kernel', '0', '-', '-', '-', ...fuseToolNames.map(() => '-'), '-'];
	}

	if (!plan.fuse || !tools.fuse) {
		throw new Error('a fuse plan needs its teardown plan and the fuse tools');
	}

	return [
		'fuse',
		plan.fuse.keepWrites ? '1' : '0',
		plan.fuse.upper,
		plan.fuse.layerFormat,
		plan.fuse.log,
		...fuseToolNames.map(([key]) => (tools.fuse as FuseTools)[key]),
		tools.sh,
	];
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
