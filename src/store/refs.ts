import {mkdirSync, readFileSync, rmSync} from 'node:fs';
import path from 'node:path';
import {writeFileAtomic} from '../system/atomic-file.js';
import {readDirectoryOrEmpty} from '../system/read-directory.js';
import {nameFromRefFile, refFileName} from './names.js';
import type {Store} from './store.js';

/** What a snapshot name points at. */
export type Ref = {name: string; layer: string; updated: string};

function refPath(store: Store, name: string): string {
	return path.join(store.refsDir, refFileName(name));
}

/** The layer a name points at, or undefined when there is no such name. */
export function readRef(store: Store, name: string): Ref | undefined {
	let text: string;
	try {
		text = readFileSync(refPath(store, name), 'utf8');
	} catch (error) {
		if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
			return undefined;
		}

		throw error;
	}

	const record = JSON.parse(text) as {layer: string; updated: string};
	return {name, layer: record.layer, updated: record.updated};
}

/**
Point a name at a layer, replacing what it pointed at in one atomic, durable step. Callers hold the
store (use-lock.ts) from before they learn the layer id until this returns, so gc cannot sweep it between.
*/
export async function writeRef(store: Store, name: string, layer: string): Promise<Ref> {
	mkdirSync(store.refsDir, {recursive: true, mode: 0o700});
	const ref = {name, layer, updated: new Date().toISOString()};
	await writeFileAtomic(refPath(store, name), `${JSON.stringify({layer, updated: ref.updated})}\n`, {
		mode: 0o600,
	});
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

		throw error;
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
