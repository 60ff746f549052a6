import {mkdirSync, readFileSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import {setTimeout as sleep} from 'node:timers/promises';
import {BusyError} from '../errors.js';
import type {Store} from '../store/store.js';
import {type FileLock, holdFileLock, tryFileLock} from '../system/flock-hold.js';
import {currentProcessIdentity, isProcessAlive, type ProcessIdentity} from '../system/process-identity.js';

/*
One process at a time changes a workspace: a run (which holds it for as long as its command runs),
init, snapshot, rollback, clean or scrub. The lock is a flock(2) on `locks/workspace.WS`, held by a
flock(1) child that dies with us, so a holder that died never blocks anyone. The holder writes who it
is into the file, for the message of whoever finds the workspace busy. Lock files stay when a workspace
is scrubbed: removing one could let two processes hold "the" lock on two different files.
Readers (`ws snapshots`, `ws ls`) never take the lock.
*/

/** What holds a workspace. */
export type WorkspaceHolder = ProcessIdentity & {
	operation: 'run' | 'init' | 'snapshot' | 'rollback' | 'clean' | 'scrub';
	command?: string[];
	since: string;
};

/** What to do when the workspace is busy. */
export type BusyPolicy =
	/** Wait for the holder (`ws run`); `onWait` hears who it is first. */
	| {wait: true; onWait?: (holder: WorkspaceHolder | undefined) => void}
	/** Fail at once (`ws run --no-wait`, `ws init`). */
	| {wait: false}
	/** Wait for another short change (a snapshot), but refuse while a run or init holds it. */
	| {wait: 'unless-run'};

function lockFilePath(store: Store, workspace: string): string {
	return path.join(store.locksDir, `workspace.${workspace}`);
}

/** Who holds a workspace now, if anyone (never blocks). */
export function workspaceHolder(store: Store, workspace: string): WorkspaceHolder | undefined {
	let holder: WorkspaceHolder;
	try {
		holder = JSON.parse(readFileSync(lockFilePath(store, workspace), 'utf8')) as WorkspaceHolder;
	} catch {
		return undefined;
	}

	return isProcessAlive(holder) ? holder : undefined;
}

/** How a holder reads in a message. */
export function describeHolder(holder: WorkspaceHolder | undefined): string {
	if (!holder) {
		return 'another scratch process';
	}

	const what = holder.operation === 'run' ? 'ws run' : `ws ${holder.operation}`;
	const command = holder.command?.length ? `: ${holder.command.join(' ')}` : '';
	return `${what} (pid ${holder.pid}, since ${holder.since}${command})`;
}

/*
A lock without a live holder recorded is being taken (the holder writes its identity just after) or
given back (its flock(1) child exits just after its holder cleared the file, or died): try again for
this long before calling the holder unknown.
*/
const settleMilliseconds = 1000;

/** Take a workspace's lock for `operation`, following `policy` when someone else has it. */
export async function lockWorkspace(
	store: Store,
	workspace: string,
	operation: WorkspaceHolder['operation'],
	policy: BusyPolicy,
	command?: string[],
): Promise<FileLock> {
	mkdirSync(store.locksDir, {recursive: true, mode: 0o700});
	const file = lockFilePath(store, workspace);
	let lock = await tryFileLock(file);
	let unknownSince: number | undefined;
	while (!lock) {
		const holder = workspaceHolder(store, workspace);
		unknownSince = holder ? undefined : (unknownSince ?? Date.now());
		if (unknownSince !== undefined && Date.now() - unknownSince < settleMilliseconds) {
			await sleep(10);
			lock = await tryFileLock(file);
			continue;
		}

		const busyWithRun = !holder || holder.operation === 'run' || holder.operation === 'init';
		if (policy.wait === false || (policy.wait === 'unless-run' && busyWithRun)) {
			throw new BusyError(
				`workspace ${workspace} is busy: ${describeHolder(holder)} is using it; ${
					policy.wait === false ? 'wait for it to finish, or drop --no-wait to wait' : 'wait for it to finish'
				}`,
			);
		}

		if (policy.wait === true) {
			policy.onWait?.(holder);
			lock = await holdFileLock(file);
		} else {
			await sleep(10);
			lock = await tryFileLock(file);
		}
	}

	const holder: WorkspaceHolder = {
		...currentProcessIdentity(),
		operation,
		...(command ? {command} : {}),
		since: new Date().toISOString(),
	};
	// Written in place, never renamed: the flock belongs to this file's inode.
	writeFileSync(file, JSON.stringify(holder));
	const held = lock;
	return {
		release() {
			try {
				writeFileSync(file, '');
			} finally {
				held.release();
			}
		},
	};
}
