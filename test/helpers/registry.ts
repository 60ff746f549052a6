import {type ChildProcess, spawn} from 'node:child_process';
import {mkdirSync, mkdtempSync, rmSync, writeFileSync} from 'node:fs';
import {createServer} from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {setTimeout as sleep} from 'node:timers/promises';
import type {ExecutionContext} from 'ava';

/*
A real OCI registry on loopback for one test: Debian's docker-registry (distribution 2.8), started on
a free port and stopped by its pid when the test ends. With `auth`, it takes only alice/secret (htpasswd).
*/

/** alice:secret, bcrypt cost 4 (htpasswd -nbB -C 4 alice secret). */
const htpasswdLine = 'alice:$2b$04$tsrjUb9o2UTmdEhWSmukW.ZEEDNSpqwvQE3.u6SxDokQfdbjRbzSa';

export type Registry = {
	/** `127.0.0.1:PORT` */
	address: string;
	/** Where it keeps its blobs and manifests. */
	data: string;
	/** The requests it logged so far (method and path), to tell which blobs were sent. */
	requests(): string[];
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

/** Start a registry; it is stopped when the test ends, whatever happens. */
export async function startRegistry(t: ExecutionContext, options: {auth?: boolean} = {}): Promise<Registry> {
	const directory = mkdtempSync(path.join(os.tmpdir(), 'scratch-registry-'));
	const data = path.join(directory, 'data');
	mkdirSync(data);
	const port = await freePort();
	const auth = options.auth
		? `auth:\n  htpasswd:\n    realm: scratch-test\n    path: ${path.join(directory, 'htpasswd')}\n`
		: '';
	writeFileSync(path.join(directory, 'htpasswd'), `${htpasswdLine}\n`);
	writeFileSync(
		path.join(directory, 'config.yml'),
		`version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: ${data}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n  secret: scratch-test\n${auth}`,
	);
	const child: ChildProcess = spawn('docker-registry', ['serve', path.join(directory, 'config.yml')], {
		stdio: ['ignore', 'pipe', 'pipe'],
	});
	let log = '';
	child.stdout?.on('data', (chunk: Buffer) => {
		log += chunk.toString();
	});
	child.stderr?.on('data', (chunk: Buffer) => {
		log += chunk.toString();
	});
	let exited = false;
	const exit = new Promise<void>((resolve) => {
		child.once('exit', () => {
			exited = true;
			resolve();
		});
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

		rmSync(directory, {recursive: true, force: true});
	};
	t.teardown(stop);

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
			throw new Error(`docker-registry did not start on ${address}:\n${log}`);
		}

		await sleep(25);
	}

	return {
		address,
		data,
		requests: () =>
			[...log.matchAll(/"(GET|HEAD|POST|PUT|PATCH|DELETE) (\/v2\/[^ "]*) HTTP/g)].map(
				(match) => `${match[1]} ${(match[2] as string).replace(/\?.*$/, '')}`,
			),
		stop,
	};
}
