import type {ExecutionContext} from 'ava';
import type {Options, ResultPromise} from 'execa';
import {type Sandbox, scratch} from './scratch.js';

/**
`scratch ws SUBCOMMAND WS --store STORE ARGS...` as the sandbox's user. For `init`, `--src` is the
sandbox's source unless ARGS give one; ARGS may end with `--` and a command.
*/
export function ws(
	sandbox: Sandbox,
	subcommand: string,
	workspace: string,
	args: string[] = [],
	options: Options & {cwd?: string} = {},
): ResultPromise<Options & {reject: false}> {
	const source = subcommand === 'init' && !args.includes('--src') ? ['--src', sandbox.src] : [];
	return scratch(
		sandbox,
		['ws', subcommand, workspace, '--store', sandbox.store, ...source, ...args],
		options,
	);
}

/** `scratch ws run WS -- sh -c SCRIPT`, which must exit 0; returns its stdout. */
export async function wsSh(
	t: ExecutionContext,
	sandbox: Sandbox,
	workspace: string,
	script: string,
): Promise<string> {
	const result = await ws(sandbox, 'run', workspace, ['--', 'sh', '-c', script]);
	t.is(result.exitCode, 0, `ws run ${script}: ${String(result.stderr)}`);
	return String(result.stdout);
}

/** `scratch ws SUBCOMMAND WS ARGS... --json`, which must exit 0; returns the parsed output. */
export async function wsJson<T>(
	t: ExecutionContext,
	sandbox: Sandbox,
	subcommand: string,
	workspace: string,
	args: string[] = [],
): Promise<T> {
	const result = await ws(sandbox, subcommand, workspace, [...args, '--json']);
	t.is(result.exitCode, 0, `ws ${subcommand} ${workspace} ${args.join(' ')}: ${String(result.stderr)}`);
	return JSON.parse(String(result.stdout)) as T;
}

/**
What a workspace's next run sees: every path under the view's root with its type and content, as one
sorted listing (`find` inside a ws run, so it reads the real merged view).
*/
export async function viewOf(t: ExecutionContext, sandbox: Sandbox, workspace: string): Promise<string[]> {
	const listing = await wsSh(
		t,
		sandbox,
		workspace,
		'find . -mindepth 1 \\( -type f -printf "%P f " -exec cat {} \\; \\) -o \\( -type d -printf "%P/\\n" \\) -o -printf "%P %y\\n"',
	);
	return listing
		.split('\n')
		.filter((line) => line !== '')
		.sort();
}
