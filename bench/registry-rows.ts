/*
Registry rows: `scratch push` and `scratch pull` of a 200 MB layer through a real registry (Debian's
docker-registry, distribution 2.8) on loopback, and the peak memory of `scratch import` of a 1 GB layer.
Each push goes to a new repository, so the registry has none of its blobs and the whole layer travels;
each pull goes into a new store, so nothing is found locally.
*/
import {mkdirSync, rmSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import {performance} from 'node:perf_hooks';
import {launchRegistry} from '../test/helpers/registry-process.js';
import {createLargeLayer, peakResidentMemory} from './export-rows.js';
import {
	integerFromEnvironment,
	interleave,
	progress,
	pseudoRandomBytes,
	type Row,
	scratchArguments,
	syncAll,
	timeCommand,
	type Workspace,
} from './harness.js';

export const registryIterations = integerFromEnvironment('BENCH_REGISTRY_ITERATIONS', 3, 1);

const layerMegabytes = 200;

/** A 200 MB layer: 50 files of 4 MB, of bytes that do not compress. */
async function makeLayer(workspace: Workspace, store: string): Promise<void> {
	const files = path.join(workspace.root, 'registry-layer-files');
	mkdirSync(files, {recursive: true});
	const chunk = pseudoRandomBytes(4 * 1024 * 1024);
	for (let index = 0; index < layerMegabytes / 4; index++) {
		chunk.writeUInt32LE(index, 0);
		writeFileSync(path.join(files, `blob-${index}.bin`), chunk);
	}

	await timeCommand(
		process.execPath,
		scratchArguments(
			workspace,
			workspace.smallTree,
			['cp', '-r', files, 'payload'],
			['--promote', 'big'],
			store,
		),
	);
	rmSync(files, {recursive: true, force: true});
}

/** Push then pull of a 200 MB layer through a loopback registry: times, and the MB/s each reached. */
export async function pushPullRow(workspace: Workspace, id: number): Promise<Row> {
	progress(`row ${id}: push and pull of a ${layerMegabytes} MB layer through docker-registry on loopback`);
	const registry = await launchRegistry(path.join(workspace.root, 'registry'));
	try {
		const store = path.join(workspace.root, 'registry-store');
		await makeLayer(workspace, store);
		let pushes = 0;
		let pulls = 0;
		const measured = await interleave(`row ${id}`, [
			{
				name: `push ${layerMegabytes} MiB`,
				iterations: registryIterations,
				warmups: 1,
				sample: () =>
					timeCommand(process.execPath, [
						workspace.cli,
						'push',
						'big',
						`${registry.address}/bench/push-${pushes++}:v1`,
						'--store',
						store,
						'--insecure',
					]),
			},
			{
				name: `pull ${layerMegabytes} MiB`,
				iterations: registryIterations,
				warmups: 1,
				sample: async () => {
					const target = path.join(workspace.root, `registry-pull-${pulls++}`);
					const time = await timeCommand(process.execPath, [
						workspace.cli,
						'pull',
						`${registry.address}/bench/push-0:v1`,
						'--name',
						'big',
						'--store',
						target,
						'--insecure',
					]);
					rmSync(target, {recursive: true, force: true});
					return time;
				},
			},
		]);
		const [push, pull] = measured as [(typeof measured)[0], (typeof measured)[0]];
		const megabytesPerSecond = (milliseconds: number) =>
			((layerMegabytes * 1.048576) / (milliseconds / 1000)).toFixed(0);
		return {
			id,
			comparison: `\`scratch push\` (A) and \`scratch pull\` (B) of a ${layerMegabytes} MiB layer, docker-registry on loopback`,
			a: push,
			b: pull,
			ratioLabel: '-',
			target: 'report MB/s',
			note: `push ${megabytesPerSecond(push.medianMs)} MB/s, pull ${megabytesPerSecond(pull.medianMs)} MB/s (whole command, node start-up included; uncompressed layer, each push to a new repository, each pull into a new store)`,
		};
	} finally {
		await registry.stop();
	}
}

/** Peak memory of `scratch import` of the 1 GiB layer of row 13 (exported once, untimed). */
export async function importMemoryRow(workspace: Workspace, id: number): Promise<Row> {
	progress(`row ${id}: peak memory of scratch import of a 1 GiB layer tar`);
	const store = path.join(workspace.root, 'import-memory-store');
	await createLargeLayer(workspace, store, 'large');
	const tar = path.join(workspace.root, 'import-memory.tar');
	await timeCommand(process.execPath, [workspace.cli, 'export', 'large', '--store', store, '-o', tar]);
	rmSync(store, {recursive: true, force: true});
	const peaks: number[] = [];
	let imports = 0;
	const [measured] = await interleave(`row ${id}`, [
		{
			name: 'scratch import FILE --name NAME',
			iterations: registryIterations,
			warmups: 0,
			async sample() {
				const target = `${store}-${imports++}`;
				const started = performance.now();
				peaks.push(
					await peakResidentMemory(workspace, [
						workspace.cli,
						'import',
						tar,
						'--name',
						'large',
						'--store',
						target,
					]),
				);
				const elapsed = performance.now() - started;
				rmSync(target, {recursive: true, force: true});
				syncAll();
				return elapsed;
			},
		},
	]);
	rmSync(tar, {force: true});
	if (!measured) {
		throw new Error(`row ${id}: expected one measured side`);
	}

	const peakMegabytes = Math.max(...peaks) / 1e6;
	return {
		id,
		comparison: '`scratch import` of the 1 GiB layer tar of row 13: time (A) and peak RSS',
		a: measured,
		b: measured,
		ratioLabel: '-',
		target: '< 150 MB RSS',
		met: peakMegabytes < 150,
		note: `import peak RSS ${peakMegabytes.toFixed(0)} MB (largest of ${peaks.length}: ${peaks.map((peak) => (peak / 1e6).toFixed(0)).join(', ')} MB); ${(1024 / (measured.medianMs / 1000)).toFixed(0)} MiB/s`,
	};
}
