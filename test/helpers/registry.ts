import {type ChildProcess, spawn} from 'node:child_process';
import {randomUUID, sign, X509Certificate} from 'node:crypto';
import {mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs';
import {createServer as createHttpServer} from 'node:http';
import {createServer} from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {setTimeout as sleep} from 'node:timers/promises';
import type {ExecutionContext} from 'ava';
import {execa} from 'execa';

/*
A real OCI registry on loopback for one test: Debian's docker-registry (distribution 2.8), started on
a free port and stopped by its pid when the test ends. With `auth`, it takes only alice/secret: by
htpasswd (Basic), or through a token service (Bearer) run here.
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

const tokenIssuer = 'scratch-test-issuer';

/**
A token service as distribution's token auth expects one: it takes alice/secret (Basic) and answers a
JWT signed with a fresh self-signed key (RS256, the certificate in `x5c`), which the registry checks
against that certificate. It grants whatever scope is asked for.
*/
async function startTokenService(t: ExecutionContext, directory: string): Promise<string> {
	const keyFile = path.join(directory, 'token-key.pem');
	const certificateFile = path.join(directory, 'token-cert.pem');
	await execa('openssl', [
		'req',
		'-x509',
		'-newkey',
		'rsa:2048',
		'-nodes',
		'-keyout',
		keyFile,
		'-out',
		certificateFile,
		'-days',
		'2',
		'-subj',
		'/CN=scratch-test-token',
	]);
	const key = readFileSync(keyFile);
	const certificate = new X509Certificate(readFileSync(certificateFile)).raw.toString('base64');
	const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
	const expected = `Basic ${Buffer.from('alice:secret').toString('base64')}`;
	const server = createHttpServer((request, response) => {
		const url = new URL(request.url ?? '/', 'http://127.0.0.1');
		const scope = /^repository:(.+):([\w,]+)$/.exec(url.searchParams.get('scope') ?? '');
		if (request.headers.authorization !== expected || !scope) {
			response.writeHead(401).end();
			return;
		}

		const now = Math.floor(Date.now() / 1000);
		const unsigned = `${encode({alg: 'RS256', typ: 'JWT', x5c: [certificate]})}.${encode({
			iss: tokenIssuer,
			sub: 'alice',
			aud: url.searchParams.get('service'),
			exp: now + 600,
			nbf: now - 60,
			iat: now,
			jti: randomUUID(),
			access: [{type: 'repository', name: scope[1], actions: (scope[2] as string).split(',')}],
		})}`;
		const signature = sign('sha256', Buffer.from(unsigned), key).toString('base64url');
		response
			.writeHead(200, {'content-type': 'application/json'})
			.end(JSON.stringify({token: `${unsigned}.${signature}`}));
	});
	await new Promise<void>((resolve) => {
		server.listen(0, '127.0.0.1', resolve);
	});
	t.teardown(
		() =>
			new Promise<void>((resolve) => {
				server.close(() => resolve());
			}),
	);
	const address = server.address();
	return `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/token`;
}

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
export async function startRegistry(
	t: ExecutionContext,
	options: {auth?: 'htpasswd' | 'token'} = {},
): Promise<Registry> {
	const directory = mkdtempSync(path.join(os.tmpdir(), 'scratch-registry-'));
	const data = path.join(directory, 'data');
	mkdirSync(data);
	const port = await freePort();
	let auth = '';
	if (options.auth === 'htpasswd') {
		auth = `auth:\n  htpasswd:\n    realm: scratch-test\n    path: ${path.join(directory, 'htpasswd')}\n`;
	} else if (options.auth === 'token') {
		const realm = await startTokenService(t, directory);
		auth = `auth:\n  token:\n    realm: ${realm}\n    service: scratch-test\n    issuer: ${tokenIssuer}\n    rootcertbundle: ${path.join(directory, 'token-cert.pem')}\n`;
	}

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
