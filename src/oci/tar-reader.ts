import {ArchiveError} from '../errors.js';

/*
A streaming tar reader: feed it the archive's bytes in chunks of any size, and it calls its handler for
each entry, then with the entry's content in pieces as they arrive, so no file is ever held in memory.
It reads ustar, pax (extended headers with `path`, `linkpath`, `size`, `uid`, `gid`, `mtime` and
`SCHILY.xattr.*` / `LIBARCHIVE.xattr.*` records, values kept as raw bytes), GNU tar's long names and
link targets, and v7 headers. Global pax headers are checked and then ignored, as Docker and containerd
do. Names and link targets are byte strings (each byte one latin1 character), so names that are not
UTF-8 go through unchanged. Anything malformed (a bad checksum, a bad number, a bad pax record, an
archive cut short) is an ArchiveError.
*/

const blockSize = 512;

/** The most bytes of pax records, or of a GNU long name, accepted for one entry. */
export const maxMetadataBytes = 1024 * 1024;

/** One entry of an archive, its pax records and GNU long names applied. */
export type TarReadEntry = {
	/** The name as it is in the archive (a byte string): not normalised, maybe with `./` or a trailing `/`. */
	path: string;
	type: 'file' | 'directory' | 'symlink' | 'hardlink' | 'character' | 'block' | 'fifo';
	/** Permission bits with setuid, setgid and sticky (the low 12 bits). */
	mode: number;
	uid: number;
	gid: number;
	/** Seconds since the epoch, maybe with a fraction (from pax). */
	mtime: number;
	/** Bytes of content that follow (regular files only; 0 for every other type). */
	size: number;
	/** Symlink target, or the earlier entry a hardlink repeats (a byte string); '' for other types. */
	linkname: string;
	devmajor: number;
	devminor: number;
	/** Extended attributes by name (a byte string), with their raw values. */
	xattrs: Map<string, Buffer>;
};

/** What a reader calls: `entry`, then for a file `content` with its bytes in order, then `entryEnd`. */
export type TarHandler = {
	entry(entry: TarReadEntry): void;
	content(chunk: Buffer): void;
	entryEnd(): void;
};

const entryTypes: Record<string, TarReadEntry['type']> = {
	'0': 'file',
	'\0': 'file',
	// Contiguous files: regular files for every reader but a few old systems.
	'7': 'file',
	'1': 'hardlink',
	'2': 'symlink',
	'3': 'character',
	'4': 'block',
	'5': 'directory',
	'6': 'fifo',
};

const metadataTypes = {x: 'pax', g: 'global', L: 'longname', K: 'longlink'} as const;

type MetadataKind = (typeof metadataTypes)[keyof typeof metadataTypes];

/** A byte string as readable text for messages: UTF-8 where it is, JSON-quoted. */
export function displayName(bytes: string): string {
	return JSON.stringify(Buffer.from(bytes, 'latin1').toString('utf8'));
}

/** A NUL-terminated header field as a byte string. */
function fieldString(block: Buffer, offset: number, width: number): string {
	const end = block.indexOf(0, offset);
	return block.toString('latin1', offset, end === -1 || end > offset + width ? offset + width : end);
}

/** Whether a whole block is zero bytes: the end-of-archive marker. */
function isZeroBlock(block: Buffer): boolean {
	for (let index = 0; index < blockSize; index++) {
		if (block[index] !== 0) {
			return false;
		}
	}

	return true;
}

/** The unsigned and signed sums of a header with its checksum field read as spaces. */
function headerSums(block: Buffer): [number, number] {
	let unsigned = 8 * 0x20;
	let signed = 8 * 0x20;
	for (let index = 0; index < blockSize; index++) {
		if (index >= 148 && index < 156) {
			continue;
		}

		const byte = block[index] as number;
		unsigned += byte;
		signed += byte >= 0x80 ? byte - 0x100 : byte;
	}

	return [unsigned, signed];
}

/** Where a header is, for messages: its offset and the name it holds (maybe garbage, if it is damaged). */
function headerPlace(offset: number, block: Buffer): string {
	const name = fieldString(block, 0, 100);
	return `the tar header at byte ${offset}${name ? ` (entry ${displayName(name)})` : ''}`;
}

/**
A numeric header field: octal digits (with leading spaces or zeros, ended by a space or NUL), or GNU's
base-256 form (first byte 0x80) for values too large for octal.
*/
function parseNumber(
	block: Buffer,
	offset: number,
	width: number,
	field: string,
	place: () => string,
): number {
	const first = block[offset] as number;
	if (first & 0x80) {
		if (first === 0xff) {
			throw new ArchiveError(`${place()} has a negative ${field}: the archive is damaged`);
		}

		let value = first & 0x7f;
		for (let index = offset + 1; index < offset + width; index++) {
			value = value * 256 + (block[index] as number);
		}

		if (!Number.isSafeInteger(value)) {
			throw new ArchiveError(`${place()} has a ${field} too large to handle: the archive is damaged`);
		}

		return value;
	}

	const text = block.toString('latin1', offset, offset + width);
	const match = /^[ \0]*([0-7]*)[ \0]*$/.exec(text);
	if (!match) {
		throw new ArchiveError(
			`${place()} has a ${field} field that is not an octal number (${JSON.stringify(text)}): the archive is damaged or not a tar`,
		);
	}

	return match[1] ? Number.parseInt(match[1], 8) : 0;
}

/** The records of a pax extended header, by key (a byte string; later records of a key win). */
export function parsePaxRecords(data: Buffer, place: string): Map<string, Buffer> {
	const records = new Map<string, Buffer>();
	let position = 0;
	const bad = (why: string) =>
		new ArchiveError(`${place} has a malformed pax record at byte ${position} of its records: ${why}`);
	while (position < data.length) {
		const space = data.indexOf(0x20, position);
		const lengthText = space === -1 ? '' : data.toString('latin1', position, space);
		if (!/^[1-9]\d{0,8}$/.test(lengthText)) {
			throw bad('its length is not a decimal number');
		}

		const length = Number(lengthText);
		const end = position + length;
		if (end > data.length) {
			throw bad(`its length ${length} runs past the end of the header`);
		}

		if (data[end - 1] !== 0x0a) {
			throw bad('it does not end with a newline');
		}

		const body = data.subarray(space + 1, end - 1);
		const equals = body.indexOf(0x3d);
		if (equals < 1) {
			throw bad('it has no KEY=VALUE');
		}

		records.set(body.toString('latin1', 0, equals), Buffer.from(body.subarray(equals + 1)));
		position = end;
	}

	return records;
}

/** A pax number: decimal digits (`uid`, `gid`, `size`). */
function paxInteger(value: Buffer, key: string, place: string): number {
	const text = value.toString('latin1');
	if (!/^\d{1,16}$/.test(text) || !Number.isSafeInteger(Number(text))) {
		throw new ArchiveError(`${place} has a pax ${key} that is not a whole number (${JSON.stringify(text)})`);
	}

	return Number(text);
}

/** A pax time: decimal seconds, maybe negative, maybe with a fraction. */
function paxTime(value: Buffer, key: string, place: string): number {
	const text = value.toString('latin1');
	if (!/^-?\d{1,16}(\.\d{1,9})?$/.test(text)) {
		throw new ArchiveError(
			`${place} has a pax ${key} that is not a time in seconds (${JSON.stringify(text)})`,
		);
	}

	return Number(text);
}

/** `%XX` escapes (libarchive's xattr names) decoded to bytes. */
function percentDecode(text: string, place: string): string {
	if (/%(?![\da-fA-F]{2})/.test(text)) {
		throw new ArchiveError(`${place} has a LIBARCHIVE.xattr record with a malformed name`);
	}

	return text.replaceAll(/%([\da-fA-F]{2})/g, (_match, hex: string) =>
		String.fromCharCode(Number.parseInt(hex, 16)),
	);
}

/** The extended attributes a pax header sets. */
function paxXattrs(records: ReadonlyMap<string, Buffer>, place: string): Map<string, Buffer> {
	const xattrs = new Map<string, Buffer>();
	// libarchive writes both forms; SCHILY's comes last so that it wins where both name one attribute.
	for (const [key, value] of records) {
		if (key.startsWith('LIBARCHIVE.xattr.')) {
			const name = percentDecode(key.slice('LIBARCHIVE.xattr.'.length), place);
			xattrs.set(name, Buffer.from(value.toString('latin1'), 'base64'));
		}
	}

	for (const [key, value] of records) {
		if (key.startsWith('SCHILY.xattr.')) {
			xattrs.set(key.slice('SCHILY.xattr.'.length), value);
		}
	}

	for (const name of xattrs.keys()) {
		if (name === '') {
			throw new ArchiveError(`${place} has an extended attribute with an empty name`);
		}
	}

	return xattrs;
}

/** Reads a tar archive pushed to it in chunks; see the top of this file. */
export class TarReader {
	/** Entries read so far (pax headers and GNU long names are part of the entry they describe). */
	entries = 0;

	private readonly handler: TarHandler;
	private state: 'header' | 'content' | 'metadata' | 'padding' | 'ended' = 'header';
	private readonly header = Buffer.alloc(blockSize);
	private headerFill = 0;
	/** Bytes of the archive read so far, and where the header being read starts. */
	private offset = 0;
	private headerStart = 0;
	/** Content (or metadata) bytes left in the current entry, then padding bytes left after it. */
	private remaining = 0;
	private paddingLeft = 0;
	private currentPath = '';
	private metadata: {kind: MetadataKind; parts: Buffer[]; place: string} | undefined;
	private pax: Map<string, Buffer> | undefined;
	/** Bytes of the metadata headers (pax, GNU long names) read since the last entry. */
	private metadataBytes = 0;
	private paxPlace = '';
	private longName: string | undefined;
	private longLink: string | undefined;

	constructor(handler: TarHandler) {
		this.handler = handler;
	}

	/** Whether the end-of-archive marker has been read (what follows it is not part of the archive). */
	get ended(): boolean {
		return this.state === 'ended';
	}

	/** Read the next bytes of the archive. */
	write(chunk: Buffer): void {
		let position = 0;
		while (position < chunk.length) {
			const available = chunk.length - position;
			switch (this.state) {
				case 'ended': {
					this.offset += available;
					return;
				}

				case 'header': {
					if (this.headerFill === 0) {
						this.headerStart = this.offset;
					}

					const take = Math.min(blockSize - this.headerFill, available);
					if (this.headerFill === 0 && take === blockSize) {
						this.readHeader(chunk.subarray(position, position + blockSize));
					} else {
						chunk.copy(this.header, this.headerFill, position, position + take);
						this.headerFill += take;
						if (this.headerFill === blockSize) {
							this.headerFill = 0;
							this.readHeader(this.header);
						}
					}

					this.offset += take;
					position += take;
					break;
				}

				case 'content':
				case 'metadata': {
					const take = Math.min(this.remaining, available);
					const piece = chunk.subarray(position, position + take);
					this.remaining -= take;
					this.offset += take;
					position += take;
					if (this.state === 'content') {
						this.handler.content(piece);
						if (this.remaining === 0) {
							this.handler.entryEnd();
							this.state = this.paddingLeft > 0 ? 'padding' : 'header';
						}
					} else {
						this.metadata?.parts.push(Buffer.from(piece));
						if (this.remaining === 0) {
							this.finishMetadata();
						}
					}

					break;
				}

				case 'padding': {
					const take = Math.min(this.paddingLeft, available);
					this.paddingLeft -= take;
					this.offset += take;
					position += take;
					if (this.paddingLeft === 0) {
						this.state = 'header';
					}

					break;
				}
			}
		}
	}

	/** The input has ended: fail unless the archive was complete. */
	end(): void {
		if (this.state === 'ended') {
			return;
		}

		if (this.state === 'content' || this.state === 'metadata' || this.state === 'padding') {
			throw new ArchiveError(
				`the archive is truncated: it ends inside entry ${displayName(this.currentPath)} (at byte ${this.offset})`,
			);
		}

		if (this.headerFill > 0) {
			throw new ArchiveError(
				`the archive is truncated: it ends inside a tar header (at byte ${this.offset})`,
			);
		}

		throw new ArchiveError(
			`the archive ends at byte ${this.offset} without its end-of-archive blocks: it is truncated or not a tar`,
		);
	}

	private readHeader(block: Buffer): void {
		const offset = this.headerStart;
		if (isZeroBlock(block)) {
			if (this.pax || this.longName !== undefined || this.longLink !== undefined) {
				throw new ArchiveError(
					`the archive ends (at byte ${offset}) right after a pax header or GNU long name, without the entry it describes`,
				);
			}

			this.state = 'ended';
			return;
		}

		const place = () => headerPlace(offset, block);
		const stored = parseNumber(block, 148, 8, 'checksum', place);
		const [unsigned, signed] = headerSums(block);
		if (stored !== unsigned && stored !== signed) {
			throw new ArchiveError(`${place()} has a bad checksum: the archive is damaged or not a tar`);
		}

		const typeFlag = String.fromCharCode(block[156] as number);
		const size = parseNumber(block, 124, 12, 'size', place);
		const metadataKind = metadataTypes[typeFlag as keyof typeof metadataTypes];
		if (metadataKind) {
			// Several pax headers in a row merge into one entry's records: their sum is what is held.
			this.metadataBytes += size;
			if (this.metadataBytes > maxMetadataBytes) {
				throw new ArchiveError(
					`${place()} is a ${metadataKind === 'pax' || metadataKind === 'global' ? 'pax header' : 'GNU long name'} that brings one entry's metadata to ${this.metadataBytes} bytes, more than the ${maxMetadataBytes} scratch reads`,
				);
			}

			this.metadata = {kind: metadataKind, parts: [], place: place()};
			this.currentPath = fieldString(block, 0, 100);
			this.startContent(size, 'metadata');
			return;
		}

		const type = entryTypes[typeFlag];
		if (!type) {
			throw new ArchiveError(
				`${place()} has entry type ${JSON.stringify(typeFlag)}, which scratch does not import (sparse files, volume labels and vendor types are refused)`,
			);
		}

		const ustar = block.toString('latin1', 257, 263) === 'ustar\0';
		let name = fieldString(block, 0, 100);
		const prefix = ustar ? fieldString(block, 345, 155) : '';
		if (prefix) {
			name = `${prefix}/${name}`;
		}

		const pax = this.pax ?? new Map<string, Buffer>();
		const paxPlace = this.paxPlace;
		const paxString = (key: string) => {
			const value = pax.get(key);
			return value === undefined || value.length === 0 ? undefined : value.toString('latin1');
		};

		const entryPath = paxString('path') ?? this.longName ?? name;
		const linkname = paxString('linkpath') ?? this.longLink ?? fieldString(block, 157, 100);
		const number = (key: 'uid' | 'gid', at: number) => {
			const value = pax.get(key);
			return value?.length ? paxInteger(value, key, paxPlace) : parseNumber(block, at, 8, key, place);
		};

		const paxSize = pax.get('size');
		const paxMtime = pax.get('mtime');
		const fileType = type === 'file' && entryPath.endsWith('/') ? 'directory' : type;
		const entry: TarReadEntry = {
			path: entryPath,
			type: fileType,
			mode: parseNumber(block, 100, 8, 'mode', place) & 0o7777,
			uid: number('uid', 108),
			gid: number('gid', 116),
			mtime: paxMtime?.length
				? paxTime(paxMtime, 'mtime', paxPlace)
				: parseNumber(block, 136, 12, 'mtime', place),
			size: 0,
			linkname: fileType === 'symlink' || fileType === 'hardlink' ? linkname : '',
			devmajor:
				fileType === 'character' || fileType === 'block' ? parseNumber(block, 329, 8, 'devmajor', place) : 0,
			devminor:
				fileType === 'character' || fileType === 'block' ? parseNumber(block, 337, 8, 'devminor', place) : 0,
			xattrs: paxXattrs(pax, paxPlace),
		};
		const contentSize = paxSize?.length ? paxInteger(paxSize, 'size', paxPlace) : size;
		this.pax = undefined;
		this.metadataBytes = 0;
		this.longName = undefined;
		this.longLink = undefined;
		this.entries++;
		this.currentPath = entryPath;
		// As in Go's archive/tar (and so Docker and containerd): only regular files carry content.
		if (fileType === 'file') {
			entry.size = contentSize;
			this.handler.entry(entry);
			if (contentSize === 0) {
				this.handler.entryEnd();
			} else {
				this.startContent(contentSize, 'content');
			}
		} else {
			this.handler.entry(entry);
			this.handler.entryEnd();
		}
	}

	private startContent(size: number, state: 'content' | 'metadata'): void {
		const rest = size % blockSize;
		this.remaining = size;
		this.paddingLeft = rest === 0 ? 0 : blockSize - rest;
		if (size > 0) {
			this.state = state;
		} else if (state === 'metadata') {
			this.finishMetadata();
		}
	}

	private finishMetadata(): void {
		const metadata = this.metadata as NonNullable<typeof this.metadata>;
		this.metadata = undefined;
		this.state = this.paddingLeft > 0 ? 'padding' : 'header';
		const data = Buffer.concat(metadata.parts);
		switch (metadata.kind) {
			case 'pax': {
				// Two pax headers in a row: the later records win.
				this.pax = new Map([...(this.pax ?? []), ...parsePaxRecords(data, metadata.place)]);
				this.paxPlace = metadata.place;
				break;
			}

			case 'global': {
				parsePaxRecords(data, metadata.place);
				break;
			}

			case 'longname':
			case 'longlink': {
				const end = data.indexOf(0);
				const value = data.toString('latin1', 0, end === -1 ? data.length : end);
				if (value === '') {
					throw new ArchiveError(`${metadata.place} is an empty GNU long name: the archive is damaged`);
				}

				if (metadata.kind === 'longname') {
					this.longName = value;
				} else {
					this.longLink = value;
				}

				break;
			}
		}
	}
}
