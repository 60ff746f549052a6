import {closeSync, constants, openSync, readFileSync, readSync} from 'node:fs';

/** Seconds since boot, the clock of the kernel's log; undefined where /proc/uptime cannot be read. */
export function uptimeSeconds(): number | undefined {
	try {
		const seconds = Number.parseFloat(readFileSync('/proc/uptime', 'utf8'));
		return Number.isFinite(seconds) ? seconds : undefined;
	} catch {
		return undefined;
	}
}

/**
The kernel's error messages (log level err or worse) logged since `since` (seconds after boot) whose
text matches `subject`, oldest first. Reading the log needs CAP_SYSLOG where kernel.dmesg_restrict is
set (root only, as here): anyone else gets an empty list, and callers fall back to what mount said.
*/
export function readKernelErrors(since: number, subject: RegExp): string[] {
	let fd: number;
	try {
		fd = openSync('/dev/kmsg', constants.O_RDONLY | constants.O_NONBLOCK);
	} catch {
		return [];
	}

	const messages: string[] = [];
	const buffer = Buffer.alloc(8192);
	try {
		// One read returns one record: `LEVEL,SEQUENCE,MICROSECONDS,FLAGS;TEXT\n` (continuation lines follow).
		for (let records = 0; records < 100_000; records++) {
			let length: number;
			try {
				length = readSync(fd, buffer, 0, buffer.length, null);
			} catch (error) {
				const {code} = error as NodeJS.ErrnoException;
				if (code === 'EPIPE') {
					// Records were overwritten while we read: go on with the next one.
					continue;
				}

				break;
			}

			const record = buffer.toString('utf8', 0, length);
			const separator = record.indexOf(';');
			const [level, , microseconds] = record.slice(0, separator).split(',');
			const text = (record.slice(separator + 1).split('\n')[0] ?? '').trim();
			if ((Number(level) & 7) <= 3 && Number(microseconds) / 1e6 >= since && subject.test(text)) {
				messages.push(text);
			}
		}
	} finally {
		closeSync(fd);
	}

	return messages;
}
