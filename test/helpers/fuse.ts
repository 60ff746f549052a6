import {mkdirSync, readFileSync} from 'node:fs';
import path from 'node:path';
import {chownTree, type NamespaceSetup, nobodyId, processesWith, type Sandbox} from './scratch.js';

/**
A store on overlayfs, as inside a container whose root is overlayfs. Each scratch process gets the
overlay mounted (in its own private mount namespace, see NamespaceSetup) over `mountPoint`, so the store
path is `store`; the test itself reads what the store holds through `backing`, the overlay's upper dir
(its lower is empty, so the upper holds everything the store does). Runs of such a store are sequential:
one overlay upper mounted twice at once is undefined behaviour.
*/
export type OverlayfsStore = {
	/** The store path scratch is given (inside the overlay). */
	store: string;
	/** The same store as the test sees it: the overlay's upper dir. */
	backing: string;
	/** Pass as `setup` to `scratch`/`scratchRun` (with a usable /dev/fuse for nobody). */
	setup: NamespaceSetup;
};

/** Make the dirs of an overlayfs-hosted store in a sandbox, owned by the sandbox's user. */
export function overlayfsStore(sandbox: Sandbox): OverlayfsStore {
	const base = path.join(sandbox.root, 'container');
	const [lower, upper, work, target] = ['lower', 'upper', 'work', 'root'].map((name) =>
		path.join(base, name),
	) as [string, string, string, string];
	for (const directory of [lower, upper, work, target]) {
		mkdirSync(directory, {recursive: true});
	}

	if (sandbox.user === 'nobody') {
		chownTree(base, nobodyId);
	}

	return {
		store: path.join(target, 'store'),
		backing: path.join(upper, 'store'),
		setup: {overlayfs: {lower, upper, work, target}, fuseDevice: true},
	};
}

/** The setup that gives a sandbox's user a usable /dev/fuse (root has one already). */
export function fuseSetup(sandbox: Pick<Sandbox, 'user'>): NamespaceSetup | undefined {
	return sandbox.user === 'nobody' ? {fuseDevice: true} : undefined;
}

/** Processes of fuse-overlayfs serving anything under the sandbox (its command line names the mount point). */
export function fuseDaemonsIn(sandbox: Pick<Sandbox, 'root'>): number[] {
	return processesWith(sandbox.root).filter((pid) => {
		try {
			return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'fuse-overlayfs';
		} catch {
			return false;
		}
	});
}
