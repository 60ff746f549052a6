import {mkdirSync, rmSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import {setTimeout as sleep} from 'node:timers/promises';
import {describeSystemError, PermissionError} from '../errors.js';
import {holdFileLock} from '../system/flock-hold.js';
import {currentProcessIdentity} from '../system/process-identity.js';
import {randomId} from '../system/random-id.js';
import {readDirectoryOrEmpty} from '../system/read-directory.js';
import {isLeaseNameAlive, leaseName} from './lease-names.js';
import type {Store} from './store.js';

/*
Two kinds of holders share `locks/`: users (anything about to add a reference to a layer: a run
resolving its bases, a promotion, a tag) and collectors (gc between marking and sweeping). Users never
wait for each other; a collector waits until no user holds the store, and users wait while a collector
does. Each holder is one empty file whose name carries its owner's identity (lease-names.ts), so a
holder that died is recognised and ignored: nobody ever waits for the dead. The protocol is Dekker's:
announce yourself first, then look for the other kind; a user who sees a collector withdraws before
waiting, so the two kinds never wait for each other at once. Nobody holds the store while a command runs.
*/

const pollMilliseconds = 5;

/** Give the store back. */
export type StoreHold = {release(): void};

function announce(store: Store, kind: 'use' | 'gc'): string {
	const file = path.join(store.locksDir, leaseName(kind, currentProcessIdentity(), randomId(6)));
	try {
		mkdirSync(store.locksDir, {recursive: true, mode: 0o700});
		writeFileSync(file, '', {flag: 'wx', mode: 0o600});
	} catch (error) {
		throw holdError(store, error);
	}

	return file;
}

/** Why the store cannot be held: what to do about a read-only or someone else's store. */
function holdError(store: Store, error: unknown): Error {
	const {code} = error as NodeJS.ErrnoException;
	if (code === 'EROFS') {
		return new PermissionError(
			`cannot hold store ${store.root}: read-only file system, and this command changes it (a read-only store can still be listed, inspected, diffed and exported); use a store on a writable file system with --store DIR`,
			{cause: error},
		);
	}

	if (code === 'EACCES' || code === 'EPERM') {
		return new PermissionError(
			`cannot hold store ${store.root}: ${describeSystemError(error)}; run scratch as the store's owner, or use your own store with --store DIR`,
			{cause: error},
		);
	}

	return error as Error;
}

function withdraw(file: string): void {
	rmSync(file, {force: true});
}

/** Live holders of one kind (other than `self`); the dead ones' files are removed on the way. */
function liveHolders(store: Store, kind: 'use' | 'gc', self?: string): string[] {
	const names = readDirectoryOrEmpty(store.locksDir);

	const live: string[] = [];
	for (const name of names) {
		if (!name.startsWith(`${kind}.`) || path.join(store.locksDir, name) === self) {
			continue;
		}

		if (isLeaseNameAlive(name)) {
			live.push(name);
		} else {
			withdraw(path.join(store.locksDir, name));
		}
	}

	return live;
}

/** Hold the store as a user: no collector sweeps while this is held. Waits while a collector runs. */
export async function holdStoreUse(store: Store): Promise<StoreHold> {
	for (;;) {
		const file = announce(store, 'use');
		if (liveHolders(store, 'gc').length === 0) {
			return {release: () => withdraw(file)};
		}

		withdraw(file);
		while (liveHolders(store, 'gc').length > 0) {
			await sleep(pollMilliseconds);
		}
	}
}

/**
Hold the store as a collector: returns once no user holds it; users then wait until release. Collectors
also exclude each other (a flock(2) on `locks/collector`, which dies with its holder), so two gcs never
repair the same interrupted promotion at once.
*/
export async function holdStoreCollection(store: Store): Promise<StoreHold> {
	try {
		mkdirSync(store.locksDir, {recursive: true, mode: 0o700});
	} catch (error) {
		throw holdError(store, error);
	}

	const collector = await holdFileLock(path.join(store.locksDir, 'collector'));
	let file: string | undefined;
	try {
		// Holding the collector lock, any other collector's file is a dead one's (gc killed midway): clear it.
		liveHolders(store, 'gc');
		file = announce(store, 'gc');
		while (liveHolders(store, 'use', file).length > 0) {
			await sleep(pollMilliseconds);
		}
	} catch (error) {
		if (file) {
			withdraw(file);
		}

		collector.release();
		throw error;
	}

	return {
		release() {
			withdraw(file as string);
			collector.release();
		},
	};
}
