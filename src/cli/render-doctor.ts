import type {BackendReport, CheckGroup, DoctorCheck, DoctorReport} from '../doctor/report.js';

/** `ok`, `no`, or `--` (does not apply, or could not be checked). */
export function statusWord(ok: boolean | null): string {
	return ok === null ? '--' : ok ? 'ok' : 'no';
}

/** What a backend line says. */
export function describeBackend(backend: BackendReport): string {
	if (backend.ok && backend.trial) {
		const {upper, layerFormat, durationMs} = backend.trial;
		const found = upper?.whiteout && upper.opaque ? `; its upper is in the ${layerFormat} layer format` : '';
		return `trial run passed in ${durationMs} ms: wrote a file, deleted a lower file, replaced a lower dir${found}`;
	}

	if (backend.factsProblem) {
		return `${backend.factsProblem} (not tried)`;
	}

	return backend.problem ?? 'unknown';
}

const groupTitles: Record<CheckGroup, (report: DoctorReport) => string> = {
	host: (report) => `host (Linux ${report.host.kernelRelease}, uid ${report.host.euid}):`,
	store: (report) =>
		`store ${report.store.path}${report.store.exists ? '' : ' (does not exist yet; doctor does not make it)'}:`,
	limits: () => 'limits:',
	programs: () => 'programs:',
};

// Programs are many: one line for those found, one per missing one.
function programRows(checks: DoctorCheck[]): Array<[string, string, string]> {
	const found = checks.filter((check) => check.ok);
	const missing = checks.filter((check) => !check.ok);
	const summary: [string, string, string] = [
		statusWord(missing.length === 0),
		'programs',
		missing.length === 0
			? `all ${checks.length} found: ${found.map((check) => check.label).join(', ')}`
			: `${found.length} of ${checks.length} found`,
	];
	return [summary, ...missing.map((check): [string, string, string] => ['no', check.label, check.detail])];
}

/** The human form of a doctor report: aligned `ok  label  detail` lines by section, and auto's pick last. */
export function renderDoctorReport(report: DoctorReport): string {
	const sections: Array<{title: string; rows: Array<[string, string, string]>}> = [];
	for (const group of Object.keys(groupTitles) as CheckGroup[]) {
		const checks = report.checks.filter((check) => check.group === group);
		sections.push({
			title: groupTitles[group](report),
			rows:
				group === 'programs'
					? programRows(checks)
					: checks.map((check): [string, string, string] => [
							statusWord(check.ok),
							check.label,
							check.detail,
						]),
		});
	}

	const {probe} = report;
	const backendRows = report.backends.map((backend): [string, string, string] => [
		statusWord(backend.ok),
		backend.backend,
		describeBackend(backend),
	]);
	if (probe.note) {
		backendRows.push(['--', 'trials', probe.note]);
	}

	if (!probe.removed || probe.problem) {
		backendRows.push([statusWord(probe.removed), 'cleanup', probe.problem ?? 'not everything was removed']);
	}

	sections.push({
		title: `backends (trial runs in ${probe.directory}, removed afterwards):`,
		rows: backendRows,
	});

	const width = Math.max(...sections.flatMap(({rows}) => rows.map(([, label]) => label.length)));
	const lines = sections.flatMap(({title, rows}) => [
		title,
		...rows.map(([status, label, detail]) => `${status}  ${label.padEnd(width)}  ${detail}`),
	]);
	lines.push(report.auto.summary);
	return `${lines.join('\n')}\n`;
}
