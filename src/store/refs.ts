import {mkdirSync, readFileSync, rmSync} from 'node:fs';
import path from 'node:path';
import {describeSystemError, PermissionError, StoreError} from '../errors.js';
import {writeFileAtomic} from '../system/atomic-file.js';
import {readDirectoryOrEmpty} from '../system/read-directory.js';
import {isLayerId} from './layers.js';
import {nameFromRefFile, refFileName} from './names.js';
import type {Store} from './store.js';

/** What a snapshot name points at. */
export type Ref = {name: string; layer: string; updated: string};

function refPath(store: Store, name: string): string {
	return path.join(store.refsDir, refFileName(name));
}

/** A name file that cannot be read or written: another user's file, a read-only store, a full disk. */
function refAccessError(store: Store, name: string, action: 'read' | 'write' | 'remove', error: unknown) {
	const {code} = error as NodeJS.ErrnoException;
	const failed = `cannot ${action} name ${name} in store ${store.root}: ${describeSystemError(error)} on ${refPath(store, name)}`;
	if (code === 'EROFS') {
		return new PermissionError(`${failed}; use a store on a writable file system with --store DIR`, {
			cause: error,
		});
	}

	if (code === 'EACCES' || code === 'EPERM') {
		return new PermissionError(
			`${failed}; run scratch as the user who owns the store, or give the whole store back to that user with chown -R`,
			{cause: error},
		);
	}

	return new StoreError(failed, {cause: error});
}

function damagedRef(store: Store, name: string, cause?: unknown): StoreError {
	return new StoreError(
		`name ${name} in store ${store.root} is damaged: ${refPath(store, name)} does not hold a layer id; delete that file and name the layer again (scratch ls, scratch tag)`,
		{cause},
	);
}

/** The layer a name points at, or undefined when there is no such name. */
export function readRef(store: Store, name: string): Ref | undefined {
	let text: string;
	try {
		text = readFileSync(refPath(store, name), 'utf8');
	} catch (error) {
		const {code} = error as NodeJS.ErrnoException;
		if (code === 'ENOENT') {
			return undefined;
		}

		throw code === 'EISDIR' ? damagedRef(store, name, error) : refAccessError(store, name, 'read', error);
	}

	let record: unknown;
	try {
		record = JSON.parse(text);
	} catch (error) {
		throw damagedRef(store, name, error);
	}

	const {layer, updated} = (typeof record === 'object' && record !== null ? record : {}) as {
		layer?: unknown;
		updated?: unknown;
	};
	if (typeof layer !== 'string' || !isLayerId(layer)) {
		throw damagedRef(store, name);
	}

	return {name, layer, updated: typeof updated === 'string' ? updated : ''};
}

/**
Point a name at a layer, replacing what it pointed at in one atomic, durable step. Callers hold the
store (use-lock.ts) from before they learn the layer id until this returns, so gc cannot sweep it between.
*/
export async function writeRef(store: Store, name: string, layer: string): Promise<Ref> {
	const ref = {name, layer, updated: new Date().toISOString()};
	try {
		mkdirSync(store.refsDir, {recursive: true, mode: 0o700});
		await writeFileAtomic(refPath(store, name), `${JSON.stringify({layer, updated: ref.updated})}\n`, {
			mode: 0o600,
		});
	} catch (error) {
		throw refAccessError(store, name, 'write', error);
	}

	return ref;
}

/** Remove a name; returns false when it did not exist. The layer stays until gc finds it unreachable. */
export function removeRef(store: Store, name: string): boolean {
	try {
		rmSync(refPath(store, name));
		return true;
	} catch (error) {
		if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
			return false;
		}

		throw refAccessError(store, name, 'remove', error);
	}
}

/** Every name in the store, sorted. */
export function listRefs(store: Store): Ref[] {
	const refs: Ref[] = [];
	for (const file of readDirectoryOrEmpty(store.refsDir)) {
		const name = nameFromRefFile(file);
		const ref = name === undefined || file.startsWith('.') ? undefined : readRef(store, name);
		if (ref) {
			refs.push(ref);
		}
	}

	return refs.sort((a, b) => a.name.localeCompare(b.name));
}
