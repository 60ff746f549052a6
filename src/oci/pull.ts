import {createHash} from 'node:crypto';
import {Transform, type TransformCallback} from 'node:stream';
import {ArchiveError, RegistryError} from '../errors.js';
import {findLayerByChainId, type LayerRecord, stackOf} from '../store/layers.js';
import {checkName} from '../store/names.js';
import {writeRef} from '../store/refs.js';
import type {StoreOptions} from '../store/snapshots.js';
import {openStore} from '../store/store.js';
import {holdStoreUse} from '../store/use-lock.js';
import {crashPoint} from '../system/crash-point.js';
import {chainIdOf} from './export.js';
import {importTarIntoStore} from './import.js';
import {ociArchitecture} from './push.js';
import {formatReference, mediaTypes, parseImageReference, RegistryClient} from './registry.js';

/*
`scratch pull REGISTRY/REPO:TAG --name NAME`: an OCI image's layers as a stack of scratch layers, bottom
first, then NAME on the top one. Pulled layers are content-addressed: each is known by its ChainID (its
DiffID and those of everything below it), so a layer the store has already (pulled before, imported, or
exported from here) is used as it is and never downloaded again. Everything is checked on the way: the
manifest's digest when pulled by digest, the config's digest, every blob's digest, and every layer's
DiffID against the config. The name is written last: a pull cut off midway names nothing, and the
layers it finished are found by their ChainIDs when it is run again.
*/

/** Options of `pullLayer`. */
export type PullOptions = StoreOptions & {
	/** `REGISTRY/REPOSITORY:TAG` or `REGISTRY/REPOSITORY@sha256:…`. */
	source: string;
	/** The name the top layer gets. */
	name: string;
	insecure?: boolean;
	keepSetid?: boolean;
	allowOutsideSymlinks?: boolean;
	/** Bytes of the current blob received so far; `label` names the layer. */
	onProgress?: (label: string, done: number, total: number | undefined) => void;
	environment?: NodeJS.ProcessEnv;
};

/** One pulled layer. */
export type PulledLayer = {
	layer: string;
	digest: string;
	diffId: string;
	/** True when the store had it already (nothing was downloaded). */
	reused: boolean;
	/** Bytes downloaded for it. */
	downloaded: number;
};

/** What a pull did. */
export type Pull = {
	name: string;
	layer: string;
	source: string;
	/** Digest of the manifest pulled. */
	digest: string;
	layers: PulledLayer[];
	downloadedBytes: number;
};

type Descriptor = {
	mediaType?: string;
	digest?: string;
	size?: number;
	platform?: {os?: string; architecture?: string};
};
type Manifest = {
	schemaVersion?: number;
	mediaType?: string;
	config?: Descriptor;
	layers?: Descriptor[];
	manifests?: Descriptor[];
};

const layerTypes = new Set<string>([
	mediaTypes.ociLayer,
	mediaTypes.ociLayerGzip,
	mediaTypes.dockerLayerGzip,
]);
const digestPattern = /^sha256:[\da-f]{64}$/;

function parseJson<T>(body: Buffer, what: string): T {
	try {
		return JSON.parse(body.toString('utf8')) as T;
	} catch {
		throw new RegistryError(
			`${what} is not valid JSON; the registry sent something that is not an OCI image`,
		);
	}
}

/** A pass-through that hashes and counts what flows, so a blob's digest is checked as it streams. */
class DigestCheck extends Transform {
	readonly hash = createHash('sha256');
	bytes = 0;
	private readonly report: ((done: number) => void) | undefined;

	constructor(report?: (done: number) => void) {
		super({highWaterMark: 4 * 1024 * 1024});
		this.report = report;
	}

	override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
		this.hash.update(chunk);
		this.bytes += chunk.length;
		this.report?.(this.bytes);
		callback(null, chunk);
	}
}

/** The image manifest for this machine: the manifest itself, or the right one of an index. */
async function imageManifest(
	client: RegistryClient,
	reference: string,
	pinned: string | undefined,
): Promise<{manifest: Manifest; digest: string}> {
	let fetched = await client.getManifest(reference);
	if (pinned && fetched.digest !== pinned) {
		throw new RegistryError(
			`${client.reference.registry} sent a manifest with digest ${fetched.digest} for ${pinned}; it is damaged or was tampered with`,
		);
	}

	let manifest = parseJson<Manifest>(fetched.body, 'the manifest');
	const type = manifest.mediaType ?? fetched.mediaType;
	if (type === mediaTypes.ociIndex || type === mediaTypes.dockerList || Array.isArray(manifest.manifests)) {
		const architecture = ociArchitecture();
		const choice = (manifest.manifests ?? []).find(
			(entry) => entry.platform?.os === 'linux' && entry.platform.architecture === architecture,
		);
		if (!choice?.digest || !digestPattern.test(choice.digest)) {
			throw new RegistryError(
				`${formatReference(client.reference)} is an index with no image for linux/${architecture}`,
			);
		}

		fetched = await client.getManifest(choice.digest);
		if (fetched.digest !== choice.digest) {
			throw new RegistryError(
				`${client.reference.registry} sent a manifest with digest ${fetched.digest} for ${choice.digest}; it is damaged or was tampered with`,
			);
		}

		manifest = parseJson<Manifest>(fetched.body, 'the manifest');
	}

	if (manifest.schemaVersion !== 2 || !manifest.config?.digest || !Array.isArray(manifest.layers)) {
		throw new RegistryError(
			`${formatReference(client.reference)} is not an OCI or Docker v2 image manifest (media type ${fetched.mediaType || 'unknown'})`,
		);
	}

	return {manifest, digest: fetched.digest};
}

/**
`scratch pull REGISTRY/REPO:TAG --name NAME`: fetch an image's layers into the store as a stack and name
its top NAME (replacing what NAME named). Layers the store has are not fetched again.
*/
export async function pullLayer(options: PullOptions): Promise<Pull> {
	checkName(options.name, '--name');
	const source = parseImageReference(options.source, 'source', true);
	const client = new RegistryClient(source, {
		insecure: options.insecure ?? false,
		...(options.environment ? {environment: options.environment} : {}),
	});
	const {manifest, digest} = await imageManifest(
		client,
		source.digest ?? (source.tag as string),
		source.digest,
	);
	const descriptors = manifest.layers as Descriptor[];
	if (descriptors.length === 0) {
		throw new RegistryError(`${formatReference(source)} has no layers; there is nothing to pull`);
	}

	for (const descriptor of descriptors) {
		if (!descriptor.digest || !digestPattern.test(descriptor.digest)) {
			throw new RegistryError(`${formatReference(source)} lists a layer without a sha256 digest`);
		}

		if (!layerTypes.has(descriptor.mediaType ?? '')) {
			throw new RegistryError(
				`${formatReference(source)} has a layer of type ${descriptor.mediaType ?? 'unknown'}; scratch reads uncompressed and gzip tar layers (re-push it with those, e.g. skopeo copy)`,
			);
		}
	}

	const configDigest = manifest.config?.digest as string;
	const config = parseJson<{rootfs?: {type?: string; diff_ids?: unknown}}>(
		await client.getSmallBlob(configDigest, 'image config'),
		'the image config',
	);
	const diffIds = config.rootfs?.diff_ids;
	if (
		!Array.isArray(diffIds) ||
		diffIds.length !== descriptors.length ||
		!diffIds.every((id) => typeof id === 'string' && digestPattern.test(id))
	) {
		throw new RegistryError(
			`the image config of ${formatReference(source)} does not list one sha256 DiffID per layer (rootfs.diff_ids)`,
		);
	}

	const chainIds = (diffIds as string[]).map((_, index) =>
		chainIdOf((diffIds as string[]).slice(0, index + 1)),
	);
	const store = await openStore(options.store);
	const hold = await holdStoreUse(store);
	try {
		let below: string[] = [];
		const layers: PulledLayer[] = [];
		for (const [index, descriptor] of descriptors.entries()) {
			const blobDigest = descriptor.digest as string;
			const diffId = diffIds[index] as string;
			const existing = findLayerByChainId(store, chainIds[index] as string);
			if (existing) {
				below = stackOf(existing);
				layers.push({layer: existing.id, digest: blobDigest, diffId, reused: true, downloaded: 0});
				continue;
			}

			const label = `pull ${blobDigest.slice(7, 19)} (${index + 1}/${descriptors.length})`;
			const blob = await client.getBlob(blobDigest);
			const total = blob.size ?? descriptor.size;
			const check = new DigestCheck((done) => options.onProgress?.(label, done, total));
			blob.stream.on('error', (error) => check.destroy(error));
			blob.stream.pipe(check);
			let imported: {layer: LayerRecord; reused: boolean};
			try {
				// It reads the blob to its end, so the digest below covers every byte.
				imported = await importTarIntoStore(store, check, {
					lowers: below,
					...(options.keepSetid ? {keepSetid: true} : {}),
					...(options.allowOutsideSymlinks ? {allowOutsideSymlinks: true} : {}),
					expectedDiffId: diffId,
					record: {pulled: `${source.registry}/${source.repository}@${blobDigest}`},
				});
			} catch (error) {
				if (error instanceof ArchiveError) {
					throw new ArchiveError(
						`cannot pull ${formatReference(source)}: layer ${index + 1} (${blobDigest}): ${error.message}; nothing was named`,
						{cause: error},
					);
				}

				throw error;
			} finally {
				blob.stream.destroy();
			}

			const got = `sha256:${check.hash.digest('hex')}`;
			if (got !== blobDigest) {
				throw new RegistryError(
					`${source.registry} sent blob ${blobDigest} with other content (digest ${got}); it is damaged or was tampered with`,
				);
			}

			below = stackOf(imported.layer);
			layers.push({
				layer: imported.layer.id,
				digest: blobDigest,
				diffId,
				reused: imported.reused,
				downloaded: check.bytes,
			});
			crashPoint('pull-layer-imported');
		}

		const top = below.at(-1) as string;
		await writeRef(store, options.name, top);
		return {
			name: options.name,
			layer: top,
			source: formatReference(source),
			digest,
			layers,
			downloadedBytes: layers.reduce((sum, {downloaded}) => sum + downloaded, 0),
		};
	} finally {
		hold.release();
	}
}
