import {createHash} from 'node:crypto';
import {once} from 'node:events';
import {
	closeSync,
	constants,
	createWriteStream,
	lstatSync,
	openSync,
	readdirSync,
	readlinkSync,
	readSync,
	renameSync,
	rmSync,
	statSync,
	type WriteStream,
} from 'node:fs';
import path from 'node:path';
import type {Writable} from 'node:stream';
import {finished} from 'node:stream/promises';
import {MessageChannel, type MessagePort, receiveMessageOnPort, Worker} from 'node:worker_threads';
import {createGzip} from 'node:zlib';
import {InvalidPathError, ScratchError, StoreError, UsageError} from '../errors.js';
import {
	type EntryKind,
	isOpaqueMarker,
	isOverlayMetadataXattr,
	type LayerFormat,
	opaqueMarker,
	opaqueXattr,
	whiteoutName,
	whiteoutPrefix,
	whiteoutTarget,
} from '../store/layer-format.js';
import {
	addToLayerRecord,
	type LayerRecord,
	layerTreePath,
	layerWithStats,
	requireLayer,
} from '../store/layers.js';
import {resolveLayer} from '../store/resolve.js';
import type {StoreOptions} from '../store/snapshots.js';
import {openExistingStore, type Store} from '../store/store.js';
import {findExecutable} from '../system/executables.js';
import {runGetfattr, unquoteGetfattrPath} from '../system/getfattr.js';
import {randomId} from '../system/random-id.js';
import {endOfArchive, entryHeader, plainHeaderSize, type TarEntry, writePlainHeader} from './tar.js';

/*
`scratch export`: a layer as an OCI image layer tar (image-spec layer.md). The store's layer format
(layer-format.ts) is translated on the way, to the same tar for the same content whichever it is: a
whiteout (a character device 0/0, or in `whiteout-files-1` an empty file `.wh.NAME`) becomes an empty
`.wh.NAME` with the whiteout's owner and mtime, an opaque directory (`user.overlay.opaque=y`, or holding
an empty `.wh..wh..opq`) gets an empty `.wh..wh..opq` right after it with the directory's, the marker
itself is never written as a file, and the overlays' own attributes are left out. Any other entry whose
name starts with `.wh.` is refused: a tar would turn it into a deletion. Entries are sorted byte-wise,
owners are numeric (a rootless store's owner is uid and gid 0, as its runs saw it), mtimes are whole
seconds, clamped to SOURCE_DATE_EPOCH when it is set: exporting the same layer twice gives the same
bytes. The DiffID (sha256 of the uncompressed tar) and ChainID are recorded in the layer's record.

With `flatten`, the tar is the whole stack (the layer's lowers and itself) as one layer over the source
tree, merged by overlayfs's rules in one walk over all the layer trees at once; see writeDirectory.

The walk runs on this thread with synchronous file system calls (Node's asynchronous ones cost several
times more per file), building headers and file contents into slots of one shared buffer. A worker
thread hashes each full slot and, when the tar goes to a file descriptor, writes it there, while this
thread fills the next slots; when it keeps up, it also reads files into the places left for them. For
a stream the slots are copied out and written here.
*/

/** What an export produced. */
export type LayerExport = {
	layer: string;
	name?: string;
	/** `sha256:` of the uncompressed tar. */
	diffId: string;
	/** `sha256:` ChainID: of the layer's stack, bottom first (image-spec config.md); flattened, the DiffID. */
	chainId: string;
	entries: number;
	/** Bytes of the uncompressed tar. */
	bytes: number;
	/** Where it went; undefined for a stream or a file descriptor the caller gave. */
	file?: string;
	gzip: boolean;
	/** Whether the tar is the whole stack flattened into one layer. */
	flattened: boolean;
	/** How many layers went into the tar: 1, or with `flatten` the whole stack's. */
	layers: number;
};

/** Options of `exportLayer`. */
export type ExportOptions = StoreOptions & {
	/** A snapshot name or a layer id. */
	reference: string;
	/** Write here (atomically: a temp file renamed into place). */
	file?: string;
	/** Or to this stream. */
	stream?: Writable;
	/**
	Or to this open file descriptor (the CLI's stdout when it is a pipe or a file), with blocking writes
	from a worker thread while this thread is busy: not a pipe that this process itself reads. It is not
	closed.
	*/
	fd?: number;
	gzip?: boolean;
	/** Write the whole stack (the lowers and the layer) merged into one layer. Nothing is recorded then. */
	flatten?: boolean;
	/** Clamp mtimes to this (seconds); default: SOURCE_DATE_EPOCH when set. */
	sourceDateEpoch?: number;
	/**
	Called as the tar grows, every slot (a quarter MiB) or so: uncompressed bytes so far, and an estimate
	of the total from the layers' sizes (measured first when their records lack them, then kept there).
	*/
	onProgress?: (done: number, total: number | undefined) => void;
};

/** Slots of the buffer the tar is built in: small enough to stay in a core's cache until written. */
const slotSize = 256 * 1024;
const slotCount = 16;
const blockSize = 512;

/*
The worker: for each sealed slot, reads the files this thread left to it into their places, hashes the
slot and writes it to the descriptor, if any, then releases it. Control words (Int32): 0 slots sealed,
1 an event counter this thread waits on, 2 slots released, 3 state (0 working, 1 stopped: digest posted
unless abandoned, 2 failed: error posted), then per slot its length (-1 marks the end of the tar, -2 an
abandoned one), then per slot how many files it has to read (their paths, offsets and sizes come as a
message), then 1 when the tar is abandoned: the slots still sealed are dropped.
*/
const workerSource = `
const {workerData, receiveMessageOnPort} = require('node:worker_threads');
const {createHash} = require('node:crypto');
const {closeSync, openSync, readSync, writeSync} = require('node:fs');
const {slots, control: controlBuffer, slotSize, slotCount, fd, port} = workerData;
const control = new Int32Array(controlBuffer);
const memory = Buffer.from(slots);
const pause = new Int32Array(new SharedArrayBuffer(4));
const hash = createHash('sha256');

function readFiles({paths, offsets, sizes}, base) {
	for (let index = 0; index < paths.length; index++) {
		let file;
		try {
			file = openSync(paths[index], 'r');
		} catch (error) {
			error.message = 'cannot read the layers to export: ' + error.message;
			throw error;
		}

		try {
			let done = 0;
			while (done < sizes[index]) {
				const read = readSync(file, memory, base + offsets[index] + done, sizes[index] - done, null);
				if (read === 0) {
					throw new Error('layer file ' + paths[index] + ' shrank while it was exported; the store is damaged');
				}

				done += read;
			}
		} finally {
			closeSync(file);
		}
	}
}

function writeAll(chunk) {
	let written = 0;
	while (written < chunk.length) {
		try {
			written += writeSync(fd, chunk, written, chunk.length - written);
		} catch (error) {
			if (error.code !== 'EAGAIN') {
				error.message = 'cannot write the tar: ' + error.message;
				throw error;
			}

			// A non-blocking descriptor that is full: there is no poll(2) in Node, so retry in a millisecond.
			Atomics.wait(pause, 0, 0, 1);
		}
	}
}

let released = 0;
try {
	for (;;) {
		Atomics.wait(control, 0, released);
		if (Atomics.load(control, 4 + 2 * slotCount) === 1) {
			Atomics.store(control, 3, 1);
			break;
		}

		const slot = released % slotCount;
		const length = Atomics.load(control, 4 + slot);
		if (length < 0) {
			if (length === -1) {
				port.postMessage({digest: hash.digest('hex')});
			}

			Atomics.store(control, 3, 1);
			break;
		}

		if (Atomics.load(control, 4 + slotCount + slot) > 0) {
			readFiles(receiveMessageOnPort(port).message, slot * slotSize);
		}

		const chunk = memory.subarray(slot * slotSize, slot * slotSize + length);
		hash.update(chunk);
		if (fd !== undefined) {
			writeAll(chunk);
		}

		released++;
		Atomics.store(control, 2, released);
		Atomics.add(control, 1, 1);
		Atomics.notify(control, 1);
	}
} catch (error) {
	port.postMessage({error: error.message});
	Atomics.store(control, 3, 2);
}

Atomics.add(control, 1, 1);
Atomics.notify(control, 1);
`;

/**
The tar being built: the slot being filled, and the worker that reads some of its files, hashes it and
writes it once it is full.
*/
class TarOutput {
	/** The slot being filled, and how far. */
	buffer: Buffer;
	offset = 0;
	/** Bytes sealed so far. */
	bytes = 0;
	entries = 0;

	private readonly memory: Buffer;
	private readonly control: Int32Array;
	private readonly port: MessagePort;
	private readonly worker: Worker;
	private sealed = 0;
	/** Whether the worker may read files into slots: not when this thread copies sealed slots out. */
	private readonly workerReads: boolean;
	/** Files of the current slot that the worker reads, where and how much. */
	private reads: {paths: string[]; offsets: number[]; sizes: number[]} = {paths: [], offsets: [], sizes: []};

	/** `fd`: where the worker writes the tar, if anywhere; `copied`: whether sealed slots are copied out here. */
	constructor(fd: number | undefined, copied: boolean) {
		this.workerReads = !copied;
		const slots = new SharedArrayBuffer(slotSize * slotCount);
		const controlBuffer = new SharedArrayBuffer(4 * (5 + 2 * slotCount));
		this.memory = Buffer.from(slots);
		this.control = new Int32Array(controlBuffer);
		this.buffer = this.memory.subarray(0, slotSize);
		const {port1, port2} = new MessageChannel();
		this.port = port1;
		this.worker = new Worker(workerSource, {
			eval: true,
			workerData: {slots, control: controlBuffer, slotSize, slotCount, fd, port: port2},
			transferList: [port2],
		});
		// It ends by itself once it has seen the end marker; nothing here waits for its exit.
		this.worker.unref();
	}

	get room(): number {
		return slotSize - this.offset;
	}

	/**
	Whether the worker can read a file as well: it keeps up (less than half the slots are waiting for it),
	and nothing reads sealed slots here before it is done with them. Then this thread only walks; else it
	reads the file itself. So both threads stay busy whichever is the slower.
	*/
	get workerKeepsUp(): boolean {
		return this.workerReads && this.sealed - Atomics.load(this.control, 2) < slotCount / 2;
	}

	/** Leave `size` bytes here for the worker to read from `file` before it hashes the slot. */
	readLater(file: string, size: number): void {
		this.reads.paths.push(file);
		this.reads.offsets.push(this.offset);
		this.reads.sizes.push(size);
		this.offset += size;
	}

	/** Hand the filled part of the slot to the worker and move to the next slot; returns what was sealed. */
	seal(): Buffer {
		const chunk = this.buffer.subarray(0, this.offset);
		this.handOver(this.offset);
		this.bytes += chunk.length;
		return chunk;
	}

	/** Copy bytes in, sealing slots as they fill; yields each sealed slot. */
	*write(bytes: Buffer): Generator<Buffer, void> {
		let done = 0;
		while (done < bytes.length) {
			if (this.room === 0) {
				yield this.seal();
			}

			const length = Math.min(this.room, bytes.length - done);
			bytes.copy(this.buffer, this.offset, done, done + length);
			this.offset += length;
			done += length;
		}
	}

	/** After the last slot was sealed: the sha256 (hex) of everything sealed. */
	finish(): string {
		this.handOver(-1);
		const reply = this.waitForReply();
		if (reply.digest === undefined) {
			throw new StoreError('the tar hashing worker ended without a digest');
		}

		return reply.digest;
	}

	/**
	Stop the worker after a failure here, and wait until it has: it may be writing to a descriptor that the
	caller closes next, whose number a later open could take.
	*/
	abandon(): void {
		Atomics.store(this.control, 4 + 2 * slotCount, 1);
		this.handOver(-2);
		this.waitUntilStopped();
		this.port.close();
	}

	private handOver(length: number): void {
		const slot = this.sealed % slotCount;
		const reads = length < 0 ? 0 : this.reads.paths.length;
		if (reads > 0) {
			this.port.postMessage(this.reads);
			this.reads = {paths: [], offsets: [], sizes: []};
		}

		Atomics.store(this.control, 4 + slotCount + slot, reads);
		Atomics.store(this.control, 4 + slot, length);
		this.sealed++;
		Atomics.store(this.control, 0, this.sealed);
		Atomics.notify(this.control, 0);
		if (length < 0) {
			return;
		}

		// The next slot is free once the worker is done with what was sealed into it slotCount slots ago.
		const next = this.sealed % slotCount;
		while (this.sealed - Atomics.load(this.control, 2) >= slotCount) {
			const seen = Atomics.load(this.control, 1);
			if (Atomics.load(this.control, 3) !== 0) {
				this.waitForReply();
			}

			if (this.sealed - Atomics.load(this.control, 2) >= slotCount) {
				Atomics.wait(this.control, 1, seen);
			}
		}

		this.buffer = this.memory.subarray(next * slotSize, (next + 1) * slotSize);
		this.offset = 0;
	}

	private waitUntilStopped(): void {
		for (;;) {
			const seen = Atomics.load(this.control, 1);
			if (Atomics.load(this.control, 3) !== 0) {
				return;
			}

			Atomics.wait(this.control, 1, seen);
		}
	}

	/** Wait until the worker has stopped or failed; its reply, or its failure thrown. */
	private waitForReply(): {digest?: string} {
		this.waitUntilStopped();
		const reply = receiveMessageOnPort(this.port)?.message as {digest?: string; error?: string} | undefined;
		this.port.close();
		if (reply?.error !== undefined) {
			throw new StoreError(reply.error);
		}

		return reply ?? {};
	}
}

/** One layer tree of the stack, with the extended attributes of its entries that have any. */
type LayerTree = {
	id: string;
	root: string;
	/** How it records whiteouts and opaque directories: its store's format. */
	format: LayerFormat;
	attributes: Map<string, Map<string, Buffer>>;
};

/**
Extended attributes of every entry of the layer trees that has any, by layer id and path relative to its
tree, from one getfattr (values hex-encoded, so binary ones survive). Unlike diff, export fails when
getfattr could not read something: a tar without some attributes would still claim to be the layer.
*/
async function readAttributes(
	layersDirectory: string,
	ids: readonly string[],
): Promise<Map<string, Map<string, Map<string, Buffer>>>> {
	const roots = ids.map((id) => path.join(layersDirectory, id));
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
		roots,
		{
			partial: false,
			what: ids.length === 1 ? `layer tree ${roots[0]}` : `the layer trees in ${layersDirectory}`,
		},
	);
	const byLayer = new Map<string, Map<string, Map<string, Buffer>>>(ids.map((id) => [id, new Map()]));
	let current: Map<string, Buffer> | undefined;
	for (const line of output.split('\n')) {
		if (line.startsWith('# file: ')) {
			// LAYERS/ID or LAYERS/ID/RELATIVE: every root is a layer id under the same directory.
			const inLayers = path.relative(layersDirectory, unquoteGetfattrPath(line.slice('# file: '.length)));
			const slash = inLayers.indexOf('/');
			const id = slash === -1 ? inLayers : inLayers.slice(0, slash);
			current = new Map();
			byLayer.get(id)?.set(slash === -1 ? '' : inLayers.slice(slash + 1), current);
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

	return byLayer;
}

/** Where a surrogate (half of a code point above U+FFFF) sorts in UTF-8: after every other UTF-16 unit. */
function utf8Rank(unit: number): number {
	return unit >= 0xd8_00 && unit <= 0xdf_ff ? unit + 0x1_00_00 : unit;
}

/** Byte-wise order of two names' UTF-8 encodings, without encoding them. */
function compareUtf8(a: string, b: string): number {
	const length = Math.min(a.length, b.length);
	for (let index = 0; index < length; index++) {
		const left = a.charCodeAt(index);
		const right = b.charCodeAt(index);
		if (left !== right) {
			return utf8Rank(left) - utf8Rank(right);
		}
	}

	return a.length - b.length;
}

/**
What the walk keeps of an entry's lstat while it writes the entry's directory: a few small numbers
rather than the Stats object, which carries four Dates besides.
*/
type EntryStats = {
	/** The file type bits of the mode (S_IFMT). */
	type: number;
	/** Permission bits, setuid, setgid and sticky. */
	mode: number;
	uid: number;
	gid: number;
	size: number;
	/** Whole seconds. */
	mtime: number;
	/** `DEV:INO` of a file with more than one link, else undefined. */
	inode: string | undefined;
	rdev: number;
};

function entryStats(file: string): EntryStats {
	const stats = lstatSync(file);
	return {
		type: stats.mode & constants.S_IFMT,
		mode: stats.mode & 0o7777,
		uid: stats.uid,
		gid: stats.gid,
		size: stats.size,
		mtime: Math.floor(stats.mtimeMs / 1000),
		inode: stats.nlink > 1 ? `${stats.dev}:${stats.ino}` : undefined,
		rdev: stats.rdev,
	};
}

/** One name in a directory of the merged stack: what the topmost layer having it holds there. */
type MergedEntry = {
	/** The name it stands for: for a whiteout, the name it deletes. */
	name: string;
	/** The name written: `.wh.NAME` for a whiteout. */
	key: string;
	/** Whether it is a whiteout (a 0/0 device, or a `.wh.NAME` file in `whiteout-files-1`). */
	whiteout: boolean;
	/** The topmost layer having it. */
	tree: LayerTree;
	stats: EntryStats;
	/** The same name in the lower layers that merge this directory, top first: whether it is a directory there. */
	below: ReadonlyArray<{tree: LayerTree; directory: boolean}>;
};

const nothingBelow: MergedEntry['below'] = [];

/** What `whiteoutTarget` and `isOpaqueMarker` need to know of an entry, from what the walk keeps. */
function entryKind(stats: EntryStats): EntryKind {
	return {
		isCharacterDevice: () => stats.type === constants.S_IFCHR,
		isFile: () => stats.type === constants.S_IFREG,
		rdev: stats.rdev,
		size: stats.size,
	};
}

/**
What a layer entry named `rawName` stands for in its directory: a whiteout of a name, the opaque marker
(which is no entry of its own: its directory is opaque), or itself. A name starting with `.wh.` that is
neither cannot be written into an OCI layer tar, where every such name is a deletion: the export fails
rather than turn it into one.
*/
function classifyEntry(
	tree: LayerTree,
	directory: string,
	rawName: string,
	stats: EntryStats,
): {name: string; whiteout: boolean} | undefined {
	const mayBeSpecial = rawName.startsWith(whiteoutPrefix) || stats.type === constants.S_IFCHR;
	if (!mayBeSpecial) {
		return {name: rawName, whiteout: false};
	}

	const kind = entryKind(stats);
	if (isOpaqueMarker(tree.format, rawName, kind)) {
		// The layer's root cannot be opaque (import refuses such a marker): there it means nothing.
		return undefined;
	}

	const target = whiteoutTarget(tree.format, rawName, kind);
	if (target?.startsWith(whiteoutPrefix)) {
		const relative = directory === '' ? target : `${directory}/${target}`;
		throw new StoreError(
			`cannot export layer ${tree.id}: it deletes ${relative}, which an OCI layer tar cannot express (its whiteout would be ${whiteoutPrefix}${target}, which importers refuse); make the stack without ${whiteoutPrefix} files`,
		);
	}

	if (target !== undefined) {
		return {name: target, whiteout: true};
	}

	if (rawName.startsWith(whiteoutPrefix)) {
		const relative = directory === '' ? rawName : `${directory}/${rawName}`;
		throw new StoreError(
			`cannot export ${relative} of layer ${tree.id}: its name starts with ${whiteoutPrefix}, which an OCI layer tar reserves for deletions, and it is not one (${tree.format === 'whiteout-files-1' ? 'not an empty regular file' : 'not a 0/0 character device'}); make the layer without it (rename the file in the command that writes it)`,
		);
	}

	return {name: rawName, whiteout: false};
}

/** A layer that has both a name and a whiteout of it in one directory is damaged: which one counts? */
function twiceInOneLayer(tree: LayerTree, directory: string, name: string): StoreError {
	const relative = directory === '' ? name : `${directory}/${name}`;
	return new StoreError(
		`cannot export layer ${tree.id}: it holds both ${relative} and its whiteout ${whiteoutName(tree.format, name)} beside it; the store is damaged, remove the layer (scratch rm) and make it again`,
	);
}

/** Whether a directory of a layer is opaque; fuse-overlayfs, the reader of `whiteout-files-1`, reads both marks. */
function isOpaque(tree: LayerTree, relative: string): boolean {
	if (tree.attributes.get(relative)?.get(opaqueXattr)?.toString() === 'y') {
		return true;
	}

	if (tree.format !== 'whiteout-files-1') {
		return false;
	}

	const marker = lstatSync(`${tree.root}/${relative}/${opaqueMarker}`, {throwIfNoEntry: false});
	return marker !== undefined && isOpaqueMarker(tree.format, opaqueMarker, marker);
}

function byKey(a: MergedEntry, b: MergedEntry): number {
	return compareUtf8(a.key, b.key);
}

/** The entries of one directory of one layer tree, in the order they are written. */
function listTree(tree: LayerTree, directory: string): MergedEntry[] {
	const listed: MergedEntry[] = [];
	const full = directory === '' ? tree.root : `${tree.root}/${directory}`;
	let deletesByFile = false;
	for (const rawName of readdirSync(full)) {
		const stats = entryStats(`${full}/${rawName}`);
		const entry = classifyEntry(tree, directory, rawName, stats);
		if (entry === undefined) {
			continue;
		}

		const {name, whiteout} = entry;
		deletesByFile ||= whiteout && name !== rawName;
		listed.push({
			name,
			key: whiteout ? `${whiteoutPrefix}${name}` : name,
			whiteout,
			tree,
			stats,
			below: nothingBelow,
		});
	}

	if (deletesByFile) {
		const names = new Set<string>();
		for (const {name} of listed) {
			if (names.has(name)) {
				throw twiceInOneLayer(tree, directory, name);
			}

			names.add(name);
		}
	}

	return listed.sort(byKey);
}

/** The entries of one directory of the merged stack (`trees` top first), in the order they are written. */
function listMerged(directory: string, trees: readonly LayerTree[]): MergedEntry[] {
	if (trees.length === 1) {
		return listTree(trees[0] as LayerTree, directory);
	}

	const merged = new Map<string, MergedEntry & {below: Array<{tree: LayerTree; directory: boolean}>}>();
	for (const tree of trees) {
		const full = directory === '' ? tree.root : `${tree.root}/${directory}`;
		for (const dirent of readdirSync(full, {withFileTypes: true})) {
			const rawName = dirent.name;
			// Only names that may be whiteouts or markers need their lstat before the lookup.
			const special = rawName.startsWith(whiteoutPrefix) || dirent.isCharacterDevice();
			let stats = special ? entryStats(`${full}/${rawName}`) : undefined;
			const entry = stats ? classifyEntry(tree, directory, rawName, stats) : {name: rawName, whiteout: false};
			if (entry === undefined) {
				continue;
			}

			const {name, whiteout} = entry;
			const found = merged.get(name);
			if (found) {
				if (found.tree === tree) {
					throw twiceInOneLayer(tree, directory, name);
				}

				found.below.push({tree, directory: !whiteout && dirent.isDirectory()});
				continue;
			}

			stats ??= entryStats(`${full}/${rawName}`);
			merged.set(name, {
				name,
				key: whiteout ? `${whiteoutPrefix}${name}` : name,
				whiteout,
				tree,
				stats,
				below: [],
			});
		}
	}

	return [...merged.values()].sort(byKey);
}

/**
Whether a directory of the merged stack hides what lies below it (the source tree's directory there):
going down from its topmost layer, it does when a layer has it opaque, or has no directory there but a
file, symlink, device or whiteout. Also the layers whose directory merges into it, top first.
*/
function mergeDirectory(item: MergedEntry, relative: string): {opaque: boolean; trees: LayerTree[]} {
	const trees = [item.tree];
	if (isOpaque(item.tree, relative)) {
		return {opaque: true, trees};
	}

	for (const lower of item.below) {
		if (!lower.directory) {
			return {opaque: true, trees};
		}

		trees.push(lower.tree);
		if (isOpaque(lower.tree, relative)) {
			return {opaque: true, trees};
		}
	}

	return {opaque: false, trees};
}

/** What stays the same while one tar is written. */
type WalkContext = {
	output: TarOutput;
	epoch: number | undefined;
	euid: number;
	egid: number;
	/** Paths written for inodes with several links, by layer and inode: later links become hardlinks. */
	firstLinks: Map<string, string>;
};

/** Write a header; yields the slot it fills, if it does. */
function* writeHeader(output: TarOutput, entry: TarEntry): Generator<Buffer, void> {
	if (output.room < plainHeaderSize) {
		yield output.seal();
	}

	if (writePlainHeader(entry, output.buffer, output.offset)) {
		output.offset += plainHeaderSize;
	} else {
		yield* output.write(entryHeader(entry));
	}

	output.entries++;
}

/** An entry's own extended attributes: those of the layer tree, less the overlay's. */
function userXattrs(tree: LayerTree, relative: string): Map<string, Buffer> | undefined {
	const attributes = tree.attributes.get(relative);
	return attributes ? new Map([...attributes].filter(([key]) => !isOverlayMetadataXattr(key))) : undefined;
}

/** Zeros after `size` bytes of content, up to a whole block. */
function* writePadding(output: TarOutput, size: number): Generator<Buffer, void> {
	const padding = (blockSize - (size % blockSize)) % blockSize;
	if (output.room < padding) {
		yield output.seal();
	}

	output.buffer.fill(0, output.offset, output.offset + padding);
	output.offset += padding;
}

/**
Write one directory of the merged stack (`trees`: the layers whose directory there merges into it, top
first) and everything under it. Overlayfs's rules: for each name the topmost layer having it wins. A
file, symlink, device or whiteout there hides the name in every lower layer; a whiteout is written as
`.wh.NAME`, and stays, as it may hide something of the source tree. A directory merges with the same
directory of the layers below it as mergeDirectory says, and gets a `.wh..wh..opq` when it hides the
source tree's. Its attributes, mode, owner and mtime are the topmost one's.
*/
function* writeDirectory(
	context: WalkContext,
	directory: string,
	trees: readonly LayerTree[],
): Generator<Buffer, void> {
	const {output, epoch, euid, egid} = context;
	const prefix = directory === '' ? '' : `${directory}/`;
	for (const item of listMerged(directory, trees)) {
		const {name, tree, stats} = item;
		const relative = prefix + name;
		const full = `${tree.root}/${relative}`;
		const mtime = epoch !== undefined && stats.mtime > epoch ? epoch : stats.mtime;
		// A rootless store's files belong to its owner, who was root in the runs that wrote them.
		const uid = euid !== 0 && stats.uid === euid ? 0 : stats.uid;
		const gid = euid !== 0 && stats.gid === egid ? 0 : stats.gid;
		const {mode} = stats;
		let entry: TarEntry;
		let merging: {opaque: boolean; trees: LayerTree[]} | undefined;
		let content = 0;
		if (item.whiteout) {
			entry = {
				path: `${prefix}${whiteoutPrefix}${name}`,
				type: 'file',
				mode: 0o600,
				uid,
				gid,
				mtime,
				size: 0,
			};
		} else if (stats.type === constants.S_IFDIR) {
			const xattrs = userXattrs(tree, relative);
			entry = {
				path: `${relative}/`,
				type: 'directory',
				mode,
				uid,
				gid,
				mtime,
				size: 0,
				...(xattrs && {xattrs}),
			};
			merging = mergeDirectory(item, relative);
		} else if (stats.type === constants.S_IFLNK) {
			const xattrs = userXattrs(tree, relative);
			const linkname = readlinkSync(full);
			entry = {
				path: relative,
				type: 'symlink',
				mode,
				uid,
				gid,
				mtime,
				size: 0,
				linkname,
				...(xattrs && {xattrs}),
			};
		} else if (stats.type === constants.S_IFREG) {
			const xattrs = userXattrs(tree, relative);
			const inode = stats.inode === undefined ? undefined : `${tree.id}:${stats.inode}`;
			const first = inode === undefined ? undefined : context.firstLinks.get(inode);
			if (first === undefined) {
				if (inode !== undefined) {
					context.firstLinks.set(inode, relative);
				}

				content = stats.size;
				entry = {
					path: relative,
					type: 'file',
					mode,
					uid,
					gid,
					mtime,
					size: content,
					...(xattrs && {xattrs}),
				};
			} else {
				entry = {
					path: relative,
					type: 'hardlink',
					mode,
					uid,
					gid,
					mtime,
					size: 0,
					linkname: first,
					...(xattrs && {xattrs}),
				};
			}
		} else {
			const xattrs = userXattrs(tree, relative);
			entry = {
				path: relative,
				type:
					stats.type === constants.S_IFCHR
						? 'character'
						: stats.type === constants.S_IFBLK
							? 'block'
							: 'fifo',
				mode,
				uid,
				gid,
				mtime,
				size: 0,
				devmajor: Math.floor(stats.rdev / 256),
				devminor: stats.rdev % 256,
				...(xattrs && {xattrs}),
			};
		}

		// Inline rather than writeHeader: this runs for every entry, and a generator per entry shows.
		if (output.room < plainHeaderSize) {
			yield output.seal();
		}

		if (writePlainHeader(entry, output.buffer, output.offset)) {
			output.offset += plainHeaderSize;
			output.entries++;
		} else {
			yield* writeHeader(output, entry);
		}

		if (merging) {
			if (merging.opaque) {
				const marker = `${relative}/${opaqueMarker}`;
				yield* writeHeader(output, {path: marker, type: 'file', mode: 0o600, uid, gid, mtime, size: 0});
			}

			yield* writeDirectory(context, relative, merging.trees);
		} else if (content > 0 && content <= output.room && output.workerKeepsUp) {
			output.readLater(full, content);
			yield* writePadding(output, content);
		} else if (content > 0) {
			const fd = openSync(full, 'r');
			try {
				let done = 0;
				while (done < content) {
					if (output.room === 0) {
						yield output.seal();
					}

					const read = readSync(
						fd,
						output.buffer,
						output.offset,
						Math.min(output.room, content - done),
						null,
					);
					if (read === 0) {
						throw new StoreError(`layer file ${full} shrank while it was exported; the store is damaged`);
					}

					output.offset += read;
					done += read;
				}
			} finally {
				closeSync(fd);
			}

			yield* writePadding(output, content);
		}
	}
}

/** The whole tar of the stack `trees` (top first), ending with its last, partly filled slot. */
function* writeTar(context: WalkContext, trees: readonly LayerTree[]): Generator<Buffer, void> {
	yield* writeDirectory(context, '', trees);
	yield* context.output.write(endOfArchive());
	yield context.output.seal();
}

/** Where a tar goes: a descriptor the worker writes, a stream this thread writes, or nowhere (hash only). */
type TarTarget = {fd: number} | {stream: Writable} | {hashOnly: true};

/** What writing a tar gave. */
type WrittenTar = {diffId: string; bytes: number; entries: number};

/** Write a copy of `chunk` to `stream`, waiting while it is full; fails when the stream fails or closes. */
async function writeToStream(stream: Writable, chunk: Buffer): Promise<void> {
	const fail = (error: unknown) =>
		new StoreError(
			`cannot write the tar: ${error instanceof Error ? error.message : 'the stream was closed'}`,
			{
				cause: error,
			},
		);
	if (stream.destroyed) {
		throw fail(stream.errored);
	}

	if (stream.write(Buffer.from(chunk))) {
		return;
	}

	await new Promise<void>((resolve, reject) => {
		const settle = (error?: unknown) => {
			stream.off('drain', onDrain);
			stream.off('error', onError);
			stream.off('close', onClose);
			if (error === undefined) {
				resolve();
			} else {
				reject(fail(error));
			}
		};

		const onDrain = () => {
			settle();
		};

		const onError = (error: Error) => {
			settle(error);
		};

		const onClose = () => {
			settle(stream.errored ?? new Error('the stream was closed'));
		};

		stream.on('drain', onDrain);
		stream.on('error', onError);
		stream.on('close', onClose);
	});
}

/**
Write the tar of `layers` (bottom first; more than one are merged) to `target`: the walk fills slots,
each full one goes to the worker and, for a stream, is copied into it here, waiting when it is full.
*/
async function writeLayersTar(
	store: Store,
	layers: readonly LayerRecord[],
	epoch: number | undefined,
	target: TarTarget,
	onProgress?: (done: number) => void,
): Promise<WrittenTar> {
	// The worker starts while getfattr reads the attributes.
	const output = new TarOutput('fd' in target ? target.fd : undefined, 'stream' in target);
	try {
		const topFirst = layers.toReversed();
		const attributes = await readAttributes(
			store.layersDir,
			topFirst.map((layer) => layer.id),
		);
		const trees = topFirst.map((layer) => ({
			id: layer.id,
			root: layerTreePath(store, layer.id),
			format: store.layerFormat,
			attributes: attributes.get(layer.id) ?? new Map<string, Map<string, Buffer>>(),
		}));
		const context: WalkContext = {
			output,
			epoch,
			euid: process.geteuid?.() ?? 0,
			egid: process.getegid?.() ?? 0,
			firstLinks: new Map(),
		};
		for (const chunk of writeTar(context, trees)) {
			if ('stream' in target && chunk.length > 0) {
				await writeToStream(target.stream, chunk);
			}

			onProgress?.(output.bytes);
		}

		return {diffId: `sha256:${output.finish()}`, bytes: output.bytes, entries: output.entries};
	} catch (error) {
		output.abandon();
		if (!(error instanceof ScratchError) && (error as NodeJS.ErrnoException).code !== undefined) {
			throw new StoreError(`cannot read the layers to export: ${(error as Error).message}`, {cause: error});
		}

		throw error;
	}
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
export async function layerDiffId(
	store: Store,
	layer: LayerRecord,
	epoch: number | undefined,
): Promise<string> {
	if (epoch === undefined && layer.diffId) {
		return layer.diffId;
	}

	const {diffId} = await writeLayersTar(store, [layer], epoch, {hashOnly: true});
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

/** About how many bytes the tar of `layers` has, from the sizes in their records: headers and contents. */
function estimateTarBytes(layers: readonly LayerRecord[]): number {
	let total = 0;
	for (const layer of layers) {
		total += (layer.size ?? 0) + blockSize * ((layer.files ?? 0) + (layer.directories ?? 0));
	}

	return total;
}

/** `scratch export NAME`: a layer (or its whole stack) as a deterministic OCI layer tar, to a file or a stream. */
export async function exportLayer(options: ExportOptions): Promise<LayerExport> {
	const targets = [options.file, options.stream, options.fd].filter((target) => target !== undefined);
	if (targets.length !== 1) {
		throw new UsageError('export needs exactly one of a file, a stream or a file descriptor to write to');
	}

	const epoch = options.sourceDateEpoch ?? epochFromEnvironment();
	const store = await openExistingStore(options.store, {readOnly: true});
	const {layer, name} = resolveLayer(store, options.reference);
	const lowers = layer.lowers.map((id) => requireLayer(store, id, `layer ${layer.id}`));
	const gzip = options.gzip ?? false;
	const flatten = options.flatten ?? false;
	const layers = flatten ? [...lowers, layer] : [layer];

	// With progress, the layers' sizes give its total: measured once per layer, then kept in their records.
	const total = options.onProgress
		? estimateTarBytes(await Promise.all(layers.map(async (each) => layerWithStats(store, each))))
		: undefined;
	const file = options.file === undefined ? undefined : path.resolve(options.file);
	// A file is written as a temp file renamed into place; but renamed over /dev/null, a fifo or some other
	// special file, it would replace it: those are written as they are.
	const special = file !== undefined && statSync(file, {throwIfNoEntry: false})?.isFile() === false;
	const temporary =
		file === undefined || special
			? undefined
			: path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomId(8)}.tmp`);
	const writePath = temporary ?? file;
	const cannotWrite = (error: unknown) =>
		new InvalidPathError(
			`cannot write ${options.file}: ${(error as Error).message}; give a file in an existing, writable directory with -o FILE`,
			{cause: error},
		);

	// Uncompressed, the tar goes to a descriptor (written by the worker) or to the caller's stream.
	// Compressed, it goes to zlib's stream, piped into the caller's or into a stream over the file or fd.
	const compressor = gzip ? createGzip({level: 6}) : undefined;
	let fileDescriptor: number | undefined;
	let ownStream: WriteStream | undefined;
	let target: TarTarget;
	if (compressor) {
		if (writePath !== undefined) {
			ownStream = createWriteStream(writePath, {flags: special ? 'w' : 'wx', mode: 0o644});
			try {
				await once(ownStream, 'open');
			} catch (error) {
				throw cannotWrite(error);
			}
		} else if (options.fd !== undefined) {
			ownStream = createWriteStream('', {fd: options.fd, autoClose: false});
		}

		const under = ownStream ?? (options.stream as Writable);
		// A failure under zlib (a closed pipe) fails zlib's stream. The export sees that as it writes to it
		// (it is destroyed) and as it waits for it to finish, so no 'error' event goes unheard.
		under.on('error', (error: Error) => compressor.destroy(error));
		compressor.on('error', () => undefined);
		compressor.pipe(under);
		target = {stream: compressor};
	} else if (writePath !== undefined) {
		try {
			fileDescriptor = openSync(writePath, special ? 'w' : 'wx', 0o644);
		} catch (error) {
			throw cannotWrite(error);
		}

		target = {fd: fileDescriptor};
	} else if (options.fd === undefined) {
		target = {stream: options.stream as Writable};
	} else {
		target = {fd: options.fd};
	}

	let written: WrittenTar;
	try {
		written = await writeLayersTar(
			store,
			layers,
			epoch,
			target,
			options.onProgress && ((done) => options.onProgress?.(done, total)),
		);
		if (compressor) {
			compressor.end();
			// pipe() ends the stream under zlib: wait for its last write, or for zlib's last output.
			try {
				await finished(ownStream ?? compressor);
			} catch (error) {
				throw new StoreError(`cannot write the tar: ${(error as Error).message}`, {cause: error});
			}
		}

		if (fileDescriptor !== undefined) {
			closeSync(fileDescriptor);
			fileDescriptor = undefined;
		}

		if (temporary !== undefined) {
			renameSync(temporary, file as string);
		}
	} catch (error) {
		compressor?.destroy();
		if (ownStream) {
			// Its writes in flight end before the file goes, or before the caller's descriptor is handed back.
			ownStream.destroy();
			await finished(ownStream).catch(() => undefined);
		}

		if (fileDescriptor !== undefined) {
			closeSync(fileDescriptor);
		}

		if (temporary !== undefined) {
			rmSync(temporary, {force: true});
		}

		throw error;
	}

	const {diffId} = written;
	let chainId = diffId;
	if (!flatten) {
		const lowerIds: string[] = [];
		for (const lower of lowers) {
			lowerIds.push(await layerDiffId(store, lower, epoch));
		}

		chainId = chainIdOf([...lowerIds, diffId]);
		if (epoch === undefined) {
			await addToLayerRecord(store, layer.id, {diffId, chainId});
		}
	}

	return {
		layer: layer.id,
		...(name ? {name} : {}),
		diffId,
		chainId,
		entries: written.entries,
		bytes: written.bytes,
		...(file === undefined ? {} : {file}),
		gzip,
		flattened: flatten,
		layers: layers.length,
	};
}
