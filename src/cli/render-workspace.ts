import type {WorkspaceHolder} from '../workspace/lock.js';
import type {WorkspaceWrites} from '../workspace/records.js';
import type {
	WorkspaceEntry,
	WorkspaceInit,
	WorkspaceReset,
	WorkspaceScrub,
	WorkspaceSnapshot,
	WorkspaceSnapshots,
} from '../workspace/workspaces.js';
import {alignColumns, formatBytes, formatCommand, formatTime, plural} from './render-store.js';

/** "the writes of 2 runs since postinit (make; make install)". */
export function describeWrites(writes: WorkspaceWrites): string {
	const since = writes.from ? ` since ${writes.from}` : '';
	if (writes.runs === 0) {
		return `writes of no recorded run${since}`;
	}

	const elided = writes.runs > writes.commands.length ? '...; ' : '';
	const shown = writes.commands.map((command) => formatCommand(command)).join('; ');
	return `the writes of ${plural(writes.runs, 'run')}${since}${shown ? ` (${elided}${shown})` : ''}`;
}

function describeBusy(holder: WorkspaceHolder | undefined): string {
	if (!holder) {
		return 'idle';
	}

	return `${holder.operation === 'run' ? 'running' : holder.operation} (pid ${holder.pid})`;
}

/** `scratch ws snapshot` for people. */
export function renderWorkspaceSnapshot(snapshot: WorkspaceSnapshot): string {
	return snapshot.created
		? `snapshot ${snapshot.name} is new layer ${snapshot.layer}, now current\n`
		: `snapshot ${snapshot.name} names the current layer ${snapshot.layer} (nothing was written since)\n`;
}

/** `scratch ws rollback` and `ws clean` for people. */
export function renderWorkspaceReset(reset: WorkspaceReset, target: string): string {
	const dropped = reset.dropped.hadWrites
		? `dropped ${describeWrites(reset.dropped)}`
		: 'there were no writes to drop';
	const freed =
		reset.freed.length > 0
			? `; freed ${plural(reset.freed.length, 'layer')} nothing reached any more (${reset.freed.join(', ')})`
			: '';
	return `${reset.workspace} is at ${target} (layer ${reset.layer}); ${dropped}${freed}\n`;
}

/** `scratch ws snapshots` for people: the names, current ones starred, then the writable state. */
export function renderWorkspaceSnapshots(listing: WorkspaceSnapshots): string {
	const rows = [
		['', 'NAME', 'LAYER', 'SIZE', 'FILES', 'CREATED'],
		...listing.snapshots.map((entry) => [
			entry.current ? '*' : '',
			entry.name,
			entry.layer,
			formatBytes(entry.size),
			String(entry.files),
			formatTime(entry.created),
		]),
	];
	const lines: string[] = [];
	if (listing.snapshots.length > 0) {
		lines.push(alignColumns(rows));
	}

	if (!listing.snapshots.some((entry) => entry.current)) {
		lines.push(
			`current: layer ${listing.current}, which no name points at (name it with scratch ws snapshot ${listing.workspace} NAME)`,
		);
	}

	lines.push(
		listing.writes.runs > 0
			? `writes: ${describeWrites(listing.writes)}`
			: 'writes: none since the current snapshot',
	);
	if (listing.busy) {
		lines.push(`busy: ${describeBusy(listing.busy)}`);
	}

	return `${lines.join('\n')}\n`;
}

/** `scratch ws ls` for people. */
export function renderWorkspaces(entries: WorkspaceEntry[]): string {
	if (entries.length === 0) {
		return 'no workspaces yet: make one with scratch ws init WS [-- CMD]\n';
	}

	const rows = [
		['WORKSPACE', 'CURRENT', 'SNAPSHOTS', 'RUNS', 'STATE', 'CREATED', 'SOURCE'],
		...entries.map((entry) => [
			entry.name,
			entry.currentNames && entry.currentNames.length > 0
				? entry.currentNames.join(',')
				: (entry.current ?? '-'),
			String(entry.snapshots ?? '-'),
			String(entry.runs ?? '-'),
			entry.state === 'ready' ? describeBusy(entry.busy) : entry.state,
			entry.created ? formatTime(entry.created) : '-',
			entry.src ?? '-',
		]),
	];
	return `${alignColumns(rows)}\n`;
}

/** `scratch ws rm` for people. */
export function renderWorkspaceRemoval(removal: {name: string; layer: string; freed: string[]}): string {
	const freed =
		removal.freed.length > 0
			? `freed ${plural(removal.freed.length, 'layer')} nothing else reached (${removal.freed.join(', ')})`
			: `layer ${removal.layer} is still reached, so it stays`;
	return `removed ${removal.name}; ${freed}\n`;
}

/** `scratch ws scrub` for people. */
export function renderWorkspaceScrub(scrub: WorkspaceScrub): string {
	return `scrubbed workspace ${scrub.workspace}: removed ${plural(scrub.names.length, 'snapshot name')}, freed ${plural(scrub.freed.length, 'layer')} nothing else reached\n`;
}

/** `scratch ws init` for people. */
export function renderWorkspaceInit(init: WorkspaceInit): string {
	return `workspace ${init.workspace.name} is ready on ${init.workspace.src}; ${init.workspace.name}/postinit is layer ${init.postinit}\n`;
}
