/*
A deterministic tar writer (POSIX pax format, OCI image-spec layer.md). Written here rather than taken
from npm: the tar libraries there either drop `SCHILY.xattr.*` records or decode pax values as UTF-8,
which corrupts binary attribute values. Every header field is a function of the entry alone (no user
or group names, no atime or ctime, fixed pax header names), so the same entries give the same bytes.
*/

const blockSize = 512;

/** One archive entry. Paths are relative, `/`-separated, without `./`; a directory's ends with `/`. */
export type TarEntry = {
	path: string;
	type: 'file' | 'directory' | 'symlink' | 'hardlink' | 'character' | 'block' | 'fifo';
	mode: number;
	uid: number;
	gid: number;
	/** Seconds since the epoch. */
	mtime: number;
	/** Bytes of content that follow (regular files only). */
	size: number;
	/** Symlink target, or the path of the earlier entry a hardlink repeats. */
	linkname?: string;
	devmajor?: number;
	devminor?: number;
	/** Extended attributes, written as `SCHILY.xattr.NAME` pax records with their raw bytes. */
	xattrs?: ReadonlyMap<string, Buffer>;
};

const typeFlags: Record<TarEntry['type'], string> = {
	file: '0',
	hardlink: '1',
	symlink: '2',
	character: '3',
	block: '4',
	directory: '5',
	fifo: '6',
};

/** The largest value an octal field of `width` bytes holds (width - 1 digits and a NUL). */
function octalLimit(width: number): number {
	return 8 ** (width - 1) - 1;
}

function writeOctal(header: Buffer, offset: number, width: number, value: number): void {
	header.write(`${value.toString(8).padStart(width - 1, '0')}\0`, offset, width, 'latin1');
}

function isPlainAscii(text: string): boolean {
	return /^[\u0020-\u007E]*$/.test(text);
}

/** Split a path into ustar's prefix (155 bytes) and name (100 bytes), or undefined when it cannot be. */
function splitUstarPath(entryPath: string): {prefix: string; name: string} | undefined {
	if (!isPlainAscii(entryPath)) {
		return undefined;
	}

	if (entryPath.length <= 100) {
		return {prefix: '', name: entryPath};
	}

	// A directory's trailing slash belongs to its name part.
	for (let index = entryPath.length - 1; index > 0; index--) {
		if (entryPath[index] === '/' && index !== entryPath.length - 1) {
			const prefix = entryPath.slice(0, index);
			const name = entryPath.slice(index + 1);
			if (prefix.length <= 155 && name.length <= 100) {
				return {prefix, name};
			}
		}
	}

	return undefined;
}

/** One pax record: `LENGTH KEY=VALUE\n`, where LENGTH counts the whole record, its own digits included. */
function paxRecord(key: string, value: Buffer): Buffer {
	const body = Buffer.concat([Buffer.from(` ${key}=`, 'utf8'), value, Buffer.from('\n')]);
	let length = body.length + 1;
	while (String(length).length + body.length !== length) {
		length = String(length).length + body.length;
	}

	return Buffer.concat([Buffer.from(String(length), 'latin1'), body]);
}

function header(fields: {
	name: string;
	prefix: string;
	mode: number;
	uid: number;
	gid: number;
	size: number;
	mtime: number;
	typeFlag: string;
	linkname: string;
	devmajor: number;
	devminor: number;
}): Buffer {
	const block = Buffer.alloc(blockSize);
	block.write(fields.name, 0, 100, 'latin1');
	writeOctal(block, 100, 8, fields.mode);
	writeOctal(block, 108, 8, fields.uid);
	writeOctal(block, 116, 8, fields.gid);
	writeOctal(block, 124, 12, fields.size);
	writeOctal(block, 136, 12, fields.mtime);
	block.write('        ', 148, 8, 'latin1');
	block.write(fields.typeFlag, 156, 1, 'latin1');
	block.write(fields.linkname, 157, 100, 'latin1');
	block.write('ustar\u000000', 257, 8, 'latin1');
	writeOctal(block, 329, 8, fields.devmajor);
	writeOctal(block, 337, 8, fields.devminor);
	block.write(fields.prefix, 345, 155, 'latin1');
	let checksum = 0;
	for (const byte of block) {
		checksum += byte;
	}

	block.write(`${checksum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
	return block;
}

/** Zero bytes that pad `size` bytes of content to a whole block. */
export function padding(size: number): Buffer {
	const rest = size % blockSize;
	return Buffer.alloc(rest === 0 ? 0 : blockSize - rest);
}

/** The end of an archive: two zero blocks. */
export function endOfArchive(): Buffer {
	return Buffer.alloc(2 * blockSize);
}

/**
The header blocks of one entry: a pax extended header first when anything does not fit ustar (a long or
non-ASCII path or link, large numbers, extended attributes), then the ustar header. Its content (for a
file, `size` bytes) and padding() follow.
*/
export function entryHeader(entry: TarEntry): Buffer {
	const records: Buffer[] = [];
	const split = splitUstarPath(entry.path);
	if (!split) {
		records.push(paxRecord('path', Buffer.from(entry.path, 'utf8')));
	}

	const linkname = entry.linkname ?? '';
	const linkFits = isPlainAscii(linkname) && linkname.length <= 100;
	if (!linkFits) {
		records.push(paxRecord('linkpath', Buffer.from(linkname, 'utf8')));
	}

	const numbers = {uid: entry.uid, gid: entry.gid, size: entry.size, mtime: entry.mtime};
	const widths = {uid: 8, gid: 8, size: 12, mtime: 12};
	for (const key of ['gid', 'mtime', 'size', 'uid'] as const) {
		if (numbers[key] > octalLimit(widths[key])) {
			records.push(paxRecord(key, Buffer.from(String(numbers[key]), 'latin1')));
		}
	}

	for (const [name, value] of [...(entry.xattrs ?? new Map<string, Buffer>())].sort(([a], [b]) =>
		a < b ? -1 : a > b ? 1 : 0,
	)) {
		records.push(paxRecord(`SCHILY.xattr.${name}`, value));
	}

	const fitted = (key: keyof typeof numbers) => (numbers[key] > octalLimit(widths[key]) ? 0 : numbers[key]);
	const ustar = header({
		name: split ? split.name : fallbackName(entry.path),
		prefix: split ? split.prefix : '',
		mode: entry.mode & 0o7777,
		uid: fitted('uid'),
		gid: fitted('gid'),
		size: fitted('size'),
		mtime: fitted('mtime'),
		typeFlag: typeFlags[entry.type],
		linkname: linkFits ? linkname : fallbackName(linkname),
		devmajor: entry.devmajor ?? 0,
		devminor: entry.devminor ?? 0,
	});
	if (records.length === 0) {
		return ustar;
	}

	const data = Buffer.concat(records);
	const paxHeader = header({
		name: fallbackName(`PaxHeaders/${entry.path.replace(/\/$/, '').split('/').at(-1) ?? ''}`),
		prefix: '',
		mode: 0o644,
		uid: 0,
		gid: 0,
		size: data.length,
		mtime: fitted('mtime'),
		typeFlag: 'x',
		linkname: '',
		devmajor: 0,
		devminor: 0,
	});
	return Buffer.concat([paxHeader, data, padding(data.length), ustar]);
}

/** A ustar-safe stand-in for a name that only the pax header holds in full: ASCII, at most 100 bytes. */
function fallbackName(name: string): string {
	return name.replaceAll(/[^\u0020-\u007E]/g, '_').slice(0, 100);
}
