import {mkdirSync, opendirSync, readFileSync} from 'node:fs';
import path from 'node:path';
import {describeSystemError, InvalidNameError, NotFoundError, StoreError} from '../errors.js';
import {maxNameLength, nameProblem} from '../store/names.js';
import type {Store} from '../store/store.js';
import {writeFileAtomic} from '../system/atomic-file.js';
import {isProcessAlive, type ProcessIdentity} from '../system/process-identity.js';
import {readDirectoryOrEmpty} from '../system/read-directory.js';

/*
A workspace lives in `workspaces/WS/`: its record (`workspace.json`), the writable state on top of its
current snapshot (`upper`, with the overlay's `work`), and `merged`, where every run of it sees the
view, so paths the command records stay valid from one run to the next. Its snapshots are ordinary
names, `WS/NAME`, in the store's `refs/`.
*/

/** The runs whose writes the writable state holds. */
export type WorkspaceWrites = {
	/** Runs since the current snapshot was taken or restored (their writes are in `upper`). */
	runs: number;
	/** The last few of their commands, oldest first. */
	commands: string[][];
	/** When the current snapshot was taken or restored. */
	since: string;
	/** The snapshot name it was taken or restored as, when it had one. */
	from?: string;
};

/** What the store records about a workspace in `workspaces/WS/workspace.json`. */
export type WorkspaceRecord = {
	name: string;
	/** `initialising` until `ws init` has named postinit; one whose owner died is garbage. */
	state: 'initialising' | 'ready';
	/** The `ws init` process, while the workspace is initialising. */
	owner?: ProcessIdentity;
	created: string;
	/** The source tree: the bottom of every run's view. */
	src: string;
	/** The names given with `--base` at init. */
	bases: string[];
	/** The current snapshot's stack, bottom first: the current snapshot is the last layer. */
	layers: string[];
	writes: WorkspaceWrites;
	/** A snapshot being taken: the layer the writes are becoming, and its name. Finished on next use. */
	snapshotting?: {layer: string; name: string};
};

/** Commands remembered per writable state (for what `clean` and `rollback` say they dropped). */
const rememberedCommands = 10;

export const workspaceEntries = {
	record: 'workspace.json',
	upper: 'upper',
	work: 'work',
	merged: 'merged',
};

/** Where a store's workspaces live. */
export function workspacesDirectory(store: Store): string {
	return path.join(store.root, 'workspaces');
}

/** A workspace's directory. */
export function workspaceDirectory(store: Store, name: string): string {
	return path.join(workspacesDirectory(store), name);
}

/** Why `name` cannot be a workspace name, or undefined: one name segment, leaving room for `/SNAPSHOT`. */
export function workspaceNameProblem(name: string): string | undefined {
	if (name.includes('/')) {
		return "it holds '/'; a workspace name is one segment (its snapshots are WS/NAME)";
	}

	const problem = nameProblem(name);
	if (problem) {
		return problem;
	}

	if (name.length > maxNameLength - 2) {
		return `it is ${name.length} characters long; with /SNAPSHOT it must fit ${maxNameLength}`;
	}

	return undefined;
}

/** Check a workspace name. */
export function checkWorkspaceName(name: string): string {
	const problem = workspaceNameProblem(name);
	if (problem) {
		throw new InvalidNameError(
			`invalid workspace name ${JSON.stringify(name)}: ${problem}; use letters, digits, '.', '_' and '-'`,
		);
	}

	return name;
}

/** Check a snapshot name of workspace `workspace` and return its full name, `WS/NAME`. */
export function snapshotRefName(workspace: string, name: string): string {
	const full = `${workspace}/${name}`;
	const problem = name.includes('/') ? "it holds '/'; a snapshot name is one segment" : nameProblem(name);
	if (problem) {
		throw new InvalidNameError(
			`invalid snapshot name ${JSON.stringify(name)}: ${problem}; use letters, digits, '.', '_' and '-'`,
		);
	}

	if (full.length > maxNameLength) {
		throw new InvalidNameError(
			`invalid snapshot name ${JSON.stringify(name)}: ${full} is ${full.length} characters long, the limit is ${maxNameLength}; use a shorter name`,
		);
	}

	return full;
}

/** A workspace's record, or undefined when there is no such workspace (or no record: debris). */
export function readWorkspace(store: Store, name: string): WorkspaceRecord | undefined {
	let text: string;
	try {
		text = readFileSync(path.join(workspaceDirectory(store, name), workspaceEntries.record), 'utf8');
	} catch (error) {
		const {code} = error as NodeJS.ErrnoException;
		if (code === 'ENOENT' || code === 'ENOTDIR') {
			return undefined;
		}

		throw new StoreError(
			`cannot read workspace ${name}'s record: ${describeSystemError(error)}; run scratch as the user who owns the store`,
			{cause: error},
		);
	}

	try {
		return JSON.parse(text) as WorkspaceRecord;
	} catch (error) {
		throw new StoreError(`workspace ${name}'s record is damaged; remove it with scratch ws scrub ${name}`, {
			cause: error,
		});
	}
}

/** Whether a workspace's record describes a finished one (not an init that is running or died). */
export function isReady(record: WorkspaceRecord): boolean {
	return record.state === 'ready';
}

/** Whether an initialising workspace's `ws init` died: it is garbage. */
export function isAbandoned(record: WorkspaceRecord): boolean {
	return record.state !== 'ready' && (!record.owner || !isProcessAlive(record.owner));
}

/** A finished workspace's record, or a clear error. */
export function requireWorkspace(store: Store, name: string): WorkspaceRecord {
	checkWorkspaceName(name);
	const record = readWorkspace(store, name);
	if (!record) {
		throw new NotFoundError(
			`no workspace ${name} in store ${store.root}; create it with scratch ws init ${name} (scratch ws ls lists them)`,
		);
	}

	if (!isReady(record)) {
		throw new NotFoundError(
			isAbandoned(record)
				? `workspace ${name} was never finished: its ws init died; remove it with scratch ws scrub ${name}, or init it again`
				: `workspace ${name} is still being initialised (by pid ${record.owner?.pid}); wait for its ws init to finish`,
		);
	}

	return record;
}

/** Every workspace directory's name, sorted. */
export function listWorkspaceNames(store: Store): string[] {
	return readDirectoryOrEmpty(workspacesDirectory(store))
		.filter((name) => !name.startsWith('.'))
		.sort();
}

/** Record a workspace's new state, durably (temp, fsync, rename). */
export async function writeWorkspace(store: Store, record: WorkspaceRecord): Promise<void> {
	await writeFileAtomic(
		path.join(workspaceDirectory(store, record.name), workspaceEntries.record),
		`${JSON.stringify(record, undefined, '\t')}\n`,
		{mode: 0o600},
	);
}

/** A fresh writable state on the current snapshot, taken or restored as `from`. */
export function freshWrites(from?: string): WorkspaceWrites {
	return {runs: 0, commands: [], since: new Date().toISOString(), ...(from === undefined ? {} : {from})};
}

/** The writable state after one more run. */
export function writesAfterRun(writes: WorkspaceWrites, command: string[]): WorkspaceWrites {
	return {
		...writes,
		runs: writes.runs + 1,
		commands: [...writes.commands, command].slice(-rememberedCommands),
	};
}

/** Make the dirs a workspace's runs need (after a crash between dropping an upper and making the next). */
export function ensureWorkspaceDirectories(directory: string): void {
	for (const entry of [workspaceEntries.upper, workspaceEntries.work, workspaceEntries.merged]) {
		mkdirSync(path.join(directory, entry), {recursive: true, mode: 0o755});
	}
}

/** Whether a directory is empty, reading at most one entry (an upper can hold millions). */
export function isEmptyDirectory(directory: string): boolean {
	let handle: ReturnType<typeof opendirSync>;
	try {
		handle = opendirSync(directory);
	} catch (error) {
		if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
			return true;
		}

		throw error;
	}

	try {
		return handle.readSync() === null;
	} finally {
		handle.closeSync();
	}
}
