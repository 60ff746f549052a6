import {createHash} from 'node:crypto';
import {readFileSync} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {Readable} from 'node:stream';
import {RegistryError, UsageError} from '../errors.js';

/*
A client for the OCI distribution API (distribution-spec), as much of it as push and pull need: blob
HEAD, GET and chunked upload, manifest PUT and GET. Authentication follows the registry's
`WWW-Authenticate` challenge: Basic with the credentials found, or Bearer with a token fetched from the
realm it names (with those credentials, or anonymously). Credentials come from the environment
(SCRATCH_REGISTRY_USERNAME and SCRATCH_REGISTRY_PASSWORD), else from the containers auth file
(REGISTRY_AUTH_FILE), else from the Docker config file ($DOCKER_CONFIG/config.json or
~/.docker/config.json). Plain HTTP is used only with --insecure, and then credentials are sent only to
loopback hosts.
*/

export const mediaTypes = {
	ociManifest: 'application/vnd.oci.image.manifest.v1+json',
	ociIndex: 'application/vnd.oci.image.index.v1+json',
	ociConfig: 'application/vnd.oci.image.config.v1+json',
	ociLayer: 'application/vnd.oci.image.layer.v1.tar',
	ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
	dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
	dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
	dockerConfig: 'application/vnd.docker.container.image.v1+json',
	dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

/** A parsed `REGISTRY/REPOSITORY:TAG` or `REGISTRY/REPOSITORY@sha256:DIGEST`. */
export type ImageReference = {
	/** host[:port] */
	registry: string;
	repository: string;
	tag?: string;
	digest?: string;
};

const repositoryPattern = /^[a-z\d]+(?:(?:\.|_|__|-+)[a-z\d]+)*(?:\/[a-z\d]+(?:(?:\.|_|__|-+)[a-z\d]+)*)*$/;
const tagPattern = /^\w[\w.-]{0,127}$/;
const digestPattern = /^sha256:[\da-f]{64}$/;

/** The written form of a reference. */
export function formatReference(reference: ImageReference): string {
	const base = `${reference.registry}/${reference.repository}`;
	return reference.digest ? `${base}@${reference.digest}` : `${base}:${reference.tag ?? 'latest'}`;
}

/**
Parse `REGISTRY/REPO:TAG` (or `@sha256:…` when `allowDigest`). The registry must be named: the first
component is a host (it has a `.` or a `:`, or is `localhost`), since scratch has no default registry.
*/
export function parseImageReference(text: string, role: string, allowDigest: boolean): ImageReference {
	const bad = (why: string) =>
		new UsageError(
			`${role} ${JSON.stringify(text)} ${why}; write it as REGISTRY/REPOSITORY:TAG, for example 127.0.0.1:5000/team/deps:v1`,
		);
	const slash = text.indexOf('/');
	if (slash === -1) {
		throw bad('names no registry');
	}

	const registry = text.slice(0, slash);
	if (!/^[\w.-]+(?::\d{1,5})?$|^\[[\da-f:]+\](?::\d{1,5})?$/i.test(registry)) {
		throw bad(`has ${JSON.stringify(registry)} where the registry host[:port] goes`);
	}

	if (!registry.includes('.') && !registry.includes(':') && registry !== 'localhost') {
		throw bad(`starts with ${JSON.stringify(registry)}, which is not a host (no . or :port)`);
	}

	let rest = text.slice(slash + 1);
	let digest: string | undefined;
	let tag: string | undefined;
	const at = rest.indexOf('@');
	if (at !== -1) {
		if (!allowDigest) {
			throw bad('has a digest, but a push needs a tag');
		}

		digest = rest.slice(at + 1);
		rest = rest.slice(0, at);
		if (!digestPattern.test(digest)) {
			throw bad(`has digest ${JSON.stringify(digest)}, not sha256: and 64 hex digits`);
		}
	} else {
		const colon = rest.lastIndexOf(':');
		if (colon === -1) {
			throw bad('has no :TAG');
		}

		tag = rest.slice(colon + 1);
		rest = rest.slice(0, colon);
		if (!tagPattern.test(tag)) {
			throw bad(`has tag ${JSON.stringify(tag)}, which is not letters, digits, _ . - (at most 128)`);
		}
	}

	if (!repositoryPattern.test(rest) || rest.length > 255) {
		throw bad(`has repository ${JSON.stringify(rest)}: lower-case letters, digits and . _ - between slashes`);
	}

	return {registry, repository: rest, ...(tag === undefined ? {} : {tag}), ...(digest ? {digest} : {})};
}

/** Whether a registry host is this machine (plain HTTP and credentials over it are acceptable). */
export function isLoopback(registry: string): boolean {
	const host = registry.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
	return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

export type Credentials = {username: string; password: string; from: string};

type AuthFile = {
	auths?: Record<string, {auth?: string; username?: string; password?: string; identitytoken?: string}>;
	credsStore?: string;
	credHelpers?: Record<string, string>;
};

function readAuthFile(file: string): AuthFile | undefined {
	let text: string;
	try {
		text = readFileSync(file, 'utf8');
	} catch {
		return undefined;
	}

	try {
		return JSON.parse(text) as AuthFile;
	} catch {
		throw new RegistryError(
			`${file} is not valid JSON; fix it or point DOCKER_CONFIG/REGISTRY_AUTH_FILE elsewhere`,
		);
	}
}

/** Credentials for `registry`, from the environment or an auth file, or undefined for anonymous access. */
export function findCredentials(
	registry: string,
	environment: NodeJS.ProcessEnv = process.env,
): Credentials | undefined {
	const username = environment['SCRATCH_REGISTRY_USERNAME'];
	const password = environment['SCRATCH_REGISTRY_PASSWORD'];
	if (username !== undefined || password !== undefined) {
		if (!username || password === undefined) {
			throw new UsageError(
				'set both SCRATCH_REGISTRY_USERNAME and SCRATCH_REGISTRY_PASSWORD, or neither (to use the Docker config file)',
			);
		}

		return {username, password, from: 'SCRATCH_REGISTRY_USERNAME/PASSWORD'};
	}

	const files = [
		environment['REGISTRY_AUTH_FILE'],
		path.join(
			environment['DOCKER_CONFIG'] ?? path.join(environment['HOME'] ?? os.homedir(), '.docker'),
			'config.json',
		),
	].filter((file): file is string => Boolean(file));
	const keys = [registry, `https://${registry}`, `http://${registry}`, `https://${registry}/v1/`];
	for (const file of files) {
		const config = readAuthFile(file);
		if (!config) {
			continue;
		}

		const helper = config.credHelpers?.[registry];
		const entry = keys.map((key) => config.auths?.[key]).find(Boolean);
		if (!entry) {
			if (helper || config.credsStore) {
				throw new RegistryError(
					`${file} keeps the credentials for ${registry} in a credential helper (docker-credential-${helper ?? config.credsStore}), which scratch does not run; set SCRATCH_REGISTRY_USERNAME and SCRATCH_REGISTRY_PASSWORD instead`,
				);
			}

			continue;
		}

		if (entry.auth) {
			const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
			const colon = decoded.indexOf(':');
			if (colon <= 0) {
				throw new RegistryError(
					`the auth entry for ${registry} in ${file} is not base64 of USER:PASSWORD; log in again or fix the file`,
				);
			}

			return {username: decoded.slice(0, colon), password: decoded.slice(colon + 1), from: file};
		}

		if (entry.username && entry.password !== undefined) {
			return {username: entry.username, password: entry.password, from: file};
		}
	}

	return undefined;
}

/** One parameter list of a `WWW-Authenticate` challenge: `Bearer realm="…",service="…"`. */
export function parseChallenge(header: string): {scheme: string; parameters: Record<string, string>} {
	const space = header.indexOf(' ');
	const scheme = (space === -1 ? header : header.slice(0, space)).toLowerCase();
	const parameters: Record<string, string> = {};
	const pattern = /([\w-]+)=(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
	for (const match of (space === -1 ? '' : header.slice(space + 1)).matchAll(pattern)) {
		parameters[(match[1] as string).toLowerCase()] = (match[2] ?? match[3] ?? '').replace(/\\(.)/g, '$1');
	}

	return {scheme, parameters};
}

/** The `Authorization` value for HTTP Basic with these credentials. */
function basicAuthorization({username, password}: Credentials): string {
	return `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
}

type RequestOptions = {
	method?: string;
	headers?: Record<string, string>;
	body?: Buffer | string | Readable;
	/** Status codes that are answers, not errors. */
	expect: number[];
	/** What the request is for, in error messages. */
	what: string;
	/** `pull` or `pull,push`: the access a Bearer token must grant. */
	scope: 'pull' | 'pull,push';
};

/** A session with one registry and repository. */
export class RegistryClient {
	readonly reference: ImageReference;
	private readonly base: string;
	private readonly credentials: Credentials | undefined;
	private authorization: string | undefined;
	private authorizedScope: string | undefined;

	constructor(
		reference: ImageReference,
		options: {insecure?: boolean; environment?: NodeJS.ProcessEnv} = {},
	) {
		this.reference = reference;
		const insecure = options.insecure ?? false;
		this.base = `${insecure ? 'http' : 'https'}://${reference.registry}`;
		this.credentials = findCredentials(reference.registry, options.environment);
		if (insecure && this.credentials && !isLoopback(reference.registry)) {
			throw new UsageError(
				`--insecure would send the credentials for ${reference.registry} over plain HTTP; use --insecure only with a registry on this machine (127.0.0.1, localhost), or serve it over HTTPS`,
			);
		}
	}

	/** `/v2/REPOSITORY/SUFFIX` as a URL. */
	url(suffix: string): URL {
		return new URL(`/v2/${this.reference.repository}/${suffix}`, this.base);
	}

	private describe(): string {
		return `registry ${this.reference.registry}`;
	}

	private async send(url: URL, options: RequestOptions): Promise<Response> {
		const headers: Record<string, string> = {...options.headers};
		if (this.authorization) {
			headers['authorization'] = this.authorization;
		}

		const body =
			options.body instanceof Readable ? (Readable.toWeb(options.body) as ReadableStream) : options.body;
		try {
			return await fetch(url, {
				method: options.method ?? 'GET',
				headers,
				...(body === undefined ? {} : {body, duplex: 'half'}),
				redirect: 'follow',
			} as RequestInit);
		} catch (error) {
			const cause = (error as {cause?: {code?: string; message?: string}}).cause;
			const reason = cause?.code ?? cause?.message ?? (error as Error).message;
			const hint =
				this.base.startsWith('https:') &&
				/EPROTO|SSL|ECONNRESET|wrong version/i.test(`${reason} ${cause?.message}`)
					? '; for a plain-HTTP registry on this machine add --insecure'
					: '; check that it is running and the address is right';
			throw new RegistryError(`cannot reach ${this.describe()} (${options.what}): ${reason}${hint}`, {
				cause: error,
			});
		}
	}

	/** Answer a 401 challenge: set the Authorization header for the next attempt, or explain why not. */
	private async authenticate(challengeHeader: string | null, options: RequestOptions): Promise<void> {
		const challenge = parseChallenge(challengeHeader ?? '');
		const login = this.credentials
			? ` as ${this.credentials.username} (credentials from ${this.credentials.from})`
			: ' anonymously';
		if (challenge.scheme === 'basic') {
			if (!this.credentials || this.authorization?.startsWith('Basic ')) {
				throw new RegistryError(
					`${this.describe()} refused ${options.what}${login}; set SCRATCH_REGISTRY_USERNAME and SCRATCH_REGISTRY_PASSWORD, or log in with docker login`,
				);
			}

			this.authorization = basicAuthorization(this.credentials);
			return;
		}

		if (challenge.scheme === 'bearer' && challenge.parameters['realm']) {
			const scope = `repository:${this.reference.repository}:${options.scope}`;
			if (this.authorization?.startsWith('Bearer ') && this.authorizedScope === scope) {
				throw new RegistryError(
					`${this.describe()} refused ${options.what}${login} with a token for ${scope}; check that this account may ${options.scope === 'pull' ? 'pull from' : 'push to'} ${this.reference.repository}`,
				);
			}

			const realm = new URL(challenge.parameters['realm']);
			if (challenge.parameters['service']) {
				realm.searchParams.set('service', challenge.parameters['service']);
			}

			realm.searchParams.set('scope', scope);
			const headers: Record<string, string> = this.credentials
				? {authorization: basicAuthorization(this.credentials)}
				: {};

			let answer: Response;
			try {
				answer = await fetch(realm, {headers});
			} catch (error) {
				throw new RegistryError(
					`cannot reach the token service ${realm.origin} of ${this.describe()}: ${(error as Error).message}`,
					{cause: error},
				);
			}

			if (!answer.ok) {
				throw new RegistryError(
					`the token service of ${this.describe()} refused ${scope}${login} (HTTP ${answer.status}); check the credentials and the account's access`,
				);
			}

			const body = (await answer.json()) as {token?: string; access_token?: string};
			const token = body.token ?? body.access_token;
			if (!token) {
				throw new RegistryError(`the token service of ${this.describe()} answered without a token`);
			}

			this.authorization = `Bearer ${token}`;
			this.authorizedScope = scope;
			return;
		}

		throw new RegistryError(
			`${this.describe()} asks for authentication scratch does not know (${challengeHeader ?? 'no challenge'}) for ${options.what}`,
		);
	}

	/**
	One request, authenticating on a 401 and retrying (only when the body can be sent again). Any status
	not in `expect` becomes a RegistryError carrying the registry's own error message.
	*/
	async request(url: URL, options: RequestOptions): Promise<Response> {
		for (let attempt = 0; ; attempt++) {
			const response = await this.send(url, options);
			if (response.status === 401 && attempt < 2) {
				await response.body?.cancel();
				if (options.body instanceof Readable) {
					// A stream cannot be sent twice: callers authenticate first with a bodiless request.
					throw new RegistryError(
						`${this.describe()} asked for authentication in the middle of ${options.what}`,
					);
				}

				await this.authenticate(response.headers.get('www-authenticate'), options);
				continue;
			}

			if (options.expect.includes(response.status)) {
				return response;
			}

			throw await this.failure(response, options.what);
		}
	}

	/** A RegistryError for an unexpected answer, with the registry's message when it sent one. */
	async failure(response: Response, what: string): Promise<RegistryError> {
		let detail = '';
		try {
			const text = await response.text();
			const body = JSON.parse(text) as {errors?: Array<{code?: string; message?: string}>};
			detail = (body.errors ?? [])
				.map((error) => `${error.code ?? ''} ${error.message ?? ''}`.trim())
				.join('; ');
		} catch {
			// Not the JSON error body the spec describes: the status says enough.
		}

		const hint =
			response.status === 404
				? '; check the repository and tag'
				: response.status === 401 || response.status === 403
					? '; check the credentials (SCRATCH_REGISTRY_USERNAME/PASSWORD or the Docker config)'
					: '';
		return new RegistryError(
			`${this.describe()} answered ${what} with HTTP ${response.status}${detail ? ` (${detail})` : ''}${hint}`,
		);
	}

	/** The size of a blob the repository has, or undefined when it has not. */
	async blobSize(digest: string, scope: 'pull' | 'pull,push'): Promise<number | undefined> {
		const response = await this.request(this.url(`blobs/${digest}`), {
			method: 'HEAD',
			expect: [200, 404],
			what: `a check for blob ${digest}`,
			scope,
		});
		if (response.status === 404) {
			return undefined;
		}

		return Number(response.headers.get('content-length') ?? Number.NaN);
	}

	/**
	Upload a blob from a stream whose digest is known only at its end: POST for a session, then
	`produce` the stream, one PATCH with all of it, then PUT with the digest `finish` returns.
	*/
	async uploadBlob(
		produce: () => {stream: Readable; finish: () => Promise<{digest: string; size: number}>},
		what: string,
	): Promise<{digest: string; size: number}> {
		let location = await this.startUpload(what);
		// Only now, with the registry reached and the session open, is the blob read.
		const {stream, finish} = produce();
		const patched = await this.request(location, {
			method: 'PATCH',
			headers: {'content-type': 'application/octet-stream'},
			body: stream,
			expect: [202],
			what: `the upload of ${what}`,
			scope: 'pull,push',
		});
		await patched.body?.cancel();
		location = this.location(patched, 'upload');
		const blob = await finish();
		location.searchParams.set('digest', blob.digest);
		const put = await this.request(location, {
			method: 'PUT',
			headers: {'content-length': '0'},
			expect: [201],
			what: `the end of the upload of ${what}`,
			scope: 'pull,push',
		});
		await put.body?.cancel();
		return blob;
	}

	/** Upload a small blob held in memory (a config): POST, then PUT with the body and its digest. */
	async uploadSmallBlob(data: Buffer, what: string): Promise<{digest: string; size: number}> {
		const digest = sha256Digest(data);
		if ((await this.blobSize(digest, 'pull,push')) !== undefined) {
			return {digest, size: data.length};
		}

		const location = await this.startUpload(what);
		location.searchParams.set('digest', digest);
		const put = await this.request(location, {
			method: 'PUT',
			headers: {'content-type': 'application/octet-stream', 'content-length': String(data.length)},
			body: data,
			expect: [201],
			what: `the upload of ${what}`,
			scope: 'pull,push',
		});
		await put.body?.cancel();
		return {digest, size: data.length};
	}

	/** Open an upload session (POST); the URL to send the blob to. */
	private async startUpload(what: string): Promise<URL> {
		const started = await this.request(this.url('blobs/uploads/'), {
			method: 'POST',
			expect: [202],
			what: `the start of an upload of ${what}`,
			scope: 'pull,push',
		});
		await started.body?.cancel();
		return this.location(started, 'upload start');
	}

	private location(response: Response, what: string): URL {
		const location = response.headers.get('location');
		if (!location) {
			throw new RegistryError(`${this.describe()} answered the ${what} without a Location header`);
		}

		return new URL(location, this.base);
	}

	/** PUT a manifest under a tag (or digest). */
	async putManifest(reference: string, manifest: Buffer, mediaType: string): Promise<void> {
		const response = await this.request(this.url(`manifests/${reference}`), {
			method: 'PUT',
			headers: {'content-type': mediaType},
			body: manifest,
			expect: [201],
			what: `the manifest ${reference}`,
			scope: 'pull,push',
		});
		await response.body?.cancel();
	}

	/** GET a manifest (or index) by tag or digest, with its media type and the digest of its bytes. */
	async getManifest(reference: string): Promise<{body: Buffer; mediaType: string; digest: string}> {
		const response = await this.request(this.url(`manifests/${reference}`), {
			headers: {
				accept: [
					mediaTypes.ociManifest,
					mediaTypes.ociIndex,
					mediaTypes.dockerManifest,
					mediaTypes.dockerList,
				].join(', '),
			},
			expect: [200],
			what: `a request for manifest ${this.reference.repository}:${reference}`,
			scope: 'pull',
		});
		const body = Buffer.from(await response.arrayBuffer());
		const mediaType = (response.headers.get('content-type') ?? '').split(';')[0]?.trim() ?? '';
		return {body, mediaType, digest: sha256Digest(body)};
	}

	/** GET a blob as a stream (with its length when the registry says it). */
	async getBlob(digest: string): Promise<{stream: Readable; size: number | undefined}> {
		const response = await this.request(this.url(`blobs/${digest}`), {
			expect: [200],
			what: `a request for blob ${digest}`,
			scope: 'pull',
		});
		const length = response.headers.get('content-length');
		if (!response.body) {
			throw new RegistryError(`${this.describe()} sent blob ${digest} without a body`);
		}

		return {
			stream: Readable.fromWeb(response.body as import('node:stream/web').ReadableStream),
			size: length === null ? undefined : Number(length),
		};
	}

	/** GET a small blob (a config) whole, and check its digest. */
	async getSmallBlob(digest: string, what: string): Promise<Buffer> {
		const response = await this.request(this.url(`blobs/${digest}`), {
			expect: [200],
			what: `a request for ${what} ${digest}`,
			scope: 'pull',
		});
		const body = Buffer.from(await response.arrayBuffer());
		if (sha256Digest(body) !== digest) {
			throw new RegistryError(
				`${this.describe()} sent ${what} ${digest} with other content (digest ${sha256Digest(body)}); it is damaged or was tampered with`,
			);
		}

		return body;
	}
}

/** `sha256:HEX` of some bytes. */
export function sha256Digest(data: Buffer): string {
	return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}
