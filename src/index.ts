export {type DoctorOptions, runDoctor} from './doctor/doctor.js';
export type {
	AutoReport,
	BackendReport,
	CheckGroup,
	DoctorCheck,
	DoctorReport,
	LimitsReport,
	ProbeReport,
	ProgramReport,
	StoreReport,
	TrialReport,
} from './doctor/report.js';
export {
	ArchiveError,
	BusyError,
	describeSystemError,
	ExistsError,
	InvalidNameError,
	InvalidPathError,
	LimitError,
	MountError,
	NotFoundError,
	PermissionError,
	RegistryError,
	ScratchError,
	StoreError,
	UnsupportedEnvironmentError,
	UsageError,
} from './errors.js';
export {type DiffOptions, diffLayer, type LayerChange, type LayerDiff} from './layer/diff.js';
export {type Squash, type SquashOptions, squashLayer} from './layer/squash.js';
export {chainIdOf, type ExportOptions, exportLayer, type LayerExport} from './oci/export.js';
export {
	type ImportOptions,
	importLayer,
	importTarIntoStore,
	type LayerImport,
	type TarImport,
	type TarImportOptions,
} from './oci/import.js';
export {type Pull, type PulledLayer, type PullOptions, pullLayer} from './oci/pull.js';
export {type Push, type PushedLayer, type PushOptions, pushLayer} from './oci/push.js';
export {findCredentials, type ImageReference, parseImageReference} from './oci/registry.js';
export {
	type BackendChoice,
	type BackendName,
	type BackendSelection,
	backendProblem,
	chooseBackend,
	describePassedOver,
	type HostFacts,
	readHostFacts,
	readStoreFacts,
	type StoreFacts,
	selectBackend,
} from './run/backend.js';
export type {StdioTarget} from './run/namespace.js';
export {buildFuseOptions, buildOverlayOptions} from './run/namespace-plan.js';
export {
	type RunEvent,
	type RunHandle,
	type RunOptions,
	type RunResult,
	runCommand,
	startRun,
} from './run/run.js';
export type {WriteStats} from './run/upper-stats.js';
export {collectGarbage, type GcReport} from './store/gc.js';
export {type LayerFormat, layerFormats} from './store/layer-format.js';
export {type LayerRecord, maxLowerLayers, maxStackedLayers} from './store/layers.js';
export {checkName, maxNameLength, nameProblem} from './store/names.js';
export type {Promotion} from './store/promote.js';
export type {Ref} from './store/refs.js';
export {
	inspectLayer,
	type LayerDetails,
	listSnapshots,
	promoteRun,
	removeSnapshots,
	type SnapshotEntry,
	type StoreOptions,
	tagSnapshot,
} from './store/snapshots.js';
export {defaultStorePath, openStore, type Store} from './store/store.js';
export type {WorkspaceHolder} from './workspace/lock.js';
export {
	checkWorkspaceName,
	type WorkspaceRecord,
	type WorkspaceWrites,
	workspaceNameProblem,
} from './workspace/records.js';
export {
	cleanWorkspace,
	initWorkspace,
	listWorkspaceSnapshots,
	listWorkspaces,
	removeWorkspaceSnapshot,
	rollbackWorkspace,
	runInWorkspace,
	scrubWorkspace,
	snapshotWorkspace,
	startWorkspaceRun,
	type WorkspaceEntry,
	type WorkspaceInit,
	type WorkspaceInitOptions,
	type WorkspaceOptions,
	type WorkspaceReset,
	type WorkspaceRunEvent,
	type WorkspaceRunOptions,
	type WorkspaceScrub,
	type WorkspaceSnapshot,
	type WorkspaceSnapshotEntry,
	type WorkspaceSnapshots,
} from './workspace/workspaces.js';
