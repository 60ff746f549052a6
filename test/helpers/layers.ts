import type {ExecutionContext} from 'ava';
import {type Sandbox, scratchRun} from './scratch.js';

/**
`scratch run [--base B]... --promote NAME -- sh -c SCRIPT` as the sandbox's user, which must succeed;
returns the new layer's id, read from the line scratch prints on stderr.
*/
export async function promoteLayer(
	t: ExecutionContext,
	sandbox: Sandbox,
	name: string,
	script: string,
	bases: string[] = [],
): Promise<string> {
	const result = await scratchRun(sandbox, [
		...bases.flatMap((base) => ['--base', base]),
		'--promote',
		name,
		'--',
		'sh',
		'-c',
		script,
	]);
	t.is(result.exitCode, 0, String(result.stderr));
	const id = new RegExp(`promoted the run's writes as ${name} \\(layer ([a-z\\d]{6})\\)`).exec(
		String(result.stderr),
	)?.[1];
	t.truthy(id, String(result.stderr));
	return id ?? '';
}
