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

const limit8 = octalLimit(8);
const limit12 = octalLimit(12);
/** octalLimit by width, for the widths of a header's fields. */
const octalLimits = Array.from({length: 13}, (_, width) => (width === 0 ? 0 : octalLimit(width)));

/**
`value` as width - 1 octal digits and a NUL; a value too large for them is cut to its leading digits.
Returns the sum of the bytes written, for the header's checksum.
*/
function writeOctal(target: Buffer, offset: number, width: number, value: number): number {
	if (value > (octalLimits[width] as number)) {
		target.write(`${value.toString(8)}\0`, offset, width, 'latin1');
		let sum = 0;
		for (let index = offset; index < offset + width; index++) {
			sum += target[index] as number;
		}

		return sum;
	}

	let rest = value;
	let sum = 0;
	for (let index = width - 2; index >= 0; index--) {
		// Small integers (every field but a large size or a far mtime) take the faster bit operations.
		const digit = rest <= 0x7f_ff_ff_ff ? rest & 7 : rest % 8;
		target[offset + index] = 0x30 + digit;
		sum += 0x30 + digit;
		rest = rest <= 0x7f_ff_ff_ff ? rest >>> 3 : (rest - digit) / 8;
	}

	target[offset + width - 1] = 0;
	return sum;
}

/**
An ASCII text into a zero-filled field of `width` bytes, cut to fit (what Buffer.write does for latin1).
Returns the sum of the bytes written, for the header's checksum.
*/
function writeText(target: Buffer, offset: number, width: number, text: string): number {
	const length = Math.min(text.length, width);
	let sum = 0;
	for (let index = 0; index < length; index++) {
		const byte = text.charCodeAt(index) & 0xff;
		target[offset + index] = byte;
		sum += byte;
	}

	return sum;
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

type HeaderFields = {
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
};

/** One ustar header block at `offset` of `target`; its text fields are ASCII. */
function writeHeader(target: Buffer, offset: number, fields: HeaderFields): void {
	target.fill(0, offset, offset + blockSize);
	// The checksum is the sum of the block's bytes with its own field as eight spaces.
	let checksum = 8 * 0x20;
	checksum += writeText(target, offset, 100, fields.name);
	checksum += writeOctal(target, offset + 100, 8, fields.mode);
	checksum += writeOctal(target, offset + 108, 8, fields.uid);
	checksum += writeOctal(target, offset + 116, 8, fields.gid);
	checksum += writeOctal(target, offset + 124, 12, fields.size);
	checksum += writeOctal(target, offset + 136, 12, fields.mtime);
	checksum += writeText(target, offset + 156, 1, fields.typeFlag);
	checksum += writeText(target, offset + 157, 100, fields.linkname);
	checksum += writeText(target, offset + 257, 8, 'ustar\u000000');
	checksum += writeOctal(target, offset + 329, 8, fields.devmajor);
	checksum += writeOctal(target, offset + 337, 8, fields.devminor);
	checksum += writeText(target, offset + 345, 155, fields.prefix);
	// Six octal digits, a NUL and a space (a block's sum is at most 512 * 255, six digits).
	writeOctal(target, offset + 148, 7, checksum);
	target[offset + 155] = 0x20;
}

function header(fields: HeaderFields): Buffer {
	const block = Buffer.alloc(blockSize);
	writeHeader(block, 0, fields);
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

/** The size of a header that fits ustar alone: one block. */
export const plainHeaderSize = blockSize;

/**
Write the header of an entry that needs no pax records into `target` at `offset` (plainHeaderSize
bytes, the same as entryHeader gives), and return true; return false, writing nothing, for an entry
that needs them (take entryHeader then). For the many plain entries of a tree, without allocating.
*/
export function writePlainHeader(entry: TarEntry, target: Buffer, offset: number): boolean {
	if (entry.xattrs !== undefined && entry.xattrs.size > 0) {
		return false;
	}

	if (entry.uid > limit8 || entry.gid > limit8 || entry.size > limit12 || entry.mtime > limit12) {
		return false;
	}

	const linkname = entry.linkname ?? '';
	if (linkname.length > 100 || !isPlainAscii(linkname)) {
		return false;
	}

	const split = splitUstarPath(entry.path);
	if (!split) {
		return false;
	}

	writeHeader(target, offset, {
		name: split.name,
		prefix: split.prefix,
		mode: entry.mode & 0o7777,
		uid: entry.uid,
		gid: entry.gid,
		size: entry.size,
		mtime: entry.mtime,
		typeFlag: typeFlags[entry.type],
		linkname,
		devmajor: entry.devmajor ?? 0,
		devminor: entry.devminor ?? 0,
	});
	return true;
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
