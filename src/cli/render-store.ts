import type {GcReport} from '../store/gc.js';
import type {LayerDetails, SnapshotEntry} from '../store/snapshots.js';
import {formatBytes} from '../system/format-bytes.js';

export {formatBytes} from '../system/format-bytes.js';

export function plural(count: number, singular: string, pluralForm = `${singular}s`): string {
	return `${count} ${count === 1 ? singular : pluralForm}`;
}

/** "2026-11-23T09:31:07.711Z" -> "2026-11-23 09:31:07" (UTC, as recorded). */
export function formatTime(iso: string): string {
	return iso ? iso.replace('T', ' ').replace(/\.\d+Z$|Z$/, '') : '-';
}

/** A command line as a shell would show it, quoting words that need it. */
export function formatCommand(command: readonly string[]): string {
	return command
		.map((word) => (/^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`))
		.join(' ');
}

/** Rows of cells as columns separated by two spaces; the last column is not padded. */
export function alignColumns(rows: string[][]): string {
	const widths: number[] = [];
	for (const row of rows) {
		for (const [index, cell] of row.entries()) {
			widths[index] = Math.max(widths[index] ?? 0, cell.length);
		}
	}

	return rows
		.map((row) =>
			row
				.map((cell, index) => (index === row.length - 1 ? cell : cell.padEnd(widths[index] ?? 0)))
				.join('  ')
				.trimEnd(),
		)
		.join('\n');
}

/** `scratch ls` for people: a header and one aligned line per name; commands cut to the terminal width. */
export function renderSnapshots(entries: SnapshotEntry[], width = 100): string {
	if (entries.length === 0) {
		return 'no snapshots yet: make one with scratch run --promote NAME -- CMD\n';
	}

	const rows = [
		['NAME', 'LAYER', 'PARENT', 'DEPTH', 'SIZE', 'FILES', 'CREATED', 'COMMAND'],
		...entries.map((entry) => [
			entry.name,
			entry.layer,
			entry.parent ?? '-',
			String(entry.depth),
			formatBytes(entry.size),
			String(entry.files),
			formatTime(entry.created),
			entry.command.length > 0 ? formatCommand(entry.command) : `(${entry.origin})`,
		]),
	];
	const lines = alignColumns(rows).split('\n');
	return `${lines.map((line) => (line.length > width ? `${line.slice(0, width - 1)}…` : line)).join('\n')}\n`;
}

/** `scratch inspect` for people. */
export function renderLayerDetails(details: LayerDetails): string {
	const {layer} = details;
	const fields: Array<[string, string]> = [
		['layer', layer.id],
		['names', details.names.join(', ') || '-'],
		['parent', layer.parent ?? '- (sits on the source tree)'],
		['created', formatTime(layer.created)],
		['origin', layer.squashed ? `squash of ${layer.squashed}` : layer.origin],
		['source', layer.source ?? '-'],
		['command', layer.command ? formatCommand(layer.command) : '-'],
		['exit code', layer.exitCode === undefined ? '-' : String(layer.exitCode)],
		['run', layer.run ?? '-'],
		[
			'size',
			`${formatBytes(layer.size ?? 0)} in ${plural(layer.files ?? 0, 'file')} (${plural(layer.deletions ?? 0, 'deletion')}), ${plural(layer.directories ?? 0, 'directory', 'directories')}`,
		],
		['depth', `${details.chain.length} (${plural(details.chain.length - 1, 'layer')} below)`],
	];
	const chain = [...details.chain]
		.reverse()
		.map((entry) => [
			entry.id === layer.id ? '*' : ' ',
			entry.id,
			entry.names.join(',') || '-',
			formatTime(entry.created),
			entry.command.length > 0 ? formatCommand(entry.command) : `(${entry.origin})`,
		]);
	return `${alignColumns(fields.map(([key, value]) => [`${key}:`, value]))}\nchain (top first):\n${alignColumns(
		chain,
	)
		.split('\n')
		.map((line) => `  ${line}`)
		.join('\n')}\n`;
}

/** `scratch gc` for people: one line. */
export function renderGcReport(report: GcReport): string {
	const verb = report.dryRun ? 'would free' : 'freed';
	const parts = [
		plural(report.layers.length, 'unreachable layer'),
		plural(report.halfMadeLayers.length, 'half-made layer'),
		plural(report.deadRuns.length, 'dead run'),
		plural(report.abandonedTemporary.length, 'abandoned temporary entry', 'abandoned temporary entries'),
		plural(report.trashEntries.length, 'trash entry', 'trash entries'),
	];
	if (report.abandonedWorkspaces.length > 0) {
		parts.splice(-1, 0, plural(report.abandonedWorkspaces.length, 'abandoned workspace'));
	}

	const repaired =
		report.repairedRuns.length > 0
			? `; put back ${plural(report.repairedRuns.length, 'kept run')} whose promotion was interrupted`
			: '';
	const finished =
		report.keptRuns.length > 0
			? `; ${report.dryRun ? 'would finish keeping' : 'finished keeping'} ${plural(report.keptRuns.length, 'run')} whose scratch died while keeping ${report.keptRuns.length === 1 ? 'it' : 'them'}`
			: '';
	return `scratch gc: ${verb} ${parts.join(', ')}: ${report.entriesFreed} files and directories, ${formatBytes(report.bytesFreed)}; kept ${plural(report.reachableLayers, 'reachable layer')}${repaired}${finished}\n`;
}
