import {spawn} from 'node:child_process';
import {mkdirSync, writeFileSync} from 'node:fs';
import {createServer} from 'node:net';
import path from 'node:path';
import {setTimeout as sleep} from 'node:timers/promises';

/*
Debian's docker-registry (distribution 2.8) as a process on a free loopback port, for the registry
tests and the registry benchmark rows: its config is written, the binary spawned, and the start
awaited until `/v2/` answers. The caller stops it, by its pid.
*/

/** A running registry. */
export type RegistryProcess = {
	/** `127.0.0.1:PORT` */
	address: string;
	/** Where it keeps its blobs and manifests. */
	data: string;
	/** Stop it (SIGTERM, then SIGKILL after 5 s) and wait for it to exit. */
	stop(): Promise<void>;
};

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

/**
Start a registry storing under `directory` (made if missing). `auth` is a YAML `auth:` section, or ''
for none. What it logs (errors only) is shown when it fails to start.
*/
export async function launchRegistry(directory: string, auth = ''): Promise<RegistryProcess> {
	const data = path.join(directory, 'data');
	mkdirSync(data, {recursive: true});
	const port = await freePort();
	const config = path.join(directory, 'config.yml');
	writeFileSync(
		config,
		`version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${data}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n  secret: scratch-test\n${auth}`,
	);
	const child = spawn('docker-registry', ['serve', config], {stdio: ['ignore', 'pipe', 'pipe']});
	let log = '';
	child.stdout.on('data', (chunk: Buffer) => {
		log += chunk.toString();
	});
	child.stderr.on('data', (chunk: Buffer) => {
		log += chunk.toString();
	});
	let exited = false;
	const exit = new Promise<void>((resolve) => {
		child.once('exit', () => {
			exited = true;
			resolve();
		});
	});
	child.once('error', (error) => {
		log += `${error.message} (is the docker-registry package installed?)\n`;
	});
	const stop = async () => {
		if (!exited && child.pid !== undefined) {
			process.kill(child.pid, 'SIGTERM');
			await Promise.race([exit, sleep(5000)]);
			if (!exited) {
				process.kill(child.pid, 'SIGKILL');
				await exit;
			}
		}
	};

	const address = `127.0.0.1:${port}`;
	for (let attempt = 0; ; attempt++) {
		try {
			const response = await fetch(`http://${address}/v2/`);
			await response.body?.cancel();
			if (response.status === 200 || response.status === 401) {
				break;
			}
		} catch {
			// Not listening yet.
		}

		if (exited || attempt > 200) {
			await stop();
			throw new Error(`docker-registry did not start on ${address}:\n${log}`);
		}

		await sleep(25);
	}

	return {address, data, stop};
}
