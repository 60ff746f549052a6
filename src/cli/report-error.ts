import {ScratchError, UsageError} from '../errors.js';
import {printable} from '../store/names.js';

/**
Print an error as one line on stderr: ours as they are, anything else as the bug it is. Messages quote
what users typed (names, paths, option values), so characters that would split the line or drive the
terminal are escaped here, whatever raised the error.
*/
export function reportError(error: unknown, {verbose = false}: {verbose?: boolean} = {}): void {
	if (error instanceof ScratchError) {
		process.stderr.write(`scratch: ${printable(error.message)}\n`);
	} else {
		const message = error instanceof Error ? error.message : String(error);
		process.stderr.write(
			`scratch: internal error: ${printable(message.split('\n')[0] ?? '')} (a bug: please report it; --verbose prints the stack)\n`,
		);
	}

	if (verbose && error instanceof Error && error.stack) {
		process.stderr.write(`${error.stack}\n`);
	}
}

/** Exit status of a failed command other than run: 2 for usage errors, 1 for everything else. */
export function exitCodeFor(error: unknown): number {
	return error instanceof UsageError ? 2 : 1;
}
