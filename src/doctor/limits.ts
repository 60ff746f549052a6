import {buildFuseOptions, buildOverlayOptions, maxMountOptionsLength} from '../run/namespace-plan.js';
import {layerIdLength, maxLowerLayers, maxStackedLayers} from '../store/layers.js';
import {maxNameLength} from '../store/names.js';
import type {DoctorCheck, LimitsReport} from './report.js';

// The run id's length (runs.ts: createRunId) and the longest workspace name (records.ts: WS plus /SNAPSHOT fit 128).
const runIdLength = 12;
const longestWorkspaceName = maxNameLength - 2;

/**
The option strings of a full stack (499 layers over the source), as scratch builds them: mounted from
inside the store's `layers/` dir with short layer ids, so the store's own path never counts.
*/
export function computeLimits(): LimitsReport {
	const layers = Array.from({length: maxStackedLayers}, () => 'x'.repeat(layerIdLength));
	const runId = 'x'.repeat(runIdLength);
	const workspace = `../workspaces/${'w'.repeat(longestWorkspaceName)}`;
	return {
		maxLowerLayers,
		maxStackedLayers,
		maxMountOptionsBytes: maxMountOptionsLength,
		fullStackOptionsBytes: {
			kernel: buildOverlayOptions({volatile: true, layers, runId}).length,
			fuse: buildFuseOptions({volatile: true, layers, runId}).length,
			workspace: buildOverlayOptions({
				volatile: false,
				layers,
				writable: {upper: `${workspace}/upper`, work: `${workspace}/work`},
			}).length,
		},
	};
}

/** 3626 -> "3,626". */
export function formatCount(count: number): string {
	return count.toLocaleString('en-US');
}

/** The limits as checks (pure). */
export function limitChecks(limits: LimitsReport): DoctorCheck[] {
	const {kernel, fuse, workspace} = limits.fullStackOptionsBytes;
	const longest = Math.max(kernel, fuse, workspace);
	const fits = longest <= limits.maxMountOptionsBytes;
	return [
		{
			id: 'layer-limit',
			group: 'limits',
			label: 'layers',
			ok: true,
			detail: `the kernel stacks at most ${limits.maxLowerLayers} lower layers: ${limits.maxStackedLayers} layers over the source (flatten deeper stacks with scratch squash)`,
		},
		{
			id: 'mount-options',
			group: 'limits',
			label: 'mount options',
			ok: fits,
			detail: `a ${limits.maxStackedLayers}-layer run takes ${formatCount(kernel)} of mount(2)'s ${formatCount(limits.maxMountOptionsBytes)} option bytes (fuse-overlayfs ${formatCount(fuse)}, a workspace with the longest name ${formatCount(workspace)})${fits ? '' : '; stacks that deep cannot be mounted: flatten them with scratch squash'}`,
		},
	];
}
