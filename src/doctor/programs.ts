import type {BackendName} from '../run/backend.js';
import {fuseToolNames} from '../run/namespace-plan.js';
import {findExecutableOrUndefined, programPackages} from '../system/executables.js';
import type {DoctorCheck, ProgramReport} from './report.js';

/*
The programs scratch runs (see system/executables.ts), the Debian package of each, and what cannot work
without it. A run starts only with the first five; the fuse backend needs its own; the rest serve the
background deleter, keep, gc, diff, export, import and squash.
*/
function program(name: string, neededBy: ProgramReport['neededBy']): Omit<ProgramReport, 'path'> {
	return {name, package: programPackages[name] ?? name, neededBy};
}

export const requiredPrograms: ReadonlyArray<Omit<ProgramReport, 'path'>> = [
	program('setpriv', 'every run'),
	program('unshare', 'every run'),
	program('sh', 'every run'),
	program('mount', 'every run'),
	program('mkdir', 'every run'),
	...fuseToolNames.map(([, name]) => program(name, 'fuse backend')),
	program('flock', 'other commands'),
	program('nice', 'other commands'),
	program('ionice', 'other commands'),
	program('sync', 'other commands'),
	program('cp', 'other commands'),
	program('du', 'other commands'),
	program('mkfifo', 'other commands'),
];

/** Look every program up as scratch does (system directories first, then PATH). */
export function findPrograms(
	find: (name: string) => string | undefined = findExecutableOrUndefined,
): ProgramReport[] {
	return requiredPrograms.map((program) => {
		const found = find(program.name);
		return found ? {...program, path: found} : {...program};
	});
}

/** One check per program (pure). */
export function programChecks(programs: readonly ProgramReport[]): DoctorCheck[] {
	return programs.map((program) => ({
		id: `program-${program.name}`,
		group: 'programs',
		label: program.name,
		ok: program.path !== undefined,
		detail:
			program.path ??
			`not found; install the ${program.package} package (${program.neededBy === 'other commands' ? 'gc, keep, diff, export, import or squash need it' : `${program.neededBy === 'every run' ? 'every run' : 'the fuse backend'} needs it`})`,
	}));
}

/** Why a backend cannot start for lack of a program, if it cannot. */
export function missingProgramProblem(
	backend: BackendName,
	programs: readonly ProgramReport[],
): string | undefined {
	const missing = programs.filter(
		(program) =>
			program.path === undefined &&
			(program.neededBy === 'every run' || (program.neededBy === 'fuse backend' && backend === 'fuse')),
	);
	if (missing.length === 0) {
		return undefined;
	}

	const names = missing.map((program) => `'${program.name}' (package ${program.package})`).join(', ');
	return `scratch needs the program${missing.length > 1 ? 's' : ''} ${names} and cannot find ${missing.length > 1 ? 'them' : 'it'}; install ${missing.length > 1 ? 'them' : 'it'}`;
}
