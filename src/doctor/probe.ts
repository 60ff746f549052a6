import {spawn} from 'node:child_process';
import {
	accessSync,
	chmodSync,
	constants,
	existsSync,
	lstatSync,
	mkdirSync,
	mkdtempSync,
	readdirSync,
	readlinkSync,
	rmSync,
	statSync,
	utimesSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {describeSystemError} from '../errors.js';
import {leaseName} from '../store/lease-names.js';
import {nearestExistingDirectory, storeLayout} from '../store/store.js';
import {findExecutableOrUndefined} from '../system/executables.js';
import {currentProcessIdentity, readChildPids} from '../system/process-identity.js';
import {randomId} from '../system/random-id.js';
import type {ProbeReport} from './report.js';
import type {StoreInspection} from './store.js';

/*
The trials run in a probe directory on the store's file system, so that they say something about it:
in the store's `tmp/` under a leased name (if doctor dies, gc reclaims it, as it does a dead run's
preparation), or, when there is no store yet, next to where it would be (it is not created). When
neither place can be written, the system's temp dir stands in, and the report says so. The parent's
mtime is put back afterwards, so a store's tree is as it was, to the nanosecond.
*/

/** A probe directory made for the trials. */
export type Probe = {
	directory: string;
	where: ProbeReport['where'];
	sameFilesystem: boolean;
	/** The parent's mtime before the probe was made, to put back (not for the system's temp dir). */
	restoreParentMtime?: {parent: string; mtimeNs: bigint};
	/** Why the preferred places could not be used. */
	notes: string[];
};

function isWritableDirectory(directory: string): boolean {
	try {
		accessSync(directory, constants.W_OK | constants.X_OK);
		return statSync(directory).isDirectory();
	} catch {
		return false;
	}
}

/** Make the probe directory (mode 0700) in the best place for this store. */
export function makeProbe(inspection: StoreInspection): Probe {
	const {report, existing} = inspection;
	const storeDevice = statSync(existing).dev;
	const notes: string[] = [];
	const attempt = (
		where: ProbeReport['where'],
		parent: string,
		make: () => string,
		restore: boolean,
	): Probe | undefined => {
		if (!isWritableDirectory(parent)) {
			return undefined;
		}

		const mtimeNs = statSync(parent, {bigint: true}).mtimeNs;
		try {
			const directory = make();
			return {
				directory,
				where,
				sameFilesystem: statSync(directory).dev === storeDevice,
				...(restore ? {restoreParentMtime: {parent, mtimeNs}} : {}),
				notes,
			};
		} catch (error) {
			notes.push(`cannot make a probe dir in ${parent}: ${describeSystemError(error)}`);
			return undefined;
		}
	};

	let probe: Probe | undefined;
	if (report.exists && report.writable) {
		const {tmpDir} = storeLayout(report.path);
		probe = attempt(
			'store-tmp',
			tmpDir,
			() => {
				const directory = path.join(tmpDir, leaseName('doctor', currentProcessIdentity(), randomId(6)));
				mkdirSync(directory, {mode: 0o700});
				return directory;
			},
			true,
		);
	} else if (!report.exists) {
		// Beside the store, never inside its directory: a leftover there would make it "not a scratch store".
		const ancestor = nearestExistingDirectory(path.dirname(report.path));
		if (statSync(ancestor).dev === storeDevice) {
			probe = attempt(
				'next-to-store',
				ancestor,
				() => mkdtempSync(path.join(ancestor, 'scratch-doctor-')),
				true,
			);
		}
	}

	probe ??= attempt(
		'system-tmp',
		os.tmpdir(),
		() => mkdtempSync(path.join(os.tmpdir(), 'scratch-doctor-')),
		false,
	);
	if (!probe) {
		throw new Error(`cannot make a probe dir anywhere (${notes.join('; ') || os.tmpdir()})`);
	}

	return probe;
}

function isUnder(candidate: string, directory: string): boolean {
	return candidate === directory || candidate.startsWith(`${directory}/`);
}

/**
SIGKILL this process's children that work under a directory: a trial's namespace chain (its unshare;
the PID namespace dies with it) and its store's background deleter. Only what doctor started, by pid.
*/
export function killChildrenUnder(directory: string): number[] {
	const killed: number[] = [];
	for (const pid of readChildPids(process.pid)) {
		let cwd: string;
		try {
			cwd = readlinkSync(`/proc/${pid}/cwd`).replace(/ \(deleted\)$/, '');
		} catch {
			continue;
		}

		if (isUnder(cwd, directory)) {
			try {
				process.kill(pid, 'SIGKILL');
				killed.push(pid);
			} catch {}
		}
	}

	return killed;
}

// overlayfs leaves mode-000 dirs in work dirs (and a command may make some): open every dir we own.
function openUpTree(directory: string): void {
	try {
		chmodSync(directory, 0o700);
	} catch {}

	let names: string[];
	try {
		names = readdirSync(directory);
	} catch {
		return;
	}

	for (const name of names) {
		const entry = path.join(directory, name);
		try {
			if (lstatSync(entry).isDirectory()) {
				openUpTree(entry);
			}
		} catch {}
	}
}

async function removeInUserNamespace(directory: string): Promise<void> {
	const unshare = findExecutableOrUndefined('unshare');
	const rm = findExecutableOrUndefined('rm');
	if (!unshare || !rm) {
		return;
	}

	await new Promise<void>((resolve) => {
		const child = spawn(unshare, ['--user', '--map-root-user', '--', rm, '-rf', '--', directory], {
			stdio: 'ignore',
		});
		child.on('error', () => {
			resolve();
		});
		child.on('close', () => {
			resolve();
		});
	});
}

async function restoreMtime(parent: string, mtimeNs: bigint): Promise<void> {
	const seconds = mtimeNs / 1_000_000_000n;
	const nanoseconds = mtimeNs % 1_000_000_000n;
	const touch = findExecutableOrUndefined('touch');
	if (!touch) {
		utimesSync(parent, statSync(parent).atime, Number(mtimeNs) / 1e9);
		return;
	}

	// touch keeps nanoseconds; utimes(2) through Node goes through a double and loses some.
	await new Promise<void>((resolve) => {
		const child = spawn(
			touch,
			['-m', '-d', `@${seconds}.${nanoseconds.toString().padStart(9, '0')}`, '--', parent],
			{stdio: 'ignore'},
		);
		child.on('error', () => {
			resolve();
		});
		child.on('close', () => {
			resolve();
		});
	});
}

/** Remove a probe directory and everything the trials made in it; put its parent's mtime back. */
export async function removeProbe(probe: Probe): Promise<{removed: boolean; problem?: string}> {
	killChildrenUnder(probe.directory);
	let problem: string | undefined;
	try {
		rmSync(probe.directory, {recursive: true, force: true});
	} catch (error) {
		problem = describeSystemError(error);
		openUpTree(probe.directory);
		try {
			rmSync(probe.directory, {recursive: true, force: true});
		} catch {
			if (process.geteuid?.() !== 0) {
				await removeInUserNamespace(probe.directory);
			}
		}
	}

	if (existsSync(probe.directory)) {
		return {
			removed: false,
			problem: `cannot remove ${probe.directory} (${problem ?? 'unknown'})${probe.where === 'store-tmp' ? '; scratch gc removes it' : '; remove it by hand'}`,
		};
	}

	if (probe.restoreParentMtime) {
		try {
			await restoreMtime(probe.restoreParentMtime.parent, probe.restoreParentMtime.mtimeNs);
		} catch {}
	}

	return {removed: true};
}
