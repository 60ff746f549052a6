import type {BackendName} from '../run/backend.js';
import type {LayerFormat} from '../store/layer-format.js';

/*
The shape of `scratch doctor`'s report: what the library returns and `--json` prints. Field names are
a public interface, like the CLI's flags: add fields, never rename them.
*/

/** Which part of the report a check belongs to. */
export type CheckGroup = 'host' | 'store' | 'limits' | 'programs';

/**
One thing doctor looked at. `ok` is true when it is fine, false when it is not (the detail then says
what to do), and null when it does not apply here or could not be checked (the detail says why).
*/
export type DoctorCheck = {
	/** Stable identifier: `overlay`, `dev-fuse`, `store-d-type`, `program-getfattr`, ... */
	id: string;
	group: CheckGroup;
	/** Short human label: `kernel overlay`, `/dev/fuse`, ... */
	label: string;
	ok: boolean | null;
	/** One line: what was found, and when something is wrong, what to do. */
	detail: string;
};

/** What the trial run of one backend did. */
export type TrialReport = {
	ok: boolean;
	/** Why it failed: the run's own error, the command's output, or what its upper lacked. */
	problem?: string;
	/** Set when the trial did not finish in time and was killed. */
	timedOut?: boolean;
	/** The layer format the trial's store had, which its kept upper was checked against. */
	layerFormat: LayerFormat;
	/** What the kept upper held, when the command ran. */
	upper?: {written: boolean; whiteout: boolean; opaque: boolean};
	durationMs: number;
};

/** Whether one backend can isolate runs with this store here. */
export type BackendReport = {
	backend: BackendName;
	/** Facts fine, trial run passed, and the store usable. */
	ok: boolean;
	/** Why not (the first of: the facts, the trial, the store). */
	problem?: string;
	/** What the facts alone say against it (what `scratch run` decides from). */
	factsProblem?: string;
	/** The trial run, or null when the facts ruled the backend out and it was not tried. */
	trial: TrialReport | null;
};

/** What `--backend auto` does here. */
export type AutoReport = {
	/** The first backend in auto's order that really works (facts and trial), or null when none does. */
	backend: BackendName | null;
	/** The backends before it in auto's order, and why each was passed over. */
	passedOver: Array<{backend: BackendName; problem: string}>;
	/**
	What `scratch run --backend auto` picks from the facts alone (null: it refuses). It differs from
	`backend` when a trial failed where the facts looked fine.
	*/
	factsPick: BackendName | null;
	/** One line saying what auto picks and why. */
	summary: string;
};

/** The store doctor was asked about. Nothing in it is created or changed by doctor. */
export type StoreReport = {
	path: string;
	/** Whether a scratch store (its `scratch-store.json`) exists there. */
	exists: boolean;
	/** The file system it is on (or would be on: its nearest existing ancestor's). */
	filesystem: string;
	onOverlayfs: boolean;
	layerFormat: LayerFormat;
	/** `recorded` in an existing store, `new` for the one a store made there would get. */
	layerFormatSource: 'recorded' | 'new';
	/** Whether readdir on that file system tells entries' types (null: could not be checked). */
	dType: boolean | null;
	/** Whether that file system takes `user.*` extended attributes (null: could not be checked). */
	userXattr: boolean | null;
	/** Bytes available to this user. */
	freeBytes: number;
	/** Inodes free, or null when the file system has no fixed number (btrfs). */
	freeInodes: number | null;
	/** Whether scratch can write there (or create the store there). */
	writable: boolean;
	/** Owner and permission bits of an existing store's directory. */
	owner?: {uid: number; mode: string};
	/** Why no backend can use this store, when that is so. */
	problem?: string;
};

/** The kernel's and mount(2)'s limits as they apply to this store. */
export type LimitsReport = {
	/** The kernel's maximum of lower layers in one overlay (the source is one of them). */
	maxLowerLayers: number;
	/** Layers that can stack over a source. */
	maxStackedLayers: number;
	/** mount(2)'s limit on the option string. */
	maxMountOptionsBytes: number;
	/** Bytes of the options of a run with a full stack: kernel overlay, fuse-overlayfs, and a workspace with the longest name. */
	fullStackOptionsBytes: {kernel: number; fuse: number; workspace: number};
};

/** A program scratch runs. */
export type ProgramReport = {
	name: string;
	/** Absolute path, when found. */
	path?: string;
	/** The Debian package that has it. */
	package: string;
	/** What cannot work without it: any run, runs with the fuse backend, or some other commands (gc, diff, export, ...). */
	neededBy: 'every run' | 'fuse backend' | 'other commands';
};

/** Where the trial runs ran, and whether everything they made is gone. */
export type ProbeReport = {
	/** The directory made for the trials (removed afterwards). */
	directory: string;
	/** `store-tmp`: the store's tmp/ dir; `next-to-store`: the nearest existing ancestor of a missing store; `system-tmp`: the system's temp dir. */
	where: 'store-tmp' | 'next-to-store' | 'system-tmp';
	/** Whether it is on the store's file system (when not, the trials say less about the store). */
	sameFilesystem: boolean;
	/** Why the trials did not run on the store's file system, when they did not. */
	note?: string;
	/** Whether everything the trials made was removed. */
	removed: boolean;
	/** What could not be removed, or why the probe dir could not be made. */
	problem?: string;
};

/** Everything `scratch doctor` found. */
export type DoctorReport = {
	/** The report's format version. */
	doctor: 1;
	host: {kernelRelease: string; euid: number};
	checks: DoctorCheck[];
	store: StoreReport;
	limits: LimitsReport;
	programs: ProgramReport[];
	backends: BackendReport[];
	auto: AutoReport;
	probe: ProbeReport;
	/** Whether at least one backend can isolate runs here (the CLI's exit status 0). */
	works: boolean;
};
