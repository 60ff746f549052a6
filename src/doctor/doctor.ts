import {mkdirSync, writeFileSync} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {describeSystemError, ScratchError} from '../errors.js';
import {
	autoOrder,
	type BackendName,
	backendProblem,
	chooseBackend,
	type HostFacts,
	readHostFacts,
} from '../run/backend.js';
import {defaultLayerFormat} from '../store/layer-format.js';
import {defaultStorePath} from '../store/store.js';
import {hostChecks, readDevFuse, readFuseOverlayfsVersion} from './host.js';
import {computeLimits, limitChecks} from './limits.js';
import {makeProbe, type Probe, removeProbe} from './probe.js';
import {findPrograms, missingProgramProblem, programChecks} from './programs.js';
import type {
	AutoReport,
	BackendReport,
	DoctorCheck,
	DoctorReport,
	ProbeReport,
	ProgramReport,
	StoreReport,
	TrialReport,
} from './report.js';
import {
	inspectStore,
	readdirGivesTypes,
	type StoreInspection,
	storeChecks,
	storeOnlyProblem,
	takesUserXattr,
} from './store.js';
import {runTrial} from './trial.js';

/** Options of `runDoctor`. */
export type DoctorOptions = {
	/** The store to check. Default: as for every command (`SCRATCH_STORE`, else the per-user default). */
	store?: string;
	/** Kill a trial run that has not finished after this many milliseconds. Default: 30,000. */
	trialTimeoutMs?: number;
	/**
	Aborting it stops doctor: the running trial is killed, no other starts, everything made is removed,
	and `runDoctor` rejects with a ScratchError.
	*/
	signal?: AbortSignal;
};

const backendNames: readonly BackendName[] = ['kernel', 'userns', 'fuse'];
const defaultTrialTimeoutMs = 30_000;

/**
What this host supports, for this store: facts read from the kernel and the store, a trial run of each
backend the facts allow (in a probe dir removed afterwards), and which backend `auto` picks. Changes
nothing it does not put back: a store's tree is the same afterwards, a missing store stays missing.
*/
export async function runDoctor(options: DoctorOptions = {}): Promise<DoctorReport> {
	const facts = readHostFacts();
	const inspection = inspectStore(options.store ?? defaultStorePath(), facts.euid);
	const store = inspection.report;
	const programs = findPrograms();
	const limits = computeLimits();
	const devFuse = readDevFuse();
	const fuseOverlayfsVersion = facts.fuseOverlayfs
		? await readFuseOverlayfsVersion(facts.fuseOverlayfs)
		: undefined;

	const factsProblems = new Map(
		backendNames.map((backend) => [
			backend,
			backendProblem(backend, facts, inspection.facts) ?? missingProgramProblem(backend, programs),
		]),
	);

	const {trials, unchecked, probe} = await probeAndTry(inspection, programs, {
		timeoutMs: options.trialTimeoutMs ?? defaultTrialTimeoutMs,
		backends: backendNames.filter((backend) => !factsProblems.get(backend)),
		...(options.signal ? {signal: options.signal} : {}),
	});
	if (options.signal?.aborted) {
		throw new ScratchError(
			`doctor was interrupted; ${probe.removed ? 'what its trials made was removed' : (probe.problem ?? `${probe.directory} is left`)}`,
		);
	}

	const backends: BackendReport[] = backendNames.map((backend) => {
		const factsProblem = factsProblems.get(backend);
		const trial = trials.get(backend) ?? null;
		const problem =
			factsProblem ??
			(trial === null
				? `not tried: ${probe.problem ?? 'no probe dir'}`
				: trial.ok
					? undefined
					: `its trial run failed: ${trial.problem}`) ??
			store.problem;
		return {
			backend,
			ok: problem === undefined,
			...(problem ? {problem} : {}),
			...(factsProblem ? {factsProblem} : {}),
			trial,
		};
	});

	const auto = decideAuto(facts, backends, inspection.facts);
	const fileSystemProblem = storeOnlyProblem('kernel', {
		...inspection.facts,
		layerFormat: defaultLayerFormat,
	});
	const checks: DoctorCheck[] = [
		...withUserxattr(
			hostChecks(facts, {devFuse, fuseOverlayfsVersion}),
			userxattrCheck(store, trials, factsProblems),
		),
		...storeChecks(store, {
			euid: facts.euid,
			fileSystemProblem,
			formatProblem: fileSystemProblem ? undefined : storeOnlyProblem('kernel', inspection.facts),
			unchecked,
		}),
		...limitChecks(limits),
		...programChecks(programs),
	];
	return {
		doctor: 1,
		host: {kernelRelease: facts.kernelRelease, euid: facts.euid},
		checks,
		store,
		limits,
		programs,
		backends,
		auto,
		probe,
		works: auto.backend !== null,
	};
}

/**
Make the probe dir, check the store's file system in it, run the trials, and remove it all, even when
something throws.
*/
async function probeAndTry(
	inspection: StoreInspection,
	programs: readonly ProgramReport[],
	{timeoutMs, backends, signal}: {timeoutMs: number; backends: readonly BackendName[]; signal?: AbortSignal},
): Promise<{
	trials: Map<BackendName, TrialReport>;
	unchecked: {dType?: string; userXattr?: string};
	probe: ProbeReport;
}> {
	const {report: store} = inspection;
	const trials = new Map<BackendName, TrialReport>();
	const unchecked: {dType?: string; userXattr?: string} = {};
	let probe: Probe;
	try {
		probe = makeProbe(inspection);
	} catch (error) {
		const problem = error instanceof Error ? error.message : String(error);
		unchecked.dType = problem;
		unchecked.userXattr = problem;
		return {
			trials,
			unchecked,
			probe: {directory: os.tmpdir(), where: 'system-tmp', sameFilesystem: false, removed: true, problem},
		};
	}

	let removal: {removed: boolean; problem?: string} = {removed: false};
	try {
		await checkFileSystem(probe, store, programs, unchecked, inspection.existing);
		for (const backend of backends) {
			if (signal?.aborted) {
				break;
			}

			trials.set(
				backend,
				await runTrial({
					backend,
					probeDirectory: probe.directory,
					layerFormat: store.layerFormat,
					timeoutMs,
					...(signal ? {signal} : {}),
				}),
			);
		}
	} finally {
		removal = await removeProbe(probe);
	}

	return {
		trials,
		unchecked,
		probe: {
			directory: probe.directory,
			where: probe.where,
			sameFilesystem: probe.sameFilesystem,
			...(probe.sameFilesystem && probe.where !== 'system-tmp' ? {} : {note: probeNote(probe, store)}),
			removed: removal.removed,
			...(removal.problem ? {problem: removal.problem} : {}),
		},
	};
}

// d_type and user xattrs of the store's file system, tried in the probe dir when it is on it.
async function checkFileSystem(
	probe: Probe,
	store: StoreReport,
	programs: readonly ProgramReport[],
	unchecked: {dType?: string; userXattr?: string},
	existing: string,
): Promise<void> {
	if (!probe.sameFilesystem) {
		// Reading the store's own dir changes nothing; it tells only when it holds something.
		store.dType = readdirGivesTypes(existing);
		unchecked.dType = `${existing} holds nothing to read and the store's file system cannot be written here`;
		store.userXattr = null;
		unchecked.userXattr = "the store's file system cannot be written here";
		return;
	}

	const sample = path.join(probe.directory, 'sample');
	try {
		mkdirSync(path.join(probe.directory, 'sample-dir'));
		writeFileSync(sample, '');
	} catch (error) {
		const reason = `cannot write in ${probe.directory}: ${describeSystemError(error)}`;
		unchecked.dType = reason;
		unchecked.userXattr = reason;
		return;
	}

	store.dType = readdirGivesTypes(probe.directory);
	unchecked.dType = "this Node.js does not show readdir's raw entry types";
	const setfattr = programs.find((program) => program.name === 'setfattr')?.path;
	const getfattr = programs.find((program) => program.name === 'getfattr')?.path;
	if (!setfattr || !getfattr) {
		unchecked.userXattr = 'setfattr and getfattr are needed to try (install the attr package)';
		return;
	}

	const xattr = await takesUserXattr(sample, {setfattr, getfattr});
	store.userXattr = xattr.ok;
	if (xattr.reason) {
		unchecked.userXattr = xattr.reason;
	}
}

function probeNote(probe: Probe, store: StoreReport): string {
	const reason =
		store.problem ??
		(probe.notes.length > 0
			? probe.notes.join('; ')
			: "the store's nearest existing directory cannot be written, or is on another file system");
	const where = probe.sameFilesystem
		? `not where the store is (but on the same file system, ${store.filesystem})`
		: `not on the store's file system (${store.filesystem})`;
	return `the trials ran in ${path.dirname(probe.directory)}, ${where}: ${reason}`;
}

function withUserxattr(checks: DoctorCheck[], userxattr: DoctorCheck): DoctorCheck[] {
	const index = checks.findIndex((check) => check.id === 'apparmor-userns');
	return [...checks.slice(0, index + 1), userxattr, ...checks.slice(index + 1)];
}

/** Whether kernel overlay mounted with userxattr writes the portable layer format here: from the kernel backends' trials. */
function userxattrCheck(
	store: StoreReport,
	trials: ReadonlyMap<BackendName, TrialReport>,
	factsProblems: ReadonlyMap<BackendName, string | undefined>,
): DoctorCheck {
	const check = {id: 'userxattr', group: 'host', label: 'userxattr'} as const;
	if (store.layerFormat !== defaultLayerFormat) {
		return {
			...check,
			ok: null,
			detail: `not used: the store keeps whiteouts as .wh. files (${store.layerFormat}), which only fuse-overlayfs reads`,
		};
	}

	const tried = (['kernel', 'userns'] as const).flatMap((backend) => {
		const trial = trials.get(backend);
		return trial ? [{backend, trial}] : [];
	});
	const passed = tried.find(({trial}) => trial.ok);
	if (passed) {
		return {
			...check,
			ok: true,
			detail: `the ${passed.backend} trial's upper holds a 0/0 whiteout and a user.overlay.opaque=y dir: overlay with userxattr writes the store's layer format`,
		};
	}

	if (tried.length > 0) {
		return {
			...check,
			ok: false,
			detail: tried.map(({backend, trial}) => `the ${backend} trial failed: ${trial.problem}`).join('; '),
		};
	}

	const reasons = (['kernel', 'userns'] as const).map(
		(backend) => `${backend}: ${factsProblems.get(backend) ?? 'no probe dir'}`,
	);
	return {...check, ok: null, detail: `not tried: ${reasons.join('; ')}`};
}

/** `kernel and userns: PROBLEM; fuse: OTHER`: each distinct problem once, after the backends it stops. */
export function describeProblems(passedOver: AutoReport['passedOver']): string {
	const byProblem = new Map<string, BackendName[]>();
	for (const {backend, problem} of passedOver) {
		byProblem.set(problem, [...(byProblem.get(problem) ?? []), backend]);
	}

	return [...byProblem].map(([problem, backends]) => `${backends.join(' and ')}: ${problem}`).join('; ');
}

/** What `--backend auto` picks here: by the facts (as `scratch run` does) and in reality (facts and trials). */
export function decideAuto(
	facts: HostFacts,
	backends: readonly BackendReport[],
	storeFacts?: Parameters<typeof chooseBackend>[2],
): AutoReport {
	let factsPick: BackendName | null;
	try {
		factsPick = chooseBackend('auto', facts, storeFacts).backend;
	} catch {
		factsPick = null;
	}

	const passedOver: AutoReport['passedOver'] = [];
	let backend: BackendName | null = null;
	for (const name of autoOrder(facts)) {
		const report = backends.find((candidate) => candidate.backend === name);
		if (report?.ok) {
			backend = name;
			break;
		}

		passedOver.push({backend: name, problem: report?.problem ?? 'not checked'});
	}

	const why = passedOver.length > 0 ? `, passing over ${describeProblems(passedOver)}` : '';
	let summary =
		backend === null
			? `no backend can isolate a run here: ${describeProblems(passedOver)}`
			: `auto picks ${backend}${why}`;
	if (factsPick !== null && factsPick !== backend) {
		// scratch run does not try: it takes the first backend the facts allow.
		summary += `; but scratch run --backend auto goes by the facts alone and would take ${factsPick} and fail${backend === null ? '' : `: pass --backend ${backend}`}`;
	} else if (factsPick === null && backend !== null) {
		summary += `; but scratch run --backend auto goes by the facts alone and would refuse to run: pass --backend ${backend}`;
	}

	return {backend, passedOver, factsPick, summary};
}
