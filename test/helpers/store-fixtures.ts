import {spawnSync} from 'node:child_process';
import {mkdtempSync, rmSync} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type {ExecutionContext} from 'ava';
import {openStore, type Store} from '../../src/store/store.js';
import {currentProcessIdentity, type ProcessIdentity} from '../../src/system/process-identity.js';

/** A new store in its own temp dir, removed when the test ends. */
export async function temporaryStore(t: ExecutionContext, prefix = 'scratch-store-'): Promise<Store> {
	const root = mkdtempSync(path.join(os.tmpdir(), prefix));
	t.teardown(() => rmSync(root, {recursive: true, force: true}));
	return openStore(path.join(root, 'store'));
}

/** The identity of a process that has certainly exited. */
export function deadIdentity(): ProcessIdentity {
	const child = spawnSync('sh', ['-c', 'cut -d" " -f22 /proc/$$/stat; echo $$']);
	const [startTime, pid] = String(child.stdout).trim().split('\n').map(Number);
	return {...currentProcessIdentity(), pid: pid ?? 0, startTime: startTime ?? 0};
}
