import {formatBytes} from './render-store.js';

/*
A one-line progress bar on stderr for commands that move many bytes (export, import, push, pull). It is
drawn only when stderr is a terminal, at most ten times a second, and erased when the work ends, so
logs and pipes never see it.
*/

/** A progress line: feed it the bytes done so far; `finish` erases it. */
export type Progress = {
	update(done: number, total?: number): void;
	/** Start a new phase with its own label (a layer of a push, say). */
	relabel(label: string): void;
	finish(): void;
};

const redrawMilliseconds = 100;
const barWidth = 24;

/** A progress line labelled `label`, or undefined when stderr is not a terminal. */
export function createProgress(
	label: string,
	stream: NodeJS.WriteStream = process.stderr,
): Progress | undefined {
	if (!stream.isTTY) {
		return undefined;
	}

	const started = Date.now();
	let current = label;
	let drawnAt = 0;
	let drawn = false;
	const draw = (done: number, total: number | undefined) => {
		const seconds = Math.max((Date.now() - started) / 1000, 0.001);
		const rate = `${formatBytes(Math.round(done / seconds))}/s`;
		let line: string;
		if (total !== undefined && total > 0) {
			const fraction = Math.min(done / total, 1);
			const filled = Math.round(fraction * barWidth);
			line = `${current} [${'#'.repeat(filled)}${'.'.repeat(barWidth - filled)}] ${Math.floor(fraction * 100)}% ${formatBytes(done)} of ${formatBytes(total)}, ${rate}`;
		} else {
			line = `${current} ${formatBytes(done)}, ${rate}`;
		}

		const width = stream.columns ?? 80;
		stream.write(`\r${line.slice(0, width - 1)}\u001B[K`);
		drawn = true;
	};

	return {
		update(done, total) {
			const now = Date.now();
			if (now - drawnAt >= redrawMilliseconds) {
				drawnAt = now;
				draw(done, total);
			}
		},
		relabel(next) {
			current = next;
			drawnAt = 0;
		},
		finish() {
			if (drawn) {
				stream.write('\r\u001B[K');
				drawn = false;
			}
		},
	};
}

/**
Progress for work in several labelled parts (the layers of a push or pull): a callback for the library's
`onProgress(label, done, total)` and a `finish`, both no-ops when stderr is not a terminal.
*/
export function labelledProgress(): {
	report: (label: string, done: number, total: number | undefined) => void;
	finish: () => void;
} {
	let progress: Progress | undefined;
	let current: string | undefined;
	return {
		report(label, done, total) {
			if (current === undefined) {
				progress = createProgress(label);
			} else if (label !== current) {
				progress?.relabel(label);
			}

			current = label;
			progress?.update(done, total);
		},
		finish() {
			progress?.finish();
		},
	};
}
