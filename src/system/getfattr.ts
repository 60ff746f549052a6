import {spawn} from 'node:child_process';
import {StoreError} from '../errors.js';

/*
Node cannot read extended attributes, so scratch asks getfattr(1), once per tree. Its output names each
file on a `# file: PATH` line, quoted: `\NNN` (octal) for special bytes and `\\` for a backslash.
*/

/** Undo getfattr's quoting of names: `\NNN` (octal) for special bytes, `\\` for a backslash (bytes, as latin1). */
export function unquoteGetfattr(text: string): string {
	return text.replaceAll(/\\(\\|[0-7]{3})/g, (_match, code: string) =>
		code === '\\' ? '\\' : String.fromCharCode(Number.parseInt(code, 8)),
	);
}

/** A quoted getfattr name as a Node (UTF-8) string. */
export function unquoteGetfattrPath(quoted: string): string {
	return Buffer.from(unquoteGetfattr(quoted), 'latin1').toString('utf8');
}

/**
Run `getfattr ARGS -- ROOTS...` in the C locale (so its quoting is byte-wise) and return its output, read
as latin1. getfattr exits 1 when it could not read something; with `partial`, what it printed is taken
as it is, else that is an error. `what` names the trees in the error.
*/
export async function runGetfattr(
	getfattr: string,
	args: readonly string[],
	roots: readonly string[],
	{partial, what}: {partial: boolean; what: string},
): Promise<string> {
	return new Promise((resolve, reject) => {
		const child = spawn(getfattr, [...args, '--', ...roots], {
			stdio: ['ignore', 'pipe', 'pipe'],
			env: {...process.env, LC_ALL: 'C'},
		});
		const stdout: Buffer[] = [];
		let stderr = '';
		child.stdout.on('data', (chunk: Buffer) => {
			stdout.push(chunk);
		});
		child.stderr.on('data', (chunk: Buffer) => {
			stderr += chunk.toString();
		});
		child.on('error', (error) => {
			reject(new StoreError(`cannot run ${getfattr}: ${error.message}`, {cause: error}));
		});
		child.on('close', (code) => {
			if (code === 0 || (partial && code === 1)) {
				resolve(Buffer.concat(stdout).toString('latin1'));
			} else {
				const reason = stderr.trim().split('\n')[0] || `exit status ${String(code)}`;
				reject(new StoreError(`cannot read the attributes of ${what}: ${reason}`));
			}
		});
	});
}
