import {closeSync, openSync, readSync} from 'node:fs';

// 32 symbols (digits and lowercase letters without i, l, o, u): 5 unbiased bits per byte, never a
// leading '-', nothing to quote. nanoid would do the same but imports node:crypto, which costs ~3.5 ms
// of start-up on every run; the kernel's random source is one read away.
const alphabet = '0123456789abcdefghjkmnpqrstvwxyz';

/** A random id of `length` symbols (12 by default: 60 bits) from /dev/urandom. */
export function randomId(length = 12): string {
	const bytes = Buffer.alloc(length);
	const fd = openSync('/dev/urandom', 'r');
	try {
		readSync(fd, bytes, 0, length, null);
	} finally {
		closeSync(fd);
	}

	let id = '';
	for (const byte of bytes) {
		id += alphabet[byte & 31];
	}

	return id;
}
