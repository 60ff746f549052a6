import {randomUUID, sign, X509Certificate} from 'node:crypto';
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs';
import {createServer as createHttpServer} from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type {ExecutionContext} from 'ava';
import {execa} from 'execa';
import {launchRegistry, type RegistryProcess} from './registry-process.js';

/*
A real OCI registry on loopback for one test: Debian's docker-registry (distribution 2.8), started on
a free port and stopped by its pid when the test ends. With `auth`, it takes only alice/secret: by
htpasswd (Basic), or through a token service (Bearer) run here.
*/

/** alice:secret, bcrypt cost 4 (htpasswd -nbB -C 4 alice secret). */
const htpasswdLine = 'alice:$2b$04$tsrjUb9o2UTmdEhWSmukW.ZEEDNSpqwvQE3.u6SxDokQfdbjRbzSa';

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

/** Start a registry; it is stopped when the test ends, whatever happens. */
export async function startRegistry(
	t: ExecutionContext,
	options: {auth?: 'htpasswd' | 'token'} = {},
): Promise<RegistryProcess> {
	const directory = mkdtempSync(path.join(os.tmpdir(), 'scratch-registry-'));
	let auth = '';
	if (options.auth === 'htpasswd') {
		auth = `auth:\n  htpasswd:\n    realm: scratch-test\n    path: ${path.join(directory, 'htpasswd')}\n`;
	} else if (options.auth === 'token') {
		const realm = await startTokenService(t, directory);
		auth = `auth:\n  token:\n    realm: ${realm}\n    service: scratch-test\n    issuer: ${tokenIssuer}\n    rootcertbundle: ${path.join(directory, 'token-cert.pem')}\n`;
	}

	writeFileSync(path.join(directory, 'htpasswd'), `${htpasswdLine}\n`);
	let registry: RegistryProcess;
	try {
		registry = await launchRegistry(directory, auth);
	} catch (error) {
		rmSync(directory, {recursive: true, force: true});
		throw error;
	}

	t.teardown(async () => {
		await registry.stop();
		rmSync(directory, {recursive: true, force: true});
	});
	return registry;
}
