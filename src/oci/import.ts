import {spawn} from 'node:child_process';
import {createHash} from 'node:crypto';
import {
	chmodSync,
	closeSync,
	constants,
	createReadStream,
	fchmodSync,
	fchownSync,
	fstatSync,
	futimesSync,
	lchownSync,
	linkSync,
	lstatSync,
	lutimesSync,
	mkdirSync,
	openSync,
	type ReadStream,
	rmSync,
	symlinkSync,
	writeFileSync,
	writeSync,
} from 'node:fs';
import path from 'node:path';
import type {Readable} from 'node:stream';
import {pipeline} from 'node:stream/promises';
import {createGunzip} from 'node:zlib';
import {
	ArchiveError,
	describeSystemError,
	InvalidPathError,
	NotFoundError,
	ScratchError,
	StoreError,
	UnsupportedEnvironmentError,
	UsageError,
} from '../errors.js';
import {
	isOverlayMetadataXattr,
	type LayerFormat,
	opaqueMarker,
	opaqueXattr,
	whiteoutName,
	whiteoutPrefix,
} from '../store/layer-format.js';
import {
	checkStackDepth,
	commitLayer,
	findLayerByChainId,
	type LayerRecord,
	requireLayer,
	stackOf,
} from '../store/layers.js';
import {leaseName} from '../store/lease-names.js';
import {checkName} from '../store/names.js';
import {writeRef} from '../store/refs.js';
import {resolveLayer} from '../store/resolve.js';
import type {StoreOptions} from '../store/snapshots.js';
import {openExistingStore, openStore, type Store} from '../store/store.js';
import {discardWorkDirectory} from '../store/trash.js';
import {holdStoreUse} from '../store/use-lock.js';
import {findExecutable} from '../system/executables.js';
import {currentProcessIdentity} from '../system/process-identity.js';
import {randomId} from '../system/random-id.js';
import {chainIdOf, layerDiffId} from './export.js';
import {displayName, type TarHandler, type TarReadEntry, TarReader} from './tar-reader.js';

/*
`scratch import FILE --name NAME`: an OCI image layer tar (or a gzip of one) as a layer, the reverse of
export. The archive is read as a stream and each file written as its bytes arrive, into a tree under a
leased directory in the store's `tmp/` (so a killed import leaves only what `scratch gc` removes); the
DiffID is the sha256 of the uncompressed bytes, hashed on the way. The OCI format is translated to the
store's layer format (layer-format.ts). In `overlay-userxattr-1`, `.wh.NAME` becomes a whiteout (a
character device 0/0) named NAME and `.wh..wh..opq` marks its directory opaque (`user.overlay.opaque=y`),
wherever in the directory's entries it comes. In `whiteout-files-1` (a store on overlayfs, which makes no
0/0 devices) both stay what they are in the tar, empty files, written as they come: a whiteout with the
entry's owner and mtime, mode 0600, as export writes it back.

Node cannot make device nodes or fifos, and cannot set extended attributes, so those wait for the end:
whiteout devices with the same owner and mtime share one inode (as overlayfs's own do), made by one
`mknod` per thousand of them and hardlinked into place; fifos come from `mkfifo` (through xargs); every
attribute from one `setfattr --restore` (run as the store's owner turned root in a user namespace when
not root, as a user may not set attributes on a read-only file of its own). Directory modes and all
directory mtimes come last, deepest first, so read-only directories can be filled first. Times before
1970 become 1970.

An archive is refused, with nothing left behind, when it would write outside the layer (absolute or `..`
paths, paths through a symlink or a file, hardlinks to anything but an earlier regular file of the
archive, symlinks pointing out of it unless allowed), would forge overlayfs's or fuse-overlayfs's own
metadata (`user.overlay.*`, `trusted.overlay.*` or `user.fuseoverlayfs.*` attributes), holds device
nodes, setuid or setgid files or file capabilities (unless allowed; directories keep their setgid bit,
which only passes their group on), names a path twice, or is damaged. Owners are kept as root; in a
rootless store everything belongs to its owner, who is uid 0 in its runs, entries owned by anyone else
are counted, and only `user.*` attributes can be set.
*/

/** Options of `importLayer`. */
export type ImportOptions = StoreOptions & {
	/** The archive: a tar or a gzip of one. */
	file?: string;
	/** Or a stream of it (stdin for the CLI). */
	stream?: Readable;
	/** The name the layer gets; an existing name is pointed at it (as squash --as does). */
	name: string;
	/** A snapshot name or layer id the layer stacks on (with its lowers); none: right on the source tree. */
	base?: string;
	/** Keep setuid and setgid bits and file capabilities (refused otherwise). */
	keepSetid?: boolean;
	/** Accept symlinks whose target is absolute or climbs out of the layer with `..` (refused otherwise). */
	allowOutsideSymlinks?: boolean;
	/** Bytes of the input read so far (compressed bytes for a gzip), and the file's size when known. */
	onProgress?: (done: number, total: number | undefined) => void;
};

/** Options of `importTarIntoStore`. */
export type TarImportOptions = {
	/** The stack the layer goes on, bottom first (complete layers of the store). */
	lowers: string[];
	keepSetid?: boolean;
	allowOutsideSymlinks?: boolean;
	/** Refuse the archive unless its DiffID is this. */
	expectedDiffId?: string;
	/** More of the new layer's record (`pulled`, say); the rest is filled in here. */
	record?: Partial<Omit<LayerRecord, 'id' | 'lowers' | 'parent'>>;
	/** Bytes of the input read so far (compressed bytes for a gzip), and `total`. */
	onProgress?: (done: number, total: number | undefined) => void;
	total?: number;
};

/** What `importTarIntoStore` made. */
export type TarImport = {
	layer: LayerRecord;
	/** `sha256:` of the uncompressed tar. */
	diffId: string;
	/** `sha256:` ChainID of the layer's stack, bottom first. */
	chainId: string;
	entries: number;
	/** Bytes of the uncompressed tar. */
	bytes: number;
	/** True when the store had a layer with this content on the same stack already, which is used instead. */
	reused: boolean;
	/** Entries owned by someone other than uid and gid 0, made the store owner's in a rootless store. */
	ownersMapped: number;
};

/** What an import made: that, with the layer's id and the name now pointing at it. */
export type LayerImport = Omit<TarImport, 'layer'> & {layer: string; name: string};

const whiteoutLinksPerInode = 1000;
/** The mode of a whiteout or opaque marker file (`whiteout-files-1`); export writes whiteouts with it. */
const markerFileMode = 0o600;

/** What the archive made at a path so far; `implicit` is a directory made for an entry below it. */
type Kind = 'directory' | 'implicit' | 'file' | 'symlink' | 'whiteout' | 'fifo';

const kindNames: Record<Kind, string> = {
	directory: 'a directory',
	implicit: 'a directory',
	file: 'a regular file',
	symlink: 'a symlink',
	whiteout: 'deleted by a .wh. entry',
	fifo: 'a fifo',
};

function refuse(entryPath: string, why: string): ArchiveError {
	return new ArchiveError(`archive entry ${displayName(entryPath)} ${why}`);
}

/** A byte string quoted for setfattr's dump format: `\NNN` (octal) for every byte that is special. */
function quoteForSetfattr(bytes: string): string {
	return bytes.replaceAll(
		/[^\u0021-\u007E]|[\\="]/g,
		(character) => `\\${character.charCodeAt(0).toString(8).padStart(3, '0')}`,
	);
}

/** A path (a byte string) split into its components, without empty and `.` ones. */
function pathComponents(bytes: string): string[] {
	return bytes.split('/').filter((part) => part !== '' && part !== '.');
}

/** How many symlinks one check follows before calling the chain a loop (as the kernel's 40). */
const maxSymlinkHops = 40;

/**
Whether a symlink at `linkPath` pointing at `target` stays in the layer when every symlink of the
archive on its way is followed too (`a/up -> ..` makes `x -> a/up/..` climb out, though neither does on
its own). The importer never follows them, but whatever reads the tree later may. Components the
archive does not make count as directories; a loop counts as leaving.
*/
function symlinkResolvesInside(
	linkPath: string,
	target: string,
	symlinks: ReadonlyMap<string, string>,
): boolean {
	let hops = 0;
	const resolve = (base: readonly string[], link: string): string[] | undefined => {
		if (link.startsWith('/')) {
			return undefined;
		}

		const stack = [...base];
		for (const part of pathComponents(link)) {
			if (part === '..') {
				if (stack.length === 0) {
					return undefined;
				}

				stack.pop();
				continue;
			}

			stack.push(part);
			const next = symlinks.get(stack.join('/'));
			if (next !== undefined) {
				hops++;
				if (hops > maxSymlinkHops) {
					return undefined;
				}

				stack.pop();
				const resolved = resolve(stack, next);
				if (!resolved) {
					return undefined;
				}

				stack.splice(0, stack.length, ...resolved);
			}
		}

		return stack;
	};
	return resolve(pathComponents(linkPath).slice(0, -1), target) !== undefined;
}

/** Node replaces a negative time by the current one; the epoch is the nearest time it keeps. */
function fileTime(seconds: number): number {
	return Math.max(0, seconds);
}

type Tools = Record<'sh' | 'xargs' | 'mknod' | 'mkfifo' | 'setfattr' | 'unshare', string>;

function findTools(): Tools {
	const owners: Record<keyof Tools, string> = {
		sh: 'dash',
		xargs: 'findutils',
		mknod: 'coreutils',
		mkfifo: 'coreutils',
		setfattr: 'attr',
		unshare: 'util-linux',
	};
	const tools = {} as Tools;
	for (const [name, owner] of Object.entries(owners) as Array<[keyof Tools, string]>) {
		try {
			tools[name] = findExecutable(name);
		} catch (error) {
			throw new UnsupportedEnvironmentError(
				`scratch import needs the program '${name}' and cannot find it; install the ${owner} package`,
				{cause: error},
			);
		}
	}

	return tools;
}

/** Run a program to its end; a failure is a StoreError with its first line of stderr. */
async function runTool(command: string[], {cwd, failure}: {cwd: string; failure: string}): Promise<void> {
	await new Promise<void>((resolve, reject) => {
		const child = spawn(command[0] as string, command.slice(1), {
			cwd,
			stdio: ['ignore', 'ignore', 'pipe'],
			env: {...process.env, LC_ALL: 'C'},
		});
		let stderr = '';
		child.stderr.on('data', (chunk: Buffer) => {
			stderr += chunk.toString();
		});
		child.on('error', (error) => {
			reject(new StoreError(`${failure}: ${describeSystemError(error)}`, {cause: error}));
		});
		child.on('close', (code, signal) => {
			if (code === 0) {
				resolve();
				return;
			}

			const reason = stderr.trim().split('\n')[0] || (signal ? `killed by ${signal}` : `exit status ${code}`);
			reject(new StoreError(`${failure}: ${reason}`));
		});
	});
}

/** A byte string quoted for sh. */
function shellQuote(bytes: string): string {
	return `'${bytes.replaceAll("'", "'\\''")}'`;
}

type Counts = {files: number; directories: number; deletions: number; bytes: number};

type Whiteout = {path: string; uid: number; gid: number; mtime: number};

/** Writes an archive's entries as an overlay upper tree; see the top of this file. */
class LayerExtractor implements TarHandler {
	readonly counts: Counts = {files: 0, directories: 0, deletions: 0, bytes: 0};
	ownersMapped = 0;

	private readonly tree: string;
	private readonly format: LayerFormat;
	private readonly treePrefix: Buffer;
	private readonly workDirectory: string;
	private readonly asRoot = process.geteuid?.() === 0;
	private readonly keepSetid: boolean;
	private readonly allowOutsideSymlinks: boolean;
	private readonly kinds = new Map<string, Kind>([['', 'directory']]);
	private readonly opaque = new Set<string>();
	/** Every symlink made, by path: its target (byte strings). */
	private readonly symlinks = new Map<string, string>();
	private readonly implicit: string[] = [];
	private readonly directories: Array<{path: string; mode: number; mtime: number}> = [];
	private readonly whiteouts: Whiteout[] = [];
	private readonly fifos: Array<{path: string; mode: number; uid: number; gid: number; mtime: number}> = [];
	private readonly xattrDump: string;
	private xattrFd: number | undefined;
	private file: {fd: number; entry: TarReadEntry; path: string} | undefined;

	constructor(
		tree: string,
		workDirectory: string,
		{
			format,
			keepSetid,
			allowOutsideSymlinks,
		}: {format: LayerFormat; keepSetid: boolean; allowOutsideSymlinks: boolean},
	) {
		this.tree = tree;
		this.format = format;
		this.treePrefix = Buffer.from(`${tree}/`, 'utf8');
		this.workDirectory = workDirectory;
		this.keepSetid = keepSetid;
		this.allowOutsideSymlinks = allowOutsideSymlinks;
		this.xattrDump = path.join(workDirectory, 'xattrs');
		this.xattrFd = openSync(this.xattrDump, 'w', 0o600);
	}

	entry(entry: TarReadEntry): void {
		try {
			this.place(entry);
		} catch (error) {
			throw this.asScratchError(error, entry.path);
		}
	}

	content(chunk: Buffer): void {
		const file = this.file;
		if (!file) {
			return;
		}

		try {
			let written = 0;
			while (written < chunk.length) {
				written += writeSync(file.fd, chunk, written, chunk.length - written);
			}
		} catch (error) {
			throw this.asScratchError(error, file.entry.path);
		}
	}

	entryEnd(): void {
		const file = this.file;
		if (!file) {
			return;
		}

		this.file = undefined;
		const {fd, entry} = file;
		try {
			// chown before chmod: chown clears the setuid and setgid bits.
			if (this.asRoot) {
				fchownSync(fd, entry.uid, entry.gid);
			}

			fchmodSync(fd, entry.mode);
			futimesSync(fd, fileTime(entry.mtime), fileTime(entry.mtime));
		} catch (error) {
			throw this.asScratchError(error, entry.path);
		} finally {
			closeSync(fd);
		}

		this.dumpXattrs(file.path, entry.xattrs);
	}

	/** Close what is open after a failure; the tree is discarded. */
	abandon(): void {
		for (const fd of [this.file?.fd, this.xattrFd]) {
			if (fd !== undefined) {
				try {
					closeSync(fd);
				} catch {}
			}
		}

		this.file = undefined;
		this.xattrFd = undefined;
	}

	/** Everything that waits for the end: special files, attributes, directory modes and times. */
	async finish(): Promise<void> {
		if (!this.allowOutsideSymlinks) {
			for (const [relative, target] of this.symlinks) {
				if (!symlinkResolvesInside(relative, target, this.symlinks)) {
					throw refuse(
						relative,
						`is a symlink pointing outside the layer through the archive's other symlinks (to ${displayName(target)}); pass --allow-outside-symlinks to accept such links`,
					);
				}
			}
		}

		try {
			closeSync(this.xattrFd as number);
			this.xattrFd = undefined;
			const tools = findTools();
			await this.makeSpecialFiles(tools);
			await this.applyXattrs(tools);
			for (const relative of this.implicit) {
				if (this.kinds.get(relative) === 'implicit') {
					chmodSync(this.fsPath(relative), 0o755);
				}
			}

			const deepestFirst = this.directories
				.map((directory) => ({...directory, depth: directory.path.split('/').length}))
				.sort((a, b) => b.depth - a.depth);
			for (const {path: relative, mode, mtime} of deepestFirst) {
				const target = this.fsPath(relative);
				chmodSync(target, mode);
				lutimesSync(target, fileTime(mtime), fileTime(mtime));
			}
		} catch (error) {
			if (error instanceof ScratchError) {
				throw error;
			}

			throw new StoreError(
				`cannot finish the imported layer's tree: ${describeSystemError(error)}; nothing was imported`,
				{cause: error},
			);
		}
	}

	private fsPath(relative: string): Buffer {
		return Buffer.concat([this.treePrefix, Buffer.from(relative, 'latin1')]);
	}

	private asScratchError(error: unknown, entryPath: string): ScratchError {
		if (error instanceof ScratchError) {
			return error;
		}

		return new StoreError(
			`cannot write archive entry ${displayName(entryPath)} into the store: ${describeSystemError(error)}; nothing was imported`,
			{cause: error},
		);
	}

	private noteOwner(entry: TarReadEntry): void {
		if (!this.asRoot && (entry.uid !== 0 || entry.gid !== 0)) {
			this.ownersMapped++;
		}
	}

	private place(entry: TarReadEntry): void {
		if (entry.path.includes('\0') || entry.linkname.includes('\0')) {
			throw refuse(entry.path, 'has a NUL byte in its name or link target');
		}

		if (entry.path.startsWith('/')) {
			throw refuse(entry.path, 'has an absolute path; a layer archive holds paths relative to its root');
		}

		const parts = pathComponents(entry.path);
		if (parts.includes('..')) {
			throw refuse(entry.path, "has a '..' component, which would climb out of the layer");
		}

		for (const name of entry.xattrs.keys()) {
			if (isOverlayMetadataXattr(name)) {
				throw refuse(
					entry.path,
					`carries the extended attribute ${displayName(name)}, which ${name.startsWith('user.fuseoverlayfs.') ? 'fuse-overlayfs' : 'overlayfs'} reads as its own metadata (opaque marks, redirects); archives may not set it`,
				);
			}
		}

		const name = parts.pop();
		if (name === undefined) {
			if (entry.type === 'directory') {
				// The layer's root: its tree's own directory, never an entry of it.
				return;
			}

			throw refuse(entry.path, "names the layer's root but is not a directory");
		}

		const whiteoutDirectory = parts.find((part) => part.startsWith(whiteoutPrefix));
		if (whiteoutDirectory !== undefined) {
			throw refuse(
				entry.path,
				`goes through ${displayName(whiteoutDirectory)}, a whiteout's name (.wh.*), which cannot be a directory`,
			);
		}

		const parent = parts.join('/');
		this.enterDirectory(parent, parts, entry.path);
		if (name === opaqueMarker) {
			this.markOpaque(entry, parent);
		} else if (name.startsWith(`${whiteoutPrefix}${whiteoutPrefix}`)) {
			throw refuse(entry.path, 'is AUFS metadata (.wh..wh.*), which OCI layers do not use');
		} else if (name.startsWith(whiteoutPrefix)) {
			this.addWhiteout(entry, parent, name.slice(whiteoutPrefix.length));
		} else {
			this.create(entry, parent ? `${parent}/${name}` : name);
		}
	}

	/** Make sure `parent` is a directory made by this archive, making the missing ones on the way. */
	private enterDirectory(parent: string, parts: readonly string[], entryPath: string): void {
		const kind = this.kinds.get(parent);
		if (kind === 'directory' || kind === 'implicit') {
			return;
		}

		let prefix = '';
		for (const part of parts) {
			prefix = prefix ? `${prefix}/${part}` : part;
			const existing = this.kinds.get(prefix);
			if (existing === undefined) {
				this.makeDirectory(prefix);
				this.kinds.set(prefix, 'implicit');
				this.implicit.push(prefix);
				this.counts.directories++;
			} else if (existing !== 'directory' && existing !== 'implicit') {
				throw refuse(
					entryPath,
					`goes through ${displayName(prefix)}, which is ${kindNames[existing]} in this archive; nothing is written through a link or into a non-directory`,
				);
			}
		}
	}

	private makeDirectory(relative: string): void {
		const target = this.fsPath(relative);
		mkdirSync(target, {mode: 0o700});
		// Writable whatever the umask; its own mode comes at the end.
		chmodSync(target, 0o700);
	}

	private markOpaque(entry: TarReadEntry, parent: string): void {
		if (parent === '') {
			throw refuse(entry.path, "marks the layer's root opaque, which an overlay layer cannot express");
		}

		if (entry.type === 'directory') {
			throw refuse(entry.path, 'is a directory; an opaque marker is an empty file');
		}

		if (this.opaque.has(parent)) {
			throw refuse(entry.path, 'appears twice in the archive');
		}

		this.opaque.add(parent);
		if (this.format === 'whiteout-files-1') {
			this.makeMarkerFile(`${parent}/${opaqueMarker}`, entry);
		}
	}

	private addWhiteout(entry: TarReadEntry, parent: string, name: string): void {
		if (name === '' || name === '.' || name === '..') {
			throw refuse(entry.path, 'is a whiteout that names nothing to delete');
		}

		if (entry.type === 'directory') {
			throw refuse(entry.path, 'is a directory; a whiteout (.wh.NAME) is an empty file');
		}

		const relative = parent ? `${parent}/${name}` : name;
		const existing = this.kinds.get(relative);
		if (existing === 'whiteout') {
			throw refuse(entry.path, 'appears twice in the archive');
		}

		if (existing !== undefined) {
			throw refuse(
				entry.path,
				`deletes ${displayName(relative)}, which this archive also makes; an archive names each path once`,
			);
		}

		this.kinds.set(relative, 'whiteout');
		if (this.format === 'whiteout-files-1') {
			const file = whiteoutName(this.format, name);
			this.makeMarkerFile(parent ? `${parent}/${file}` : file, entry);
		} else {
			this.whiteouts.push({path: relative, uid: entry.uid, gid: entry.gid, mtime: entry.mtime});
		}

		this.counts.deletions++;
		this.noteOwner(entry);
	}

	/** An empty file standing for a whiteout or an opaque mark (`whiteout-files-1`), with the entry's owner and mtime. */
	private makeMarkerFile(relative: string, entry: TarReadEntry): void {
		const fd = openSync(
			this.fsPath(relative),
			constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
			markerFileMode,
		);
		try {
			if (this.asRoot) {
				fchownSync(fd, entry.uid, entry.gid);
			}

			// Whatever the umask.
			fchmodSync(fd, markerFileMode);
			futimesSync(fd, fileTime(entry.mtime), fileTime(entry.mtime));
		} finally {
			closeSync(fd);
		}
	}

	private checkXattrs(entry: TarReadEntry): void {
		for (const name of entry.xattrs.keys()) {
			// setfattr would cut a name at a NUL (security.capability\0x is security.capability).
			if (name === '' || [...name].some((character) => character < ' ' || character === '\u007F')) {
				throw refuse(
					entry.path,
					`carries an extended attribute whose name ${JSON.stringify(name)} is empty or has control characters; no file system keeps such a name`,
				);
			}

			if (name === 'security.capability' && !this.keepSetid) {
				throw refuse(
					entry.path,
					'carries file capabilities (security.capability), which grant privileges as setuid does; pass --keep-setid to keep them',
				);
			}

			if (!(this.asRoot || name.startsWith('user.'))) {
				throw refuse(
					entry.path,
					`carries the extended attribute ${displayName(name)}, which only root can set; import it as root, into root's store`,
				);
			}

			if (name.startsWith('user.') && entry.type !== 'file' && entry.type !== 'directory') {
				throw refuse(
					entry.path,
					`is a ${entry.type} with the extended attribute ${displayName(name)}; user.* attributes exist only on regular files and directories`,
				);
			}
		}
	}

	private create(entry: TarReadEntry, relative: string): void {
		const existing = this.kinds.get(relative);
		if (existing === 'whiteout') {
			const slash = relative.lastIndexOf('/');
			throw refuse(
				entry.path,
				`is also deleted by ${displayName(`${relative.slice(0, slash + 1)}${whiteoutPrefix}${relative.slice(slash + 1)}`)} in the same archive; an archive names each path once`,
			);
		}

		if (existing !== undefined && !(existing === 'implicit' && entry.type === 'directory')) {
			throw refuse(
				entry.path,
				`names a path an earlier entry made (${kindNames[existing]}); an archive names each path once`,
			);
		}

		if (entry.type === 'character' || entry.type === 'block') {
			throw refuse(
				entry.path,
				`is a ${entry.type} device; a layer may not hold device nodes (OCI layers mark deletions with .wh. files)`,
			);
		}

		if (entry.type === 'file' && entry.mode & 0o6000 && !this.keepSetid) {
			throw refuse(
				entry.path,
				`has the ${entry.mode & 0o4000 ? 'setuid' : 'setgid'} bit (mode ${entry.mode.toString(8)}); pass --keep-setid to keep setuid and setgid bits`,
			);
		}

		if (entry.type !== 'hardlink') {
			this.checkXattrs(entry);
			this.noteOwner(entry);
		}

		const target = this.fsPath(relative);
		switch (entry.type) {
			case 'directory': {
				if (existing === undefined) {
					this.makeDirectory(relative);
					this.counts.directories++;
				}

				if (this.asRoot) {
					lchownSync(target, entry.uid, entry.gid);
				}

				this.kinds.set(relative, 'directory');
				this.directories.push({path: relative, mode: entry.mode, mtime: entry.mtime});
				this.dumpXattrs(relative, entry.xattrs);
				break;
			}

			case 'file': {
				const fd = openSync(
					target,
					constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
					0o600,
				);
				this.kinds.set(relative, 'file');
				this.file = {fd, entry, path: relative};
				this.counts.files++;
				this.counts.bytes += entry.size;
				break;
			}

			case 'hardlink': {
				this.link(entry, relative, target);
				break;
			}

			case 'symlink': {
				if (entry.linkname === '') {
					throw refuse(entry.path, 'is a symlink with an empty target');
				}

				if (!(this.allowOutsideSymlinks || symlinkResolvesInside(relative, entry.linkname, this.symlinks))) {
					throw refuse(
						entry.path,
						`is a symlink pointing outside the layer (to ${displayName(entry.linkname)}); pass --allow-outside-symlinks to accept such links`,
					);
				}

				symlinkSync(Buffer.from(entry.linkname, 'latin1'), target);
				this.symlinks.set(relative, entry.linkname);
				if (this.asRoot) {
					lchownSync(target, entry.uid, entry.gid);
				}

				lutimesSync(target, fileTime(entry.mtime), fileTime(entry.mtime));
				this.kinds.set(relative, 'symlink');
				this.counts.files++;
				this.dumpXattrs(relative, entry.xattrs);
				break;
			}

			case 'fifo': {
				this.kinds.set(relative, 'fifo');
				this.fifos.push({
					path: relative,
					mode: entry.mode,
					uid: entry.uid,
					gid: entry.gid,
					mtime: entry.mtime,
				});
				this.counts.files++;
				this.dumpXattrs(relative, entry.xattrs);
				break;
			}
		}
	}

	private link(entry: TarReadEntry, relative: string, target: string | Buffer): void {
		const why = `is a hardlink to ${displayName(entry.linkname)}, which is not an earlier regular file of this archive; a hardlink may only repeat one`;
		if (entry.linkname.startsWith('/')) {
			throw refuse(entry.path, why);
		}

		const parts = pathComponents(entry.linkname);
		if (parts.includes('..')) {
			throw refuse(entry.path, why);
		}

		const linked = parts.join('/');
		if (this.kinds.get(linked) !== 'file') {
			throw refuse(entry.path, why);
		}

		linkSync(this.fsPath(linked), target);
		this.kinds.set(relative, 'file');
		this.counts.files++;
		this.counts.bytes += lstatSync(target).size;
	}

	private dumpXattrs(relative: string, xattrs: ReadonlyMap<string, Buffer>): void {
		if (xattrs.size === 0) {
			return;
		}

		let block = `# file: ${quoteForSetfattr(`./${relative}`)}\n`;
		for (const [name, value] of xattrs) {
			block += `${quoteForSetfattr(name)}=0x${value.toString('hex')}\n`;
		}

		writeSync(this.xattrFd as number, Buffer.from(`${block}\n`, 'latin1'));
	}

	/** Whiteouts (one inode per owner, mtime and thousand links) and fifos: one spawn for all. */
	private async makeSpecialFiles(tools: Tools): Promise<void> {
		if (this.whiteouts.length === 0 && this.fifos.length === 0) {
			return;
		}

		const groups = new Map<string, Whiteout[]>();
		for (const whiteout of this.whiteouts) {
			const key = `${whiteout.uid}:${whiteout.gid}:${whiteout.mtime}`;
			const group = groups.get(key) ?? [];
			group.push(whiteout);
			groups.set(key, group);
		}

		const templatesDirectory = path.join(this.workDirectory, 'whiteouts');
		mkdirSync(templatesDirectory, {mode: 0o700});
		const templates: Array<{template: string; whiteouts: Whiteout[]}> = [];
		for (const group of groups.values()) {
			for (let start = 0; start < group.length; start += whiteoutLinksPerInode) {
				templates.push({
					template: path.join(templatesDirectory, String(templates.length)),
					whiteouts: group.slice(start, start + whiteoutLinksPerInode),
				});
			}
		}

		const templateList = path.join(this.workDirectory, 'whiteouts.list');
		const fifoList = path.join(this.workDirectory, 'fifos.list');
		writeFileSync(templateList, templates.map(({template}) => `${template}\0`).join(''));
		writeFileSync(
			fifoList,
			Buffer.concat(this.fifos.map((fifo) => Buffer.concat([this.fsPath(fifo.path), Buffer.from([0])]))),
		);
		const script = [
			'set -e',
			`${shellQuote(tools.xargs)} -0 -r -I{} ${shellQuote(tools.mknod)} -m 0 {} c 0 0 < ${shellQuote(templateList)}`,
			`${shellQuote(tools.xargs)} -0 -r ${shellQuote(tools.mkfifo)} -m 0600 -- < ${shellQuote(fifoList)}`,
		].join('\n');
		await runTool([tools.sh, '-c', script], {
			cwd: this.workDirectory,
			failure: 'cannot make the whiteouts and fifos of the imported layer',
		});

		for (const {template, whiteouts} of templates) {
			const [first] = whiteouts as [Whiteout];
			if (this.asRoot) {
				lchownSync(template, first.uid, first.gid);
			}

			lutimesSync(template, fileTime(first.mtime), fileTime(first.mtime));
			for (const whiteout of whiteouts) {
				linkSync(template, this.fsPath(whiteout.path));
			}

			rmSync(template);
		}

		for (const fifo of this.fifos) {
			const target = this.fsPath(fifo.path);
			if (this.asRoot) {
				lchownSync(target, fifo.uid, fifo.gid);
			}

			chmodSync(target, fifo.mode);
			lutimesSync(target, fileTime(fifo.mtime), fileTime(fifo.mtime));
		}
	}

	/** Every extended attribute, and the opaque marks (as attributes in `overlay-userxattr-1`), with one setfattr. */
	private async applyXattrs(tools: Tools): Promise<void> {
		if (this.opaque.size > 0 && this.format === 'overlay-userxattr-1') {
			const marks = [...this.opaque]
				.map((relative) => `# file: ${quoteForSetfattr(`./${relative}`)}\n${opaqueXattr}=0x79\n\n`)
				.join('');
			writeFileSync(this.xattrDump, Buffer.from(marks, 'latin1'), {flag: 'a'});
		}

		if (lstatSync(this.xattrDump).size === 0) {
			return;
		}

		// -h: a symlink's attributes go on the link, never on what it points at.
		const setfattr = [tools.setfattr, '-h', `--restore=${this.xattrDump}`];
		await runTool(this.asRoot ? setfattr : [tools.unshare, '--user', '--map-root-user', '--', ...setfattr], {
			cwd: this.tree,
			failure: 'cannot set the extended attributes of the imported layer',
		});
	}
}

/** The chunks of a stream as Buffers. */
function asBuffer(chunk: unknown): Buffer {
	return Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
}

/**
Read a whole archive (a tar, or a gzip of one: magic bytes 1f 8b) into `reader`, hashing the
uncompressed bytes: all of them, to the end of the input, trailing padding included.
*/
async function readArchive(
	input: Readable,
	reader: TarReader,
	{onProgress, total}: {onProgress?: (done: number, total: number | undefined) => void; total?: number},
): Promise<{diffId: string; bytes: number}> {
	const hash = createHash('sha256');
	let bytes = 0;
	let read = 0;
	const iterator = input[Symbol.asyncIterator]() as AsyncIterator<unknown>;
	let inputEnded = false;
	const next = async (): Promise<Buffer | undefined> => {
		const result = await iterator.next();
		if (result.done) {
			inputEnded = true;
			return undefined;
		}

		const chunk = asBuffer(result.value);
		read += chunk.length;
		onProgress?.(read, total);
		return chunk;
	};

	const consume = (chunk: Buffer) => {
		hash.update(chunk);
		bytes += chunk.length;
		reader.write(chunk);
	};

	try {
		const head: Buffer[] = [];
		let headBytes = 0;
		while (headBytes < 2 && !inputEnded) {
			const chunk = await next();
			if (chunk) {
				head.push(chunk);
				headBytes += chunk.length;
			}
		}

		const first = Buffer.concat(head);
		const chunks = async function* () {
			if (first.length > 0) {
				yield first;
			}

			if (inputEnded) {
				return;
			}

			for (let chunk = await next(); chunk; chunk = await next()) {
				yield chunk;
			}
		};

		if (first[0] === 0x1f && first[1] === 0x8b) {
			try {
				await pipeline(chunks(), createGunzip(), async (source: AsyncIterable<Buffer>) => {
					for await (const chunk of source) {
						consume(chunk);
					}
				});
			} catch (error) {
				if (String((error as NodeJS.ErrnoException).code).startsWith('Z_')) {
					throw new ArchiveError(`the gzip stream is damaged: ${(error as Error).message}`, {cause: error});
				}

				throw error;
			}
		} else {
			for await (const chunk of chunks()) {
				consume(chunk);
			}
		}
	} finally {
		if (!inputEnded) {
			// Stop reading a stream given up on (a Readable's iterator destroys it).
			await iterator.return?.();
		}
	}

	reader.end();
	return {diffId: `sha256:${hash.digest('hex')}`, bytes};
}

/**
Import a layer tar (or a gzip of one) into a store as a new layer on `lowers`, or find the layer the
store has with the same content on the same stack (same ChainID and lowers) and use that. The caller
holds the store (use-lock.ts) and must point a name at the layer (or record it) before letting go. The
new layer is named by nobody. On any failure nothing is left: no layer, no record, no work directory.
*/
export async function importTarIntoStore(
	store: Store,
	input: Readable,
	options: TarImportOptions,
): Promise<TarImport> {
	const lowers = options.lowers.map((id) => requireLayer(store, id, 'the stack of an import'));
	checkStackDepth(lowers.length + 1, 'the imported layer on its base');
	const workDirectory = path.join(store.tmpDir, leaseName('import', currentProcessIdentity(), randomId(6)));
	const tree = path.join(workDirectory, 'tree');
	let extractor: LayerExtractor | undefined;
	try {
		try {
			mkdirSync(workDirectory, {mode: 0o700});
			mkdirSync(tree, {mode: 0o755});
		} catch (error) {
			throw new StoreError(
				`cannot prepare an import in ${store.tmpDir}: ${describeSystemError(error)}; use a store you own, with room to spare`,
				{cause: error},
			);
		}

		extractor = new LayerExtractor(tree, workDirectory, {
			format: store.layerFormat,
			keepSetid: options.keepSetid ?? false,
			allowOutsideSymlinks: options.allowOutsideSymlinks ?? false,
		});
		const reader = new TarReader(extractor);
		const {diffId, bytes} = await readArchive(input, reader, {
			...(options.onProgress ? {onProgress: options.onProgress} : {}),
			...(options.total === undefined ? {} : {total: options.total}),
		});
		await extractor.finish();
		if (options.expectedDiffId !== undefined && diffId !== options.expectedDiffId) {
			throw new ArchiveError(`the archive's DiffID is ${diffId}, not ${options.expectedDiffId} as expected`);
		}

		const lowerDiffIds: string[] = [];
		for (const lower of lowers) {
			lowerDiffIds.push(await layerDiffId(store, lower, undefined));
		}

		const chainId = chainIdOf([...lowerDiffIds, diffId]);
		const summary = {diffId, chainId, entries: reader.entries, bytes, ownersMapped: extractor.ownersMapped};
		const existing = findLayerByChainId(store, chainId, options.lowers);
		if (existing) {
			await discardWorkDirectory(store, workDirectory);
			return {...summary, layer: existing, reused: true};
		}

		const {counts} = extractor;
		const layer = await commitLayer(store, tree, {
			parent: options.lowers.at(-1) ?? null,
			lowers: [...options.lowers],
			created: new Date().toISOString(),
			origin: 'import',
			files: counts.files + counts.deletions,
			directories: counts.directories,
			deletions: counts.deletions,
			size: counts.bytes,
			...options.record,
			diffId,
			chainId,
		});
		try {
			// Only the lists are left: the tree is the layer now.
			rmSync(workDirectory, {recursive: true, force: true});
		} catch {
			// Its lease dies with this process: scratch gc frees it.
		}

		return {...summary, layer, reused: false};
	} catch (error) {
		extractor?.abandon();
		await discardWorkDirectory(store, workDirectory);
		throw error;
	}
}

/** Open the archive to import, with a clear error when it cannot be read. */
function openArchive(file: string): {stream: ReadStream; size: number} {
	let fd: number;
	try {
		fd = openSync(file, 'r');
	} catch (error) {
		if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
			throw new NotFoundError(
				`cannot import ${file}: no such file; give the path of a layer tar (or .tar.gz)`,
			);
		}

		throw new InvalidPathError(
			`cannot import ${file}: ${describeSystemError(error)}; give a file you can read`,
			{
				cause: error,
			},
		);
	}

	const stats = fstatSync(fd);
	if (stats.isDirectory()) {
		closeSync(fd);
		throw new InvalidPathError(
			`cannot import ${file}: it is a directory; give a layer tar (make one with scratch export or tar -cf)`,
		);
	}

	return {stream: createReadStream('', {fd, highWaterMark: 1024 * 1024}), size: stats.size};
}

/**
`scratch import FILE --name NAME [--base NAME]`: an OCI layer tar (or a gzip of one) as a layer named
NAME, stacked on `base` (with its lowers) or right on the source tree. When the store has a layer with
the same content on the same stack, that one is named instead (`reused`). NAME may exist already: it
is then pointed at the imported layer, as `squash --as` does. The name and base are checked before the
archive is read; a refused archive leaves the store as it was.
*/
export async function importLayer(options: ImportOptions): Promise<LayerImport> {
	checkName(options.name, '--name');
	if ((options.file === undefined) === (options.stream === undefined)) {
		throw new UsageError('import needs exactly one of a file or a stream to read');
	}

	const opened = options.file === undefined ? undefined : openArchive(options.file);
	const input = (opened?.stream ?? options.stream) as Readable;
	try {
		const store =
			options.base === undefined ? await openStore(options.store) : await openExistingStore(options.store);
		const hold = await holdStoreUse(store);
		try {
			const lowers =
				options.base === undefined ? [] : stackOf(resolveLayer(store, options.base, '--base').layer);
			let imported: TarImport;
			try {
				imported = await importTarIntoStore(store, input, {
					lowers,
					keepSetid: options.keepSetid ?? false,
					allowOutsideSymlinks: options.allowOutsideSymlinks ?? false,
					...(options.onProgress ? {onProgress: options.onProgress} : {}),
					...(opened ? {total: opened.size} : {}),
				});
			} catch (error) {
				if (error instanceof ArchiveError) {
					throw new ArchiveError(
						`cannot import ${options.file ?? (input === process.stdin ? 'stdin' : 'the stream')}: ${error.message}; nothing was imported`,
						{cause: error},
					);
				}

				throw error;
			}

			await writeRef(store, options.name, imported.layer.id);
			return {
				layer: imported.layer.id,
				name: options.name,
				diffId: imported.diffId,
				chainId: imported.chainId,
				entries: imported.entries,
				bytes: imported.bytes,
				reused: imported.reused,
				ownersMapped: imported.ownersMapped,
			};
		} finally {
			hold.release();
		}
	} finally {
		opened?.stream.destroy();
	}
}
