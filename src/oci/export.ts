import {createHash, type Hash} from 'node:crypto';
import {once} from 'node:events';
import {
	closeSync,
	createWriteStream,
	lstatSync,
	openSync,
	readdirSync,
	readlinkSync,
	readSync,
	renameSync,
	rmSync,
} from 'node:fs';
import path from 'node:path';
import type {Writable} from 'node:stream';
import {createGzip} from 'node:zlib';
import {InvalidPathError, StoreError, UsageError} from '../errors.js';
import {addToLayerRecord, type LayerRecord, layerTreePath, requireLayer} from '../store/layers.js';
import {resolveLayer} from '../store/resolve.js';
import type {StoreOptions} from '../store/snapshots.js';
import {openExistingStore, type Store} from '../store/store.js';
import {findExecutable} from '../system/executables.js';
import {runGetfattr, unquoteGetfattrPath} from '../system/getfattr.js';
import {randomId} from '../system/random-id.js';
import {endOfArchive, entryHeader, padding, type TarEntry} from './tar.js';

/*
`scratch export`: a layer as an OCI image layer tar (image-spec layer.md). The overlay upper format is
translated on the way: a whiteout (character device 0/0) becomes an empty `.wh.NAME`, an opaque
directory (`user.overlay.opaque=y`) gets an empty `.wh..wh..opq` right after it, and the overlay's own
attributes are left out. Entries are sorted byte-wise, owners are numeric (a rootless store's owner is
uid and gid 0, as its runs saw it), mtimes are whole seconds, clamped to SOURCE_DATE_EPOCH when it is
set: exporting the same layer twice gives the same bytes. The DiffID (sha256 of the uncompressed tar)
and ChainID are recorded in the layer's record.
*/

/** What an export produced. */
export type LayerExport = {
	layer: string;
	name?: string;
	/** `sha256:` of the uncompressed tar. */
	diffId: string;
	/** `sha256:` ChainID of the layer's stack, bottom first (image-spec config.md). */
	chainId: string;
	entries: number;
	/** Bytes of the uncompressed tar. */
	bytes: number;
	/** Where it went; undefined for a stream the caller gave. */
	file?: string;
	gzip: boolean;
};

/** Options of `exportLayer`. */
export type ExportOptions = StoreOptions & {
	/** A snapshot name or a layer id. */
	reference: string;
	/** Write here (atomically: a temp file renamed into place). */
	file?: string;
	/** Or to this stream (stdout for the CLI). */
	stream?: Writable;
	gzip?: boolean;
	/** Clamp mtimes to this (seconds); default: SOURCE_DATE_EPOCH when set. */
	sourceDateEpoch?: number;
};

const readChunk = 4 * 1024 * 1024;
const flushAt = 1024 * 1024;

/**
Extended attributes of every entry under `root` that has any, by path relative to it, from one getfattr
(values hex-encoded, so binary ones survive). Unlike diff, export fails when getfattr could not read
something: a tar without some attributes would still claim to be the layer.
*/
async function readAttributes(root: string): Promise<Map<string, Map<string, Buffer>>> {
	const output = await runGetfattr(
		findExecutable('getfattr'),
		[
			'--absolute-names',
			'--recursive',
			'--physical',
			'--no-dereference',
			'--dump',
			'--match=-',
			'--encoding=hex',
		],
		[root],
		{partial: false, what: `layer tree ${root}`},
	);
	const attributes = new Map<string, Map<string, Buffer>>();
	let current: Map<string, Buffer> | undefined;
	for (const line of output.split('\n')) {
		if (line.startsWith('# file: ')) {
			current = new Map();
			attributes.set(path.relative(root, unquoteGetfattrPath(line.slice('# file: '.length))), current);
		} else if (current && line !== '') {
			// `NAME=0xHEX`, or `NAME` alone for an empty value.
			const equals = line.indexOf('=');
			const value = equals === -1 ? '' : line.slice(equals + 1);
			current.set(
				unquoteGetfattrPath(equals === -1 ? line : line.slice(0, equals)),
				Buffer.from(value.startsWith('0x') ? value.slice(2) : '', 'hex'),
			);
		}
	}

	return attributes;
}

/** A byte sink that hashes the tar and passes it on in large chunks, waiting when the stream is full. */
class TarSink {
	readonly hash: Hash = createHash('sha256');
	bytes = 0;
	private pending: Buffer[] = [];
	private pendingBytes = 0;

	private readonly stream: Writable | undefined;

	constructor(stream: Writable | undefined) {
		this.stream = stream;
	}

	async write(chunk: Buffer): Promise<void> {
		if (chunk.length === 0) {
			return;
		}

		this.hash.update(chunk);
		this.bytes += chunk.length;
		if (!this.stream) {
			return;
		}

		this.pending.push(chunk);
		this.pendingBytes += chunk.length;
		if (this.pendingBytes >= flushAt) {
			await this.flush();
		}
	}

	async flush(): Promise<void> {
		if (!this.stream || this.pendingBytes === 0) {
			return;
		}

		const data = Buffer.concat(this.pending);
		this.pending = [];
		this.pendingBytes = 0;
		if (!this.stream.write(data)) {
			await once(this.stream, 'drain');
		}
	}
}

function compareBytes(a: string, b: string): number {
	return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** Write one layer tree as a tar into `sink`; returns the number of entries. */
async function writeLayerTar(tree: string, sink: TarSink, epoch: number | undefined): Promise<number> {
	const attributes = await readAttributes(tree);
	const euid = process.geteuid?.() ?? 0;
	const egid = process.getegid?.() ?? 0;
	const owner = (id: number, own: number) => (euid !== 0 && id === own ? 0 : id);
	const seen = new Map<string, string>();
	let entries = 0;
	const buffer = Buffer.allocUnsafe(readChunk);

	const emit = async (entry: TarEntry) => {
		await sink.write(entryHeader(entry));
		entries++;
	};

	const visit = async (relativeDirectory: string) => {
		// Sorted by the names written: a whiteout as `.wh.NAME`.
		const listed = readdirSync(path.join(tree, relativeDirectory)).map((name) => {
			const stats = lstatSync(path.join(tree, relativeDirectory, name));
			const whiteout = stats.isCharacterDevice() && stats.rdev === 0;
			return {name, stats, key: whiteout ? `.wh.${name}` : name};
		});
		for (const {name, stats} of listed.sort((a, b) => compareBytes(a.key, b.key))) {
			const relative = relativeDirectory ? `${relativeDirectory}/${name}` : name;
			const full = path.join(tree, relative);
			const mtime = Math.floor(stats.mtimeMs / 1000);
			const common = {
				mode: stats.mode & 0o7777,
				uid: owner(stats.uid, euid),
				gid: owner(stats.gid, egid),
				mtime: epoch === undefined ? mtime : Math.min(mtime, epoch),
				size: 0,
			};
			const xattrs = new Map(
				[...(attributes.get(relative) ?? new Map<string, Buffer>())].filter(
					([key]) => !key.startsWith('user.overlay.') && !key.startsWith('trusted.overlay.'),
				),
			);
			if (stats.isCharacterDevice() && stats.rdev === 0) {
				const parent = relativeDirectory ? `${relativeDirectory}/` : '';
				await emit({...common, path: `${parent}.wh.${name}`, type: 'file', mode: 0o600});
			} else if (stats.isDirectory()) {
				await emit({...common, path: `${relative}/`, type: 'directory', xattrs});
				if (attributes.get(relative)?.get('user.overlay.opaque')?.toString() === 'y') {
					await emit({...common, path: `${relative}/.wh..wh..opq`, type: 'file', mode: 0o600});
				}

				await visit(relative);
			} else if (stats.isSymbolicLink()) {
				await emit({...common, path: relative, type: 'symlink', linkname: readlinkSync(full), xattrs});
			} else if (stats.isFile()) {
				const key = `${stats.dev}:${stats.ino}`;
				const first = stats.nlink > 1 ? seen.get(key) : undefined;
				if (first !== undefined) {
					await emit({...common, path: relative, type: 'hardlink', linkname: first, xattrs});
					continue;
				}

				if (stats.nlink > 1) {
					seen.set(key, relative);
				}

				await emit({...common, path: relative, type: 'file', size: stats.size, xattrs});
				const fd = openSync(full, 'r');
				try {
					let done = 0;
					while (done < stats.size) {
						const read = readSync(fd, buffer, 0, Math.min(readChunk, stats.size - done), null);
						if (read === 0) {
							throw new StoreError(`layer file ${full} shrank while it was exported; the store is damaged`);
						}

						await sink.write(Buffer.from(buffer.subarray(0, read)));
						done += read;
					}
				} finally {
					closeSync(fd);
				}

				await sink.write(padding(stats.size));
			} else {
				const type = stats.isCharacterDevice() ? 'character' : stats.isBlockDevice() ? 'block' : 'fifo';
				await emit({
					...common,
					path: relative,
					type,
					devmajor: Math.floor(stats.rdev / 256),
					devminor: stats.rdev % 256,
					xattrs,
				});
			}
		}
	};

	await visit('');
	await sink.write(endOfArchive());
	await sink.flush();
	return entries;
}

function epochFromEnvironment(): number | undefined {
	const value = process.env['SOURCE_DATE_EPOCH'];
	if (value === undefined || value === '') {
		return undefined;
	}

	if (!/^\d+$/.test(value)) {
		throw new UsageError(
			`SOURCE_DATE_EPOCH=${value} is not a number of seconds; set it to an integer or unset it`,
		);
	}

	return Number(value);
}

/** A layer's DiffID under `epoch`, from its record when known, else by hashing a tar of it (and recording it). */
export async function layerDiffId(store: Store, layer: LayerRecord, epoch: number | undefined): Promise<string> {
	if (epoch === undefined && layer.diffId) {
		return layer.diffId;
	}

	const sink = new TarSink(undefined);
	await writeLayerTar(layerTreePath(store, layer.id), sink, epoch);
	const diffId = `sha256:${sink.hash.digest('hex')}`;
	if (epoch === undefined) {
		await addToLayerRecord(store, layer.id, {diffId});
	}

	return diffId;
}

/** The ChainID of DiffIDs stacked bottom first: ChainID(L0) = DiffID(L0), then sha256 of "PREVIOUS DIFFID". */
export function chainIdOf(diffIds: readonly string[]): string {
	let chain = diffIds[0] ?? '';
	for (const diffId of diffIds.slice(1)) {
		chain = `sha256:${createHash('sha256').update(`${chain} ${diffId}`).digest('hex')}`;
	}

	return chain;
}

/** `scratch export NAME`: a layer as a deterministic OCI layer tar, to a file or a stream. */
export async function exportLayer(options: ExportOptions): Promise<LayerExport> {
	if ((options.file === undefined) === (options.stream === undefined)) {
		throw new UsageError('export needs exactly one of a file or a stream to write to');
	}

	const epoch = options.sourceDateEpoch ?? epochFromEnvironment();
	const store = await openExistingStore(options.store);
	const {layer, name} = resolveLayer(store, options.reference);
	const lowers = layer.lowers.map((id) => requireLayer(store, id, `layer ${layer.id}`));
	const gzip = options.gzip ?? false;

	let target: Writable;
	let temporary: string | undefined;
	if (options.file === undefined) {
		target = options.stream as Writable;
	} else {
		const file = path.resolve(options.file);
		temporary = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomId(8)}.tmp`);
		try {
			target = createWriteStream(temporary, {flags: 'wx', mode: 0o644});
			await once(target, 'open');
		} catch (error) {
			throw new InvalidPathError(
				`cannot write ${options.file}: ${(error as Error).message}; give a file in an existing, writable directory with -o FILE`,
				{cause: error},
			);
		}
	}

	const compressor = gzip ? createGzip({level: 6}) : undefined;
	if (compressor) {
		compressor.pipe(target);
	}

	const sink = new TarSink(compressor ?? target);
	let entries: number;
	try {
		entries = await writeLayerTar(layerTreePath(store, layer.id), sink, epoch);
		const last = compressor ?? target;
		if (options.file !== undefined || compressor) {
			last.end();
		}

		if (options.file !== undefined) {
			await once(target, 'finish');
			renameSync(temporary as string, path.resolve(options.file));
		} else if (compressor) {
			await once(compressor, 'end');
		}
	} catch (error) {
		if (temporary) {
			target.destroy();
			rmSync(temporary, {force: true});
		}

		throw error;
	}

	const diffId = `sha256:${sink.hash.digest('hex')}`;
	const lowerIds: string[] = [];
	for (const lower of lowers) {
		lowerIds.push(await layerDiffId(store, lower, epoch));
	}

	const chainId = chainIdOf([...lowerIds, diffId]);
	if (epoch === undefined) {
		await addToLayerRecord(store, layer.id, {diffId, chainId});
	}

	return {
		layer: layer.id,
		...(name ? {name} : {}),
		diffId,
		chainId,
		entries,
		bytes: sink.bytes,
		...(options.file === undefined ? {} : {file: path.resolve(options.file)}),
		gzip,
	};
}
