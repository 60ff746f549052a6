/*
Registry rows: `scratch push` and `scratch pull` of a 200 MB layer through a real registry (Debian's
docker-registry, distribution 2.8) on loopback, and the peak memory of `scratch import` of a 1 GB layer.
Each push goes to a new repository, so the registry has none of its blobs and the whole layer travels;
each pull goes into a new store, so nothing is found locally.
*/
import {type ChildProcess, spawn} from 'node:child_process';
import {mkdirSync, readFileSync, rmSync, writeFileSync} from 'node:fs';
import {createServer} from 'node:net';
import path from 'node:path';
import {performance} from 'node:perf_hooks';
import {setTimeout as sleep} from 'node:timers/promises';
import {
	integerFromEnvironment,
	interleave,
	median,
	progress,
	pseudoRandomBytes,
	type Row,
	scratchArguments,
	timeCommand,
	type Workspace,
} from './harness.js';

export const registryIterations = integerFromEnvironment('BENCH_REGISTRY_ITERATIONS', 3, 1);

const layerMegabytes = 200;

async function freePort(): Promise<number> {
	return new Promise((resolve, reject) => {
		const server = createServer();
		server.once('error', reject);
		server.listen(0, '127.0.0.1', () => {
			const address = server.address();
			server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
		});
	});
}

/** A registry on a free loopback port, storing under `directory`; stop() kills it by its pid. */
async function startRegistry(directory: string): Promise<{address: string; stop: () => void}> {
	mkdirSync(directory, {recursive: true});
	const port = await freePort();
	const config = path.join(directory, 'config.yml');
	writeFileSync(
		config,
		`version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${path.join(directory, 'data')}\nhttp:\n  addr: 127.0.0.1:${port}\n  secret: bench\n`,
	);
	const child: ChildProcess = spawn('docker-registry', ['serve', config], {stdio: 'ignore'});
	const address = `127.0.0.1:${port}`;
	for (let attempt = 0; ; attempt++) {
		try {
			const response = await fetch(`http://${address}/v2/`);
			await response.body?.cancel();
			if (response.ok) {
				break;
			}
		} catch {
			// Not listening yet.
		}

		if (attempt > 200 || child.exitCode !== null) {
			throw new Error(
				`docker-registry did not start on ${address} (is the docker-registry package installed?)`,
			);
		}

		await sleep(25);
	}

	return {
		address,
		stop: () => {
			if (child.pid !== undefined && child.exitCode === null) {
				process.kill(child.pid, 'SIGTERM');
			}
		},
	};
}

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
	const registry = await startRegistry(path.join(workspace.root, 'registry'));
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
		registry.stop();
	}
}

/** Peak resident memory (VmHWM, bytes) of `node ARGS...`, read by a preloaded hook as the process exits. */
export async function peakMemoryOf(workspace: Workspace, args: readonly string[]): Promise<number> {
	const hook = path.join(workspace.root, 'peak-memory-hook.cjs');
	const report = path.join(workspace.root, 'peak-memory.txt');
	writeFileSync(
		hook,
		`process.on('exit', () => { const status = require('node:fs').readFileSync('/proc/self/status', 'utf8'); require('node:fs').writeFileSync(${JSON.stringify(report)}, /VmHWM:\\s+(\\d+) kB/.exec(status)[1]); });\n`,
	);
	await timeCommand(process.execPath, ['--require', hook, ...args]);
	return Number(readFileSync(report, 'utf8')) * 1024;
}

const importMegabytes = 1024;

/** Peak memory of `scratch import` of a 1 GiB layer tar (a few large files and many small ones). */
export async function importMemoryRow(workspace: Workspace, id: number): Promise<Row> {
	progress(`row ${id}: peak memory of scratch import of a ${importMegabytes} MiB layer`);
	const store = path.join(workspace.root, 'import-memory-store');
	const files = path.join(workspace.root, 'import-memory-files');
	mkdirSync(path.join(files, 'small'), {recursive: true});
	const chunk = pseudoRandomBytes(64 * 1024 * 1024);
	// 15 files of 64 MiB and 16,384 of 4 KiB: 1 GiB in all.
	for (let index = 0; index < 15; index++) {
		chunk.writeUInt32LE(index, 0);
		writeFileSync(path.join(files, `large-${index}.bin`), chunk);
	}

	for (let index = 0; index < 16_384; index++) {
		writeFileSync(path.join(files, 'small', `f${index}`), chunk.subarray(index * 4096, index * 4096 + 4096));
	}

	await timeCommand(
		process.execPath,
		scratchArguments(
			workspace,
			workspace.smallTree,
			['cp', '-r', files, 'payload'],
			['--promote', 'large'],
			store,
		),
	);
	rmSync(files, {recursive: true, force: true});
	const tar = path.join(workspace.root, 'import-memory.tar');
	const exportStarted = performance.now();
	const exportPeak = await peakMemoryOf(workspace, [
		workspace.cli,
		'export',
		'large',
		'--store',
		store,
		'-o',
		tar,
	]);
	const exportTime = performance.now() - exportStarted;
	const importPeaks: number[] = [];
	const importTimes: number[] = [];
	for (let index = 0; index < registryIterations; index++) {
		const started = performance.now();
		importPeaks.push(
			await peakMemoryOf(workspace, [
				workspace.cli,
				'import',
				tar,
				'--name',
				`copy-${index}`,
				'--store',
				`${store}-${index}`,
			]),
		);
		importTimes.push(performance.now() - started);
		rmSync(`${store}-${index}`, {recursive: true, force: true});
	}

	rmSync(tar, {force: true});
	rmSync(store, {recursive: true, force: true});
	const peakMegabytes = Math.max(...importPeaks) / 1e6;
	return {
		id,
		comparison: `\`scratch import\` (A) and \`scratch export -o\` (B) of a ${importMegabytes} MiB layer (15 x 64 MiB + 16,384 x 4 KiB files): peak memory`,
		a: {name: 'import', samples: importTimes, medianMs: median(importTimes)},
		b: {name: 'export', samples: [exportTime], medianMs: exportTime},
		ratioLabel: '-',
		target: '< 150 MB RSS',
		met: peakMegabytes < 150 && exportPeak / 1e6 < 150,
		note: `peak RSS: import ${peakMegabytes.toFixed(0)} MB (largest of ${importPeaks.length}), export ${(exportPeak / 1e6).toFixed(0)} MB; target < 150 MB each (streaming)`,
	};
}
