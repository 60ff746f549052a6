import {PassThrough} from 'node:stream';
import {type LayerRecord, requireLayer, stackOf} from '../store/layers.js';
import {resolveLayer} from '../store/resolve.js';
import type {StoreOptions} from '../store/snapshots.js';
import {openExistingStore} from '../store/store.js';
import {exportLayer, type LayerExport} from './export.js';
import {formatReference, mediaTypes, parseImageReference, RegistryClient, sha256Digest} from './registry.js';

/*
`scratch push NAME REGISTRY/REPO:TAG`: NAME's whole stack as an OCI image, one image layer per scratch
layer (bottom first), so a pull elsewhere rebuilds the same stack and the name works as `--base` there.
Layers travel as uncompressed tars: their blob digest is then their DiffID, which every machine computes
the same for the same layer, so a registry that has a layer (pushed by any machine, under any tag) is
never sent it again. A layer whose DiffID is recorded is checked with one HEAD before anything is read;
the others are exported straight into the upload, hashed as they go.
*/

/** Options of `pushLayer`. */
export type PushOptions = StoreOptions & {
	/** A snapshot name or layer id. */
	reference: string;
	/** `REGISTRY/REPOSITORY:TAG`. */
	destination: string;
	/** Push the stack as one flattened layer. */
	flatten?: boolean;
	/** Plain HTTP (a registry on this machine). */
	insecure?: boolean;
	/** Bytes of the current layer sent so far; `label` names the layer. */
	onProgress?: (label: string, done: number, total: number | undefined) => void;
	environment?: NodeJS.ProcessEnv;
};

/** One pushed layer. */
export type PushedLayer = {
	/** The scratch layer; for a flattened push, the top one. */
	layer: string;
	digest: string;
	size: number;
	/** False when the registry had it already. */
	uploaded: boolean;
};

/** What a push did. */
export type Push = {
	name?: string;
	layer: string;
	destination: string;
	/** Digest of the manifest: `REGISTRY/REPO@DIGEST` names exactly this push. */
	digest: string;
	config: string;
	layers: PushedLayer[];
	flattened: boolean;
	/** Bytes sent in layer uploads. */
	uploadedBytes: number;
};

/** The OCI name of this machine's architecture (image-spec config.md: GOARCH values). */
export function ociArchitecture(arch: string = process.arch): string {
	const names: Record<string, string> = {
		x64: 'amd64',
		ia32: '386',
		arm64: 'arm64',
		arm: 'arm',
		ppc64: 'ppc64le',
	};
	return names[arch] ?? arch;
}

/** The image config for layers with these DiffIDs: only what OCI requires, so it is the same everywhere. */
export function imageConfig(diffIds: readonly string[]): Buffer {
	return Buffer.from(
		JSON.stringify({
			architecture: ociArchitecture(),
			os: 'linux',
			rootfs: {type: 'layers', diff_ids: diffIds},
			config: {},
		}),
	);
}

/** Send one layer (or the flattened stack) unless the registry has it; its descriptor (digest = DiffID). */
async function pushOne(
	client: RegistryClient,
	options: PushOptions,
	layer: LayerRecord,
	flatten: boolean,
	label: string,
): Promise<PushedLayer> {
	const epochSet = Boolean(process.env['SOURCE_DATE_EPOCH']);
	if (layer.diffId && !flatten && !epochSet) {
		const size = await client.blobSize(layer.diffId, 'pull,push');
		if (size !== undefined && Number.isFinite(size)) {
			return {layer: layer.id, digest: layer.diffId, size, uploaded: false};
		}
	}

	let exported: Promise<LayerExport> | undefined;
	let exportError: unknown;
	let body: PassThrough | undefined;
	const produce = () => {
		body = new PassThrough({highWaterMark: 4 * 1024 * 1024});
		const stream = body;
		exported = exportLayer({
			...(options.store === undefined ? {} : {store: options.store}),
			reference: layer.id,
			stream,
			flatten,
			...(options.onProgress
				? {onProgress: (done: number, total: number | undefined) => options.onProgress?.(label, done, total)}
				: {}),
		}).then(
			(result) => {
				stream.end();
				return result;
			},
			(error: unknown) => {
				exportError = error;
				stream.destroy(error as Error);
				throw error;
			},
		);
		// Awaited by `finish`, or settled below when the upload fails first.
		exported.catch(() => undefined);
		return {
			stream,
			finish: async () => {
				const result = await (exported as Promise<LayerExport>);
				return {digest: result.diffId, size: result.bytes};
			},
		};
	};

	try {
		const blob = await client.uploadBlob(produce, `layer ${layer.id}`);
		return {layer: layer.id, ...blob, uploaded: true};
	} catch (error) {
		// Stop the export (an error on its stream ends any wait for 'drain') and let it finish stopping
		// before reporting, so it leaves nothing half-written.
		body?.destroy(new Error('the upload ended'));
		await exported?.catch(() => undefined);
		throw exportError ?? error;
	}
}

/** `scratch push NAME REGISTRY/REPO:TAG`: send NAME's stack (or it flattened) to a registry as an OCI image. */
export async function pushLayer(options: PushOptions): Promise<Push> {
	const destination = parseImageReference(options.destination, 'destination', false);
	const client = new RegistryClient(destination, {
		insecure: options.insecure ?? false,
		...(options.environment ? {environment: options.environment} : {}),
	});
	const store = await openExistingStore(options.store, {readOnly: true});
	const {layer: top, name} = resolveLayer(store, options.reference);
	const flatten = options.flatten ?? false;
	const layers = flatten ? [top] : stackOf(top).map((id) => requireLayer(store, id, options.reference));

	const pushed: PushedLayer[] = [];
	for (const [index, layer] of layers.entries()) {
		const label =
			layers.length === 1 ? `push ${layer.id}` : `push ${layer.id} (${index + 1}/${layers.length})`;
		pushed.push(await pushOne(client, options, layer, flatten, label));
	}

	const config = await client.uploadSmallBlob(
		// Layers go uncompressed, so each one's digest is its DiffID.
		imageConfig(pushed.map(({digest}) => digest)),
		'the image config',
	);
	const manifest = Buffer.from(
		JSON.stringify({
			schemaVersion: 2,
			mediaType: mediaTypes.ociManifest,
			config: {mediaType: mediaTypes.ociConfig, digest: config.digest, size: config.size},
			layers: pushed.map(({digest, size}) => ({mediaType: mediaTypes.ociLayer, digest, size})),
		}),
	);
	await client.putManifest(destination.tag as string, manifest, mediaTypes.ociManifest);
	return {
		...(name ? {name} : {}),
		layer: top.id,
		destination: formatReference(destination),
		digest: sha256Digest(manifest),
		config: config.digest,
		layers: pushed,
		flattened: flatten,
		uploadedBytes: pushed.filter(({uploaded}) => uploaded).reduce((sum, {size}) => sum + size, 0),
	};
}
