import os from 'node:os';
import yargs, {type Argv} from 'yargs';
import {runDoctor} from '../doctor/doctor.js';
import {UsageError} from '../errors.js';
import {diffLayer} from '../layer/diff.js';
import {squashLayer} from '../layer/squash.js';
import {exportLayer} from '../oci/export.js';
import {importLayer, type LayerImport} from '../oci/import.js';
import {type Pull, pullLayer} from '../oci/pull.js';
import {type Push, pushLayer} from '../oci/push.js';
import {collectGarbage} from '../store/gc.js';
import {inspectLayer, listSnapshots, promoteRun, removeSnapshots, tagSnapshot} from '../store/snapshots.js';
import {defaultStorePath} from '../store/store.js';
import {
	cleanWorkspace,
	listWorkspaceSnapshots,
	listWorkspaces,
	removeWorkspaceSnapshot,
	rollbackWorkspace,
	scrubWorkspace,
	snapshotWorkspace,
} from '../workspace/workspaces.js';
import {createProgress, labelledProgress} from './progress.js';
import {renderDiff} from './render-diff.js';
import {renderDoctorReport} from './render-doctor.js';
import {
	formatBytes,
	formatCommand,
	plural,
	renderGcReport,
	renderLayerDetails,
	renderSnapshots,
} from './render-store.js';
import {
	renderWorkspaceRemoval,
	renderWorkspaceReset,
	renderWorkspaceScrub,
	renderWorkspaceSnapshot,
	renderWorkspaceSnapshots,
	renderWorkspaces,
} from './render-workspace.js';
import {exitCodeFor, reportError} from './report-error.js';
import {type RunOptionSpec, runOptionSpecs} from './run-arguments.js';
import {runCli} from './run-cli.js';
import {wsInitCli, wsInitOptionSpecs, wsRunCli, wsRunOptionSpecs} from './ws-cli.js';

declare const SCRATCH_VERSION: string;

function storeOption<T>(argv: Argv<T>) {
	return argv
		.option('store', {
			type: 'string',
			description: 'Store directory (default: $SCRATCH_STORE or the per-user default)',
		})
		.option('json', {type: 'boolean', default: false, description: 'Machine-readable output on stdout'})
		.option('verbose', {type: 'boolean', default: false, description: 'Print stack traces of errors'});
}

/** `--insecure`, for push and pull. */
function insecureOption<T>(argv: Argv<T>) {
	return argv.option('insecure', {
		type: 'boolean',
		default: false,
		description: 'Plain HTTP, for a registry on this machine',
	});
}

/** What import and pull accept from an archive that they refuse by default. */
function archiveOptions<T>(argv: Argv<T>) {
	return argv
		.option('keep-setid', {
			type: 'boolean',
			default: false,
			description: 'Keep setuid and setgid bits and file capabilities (refused otherwise)',
		})
		.option('allow-outside-symlinks', {
			type: 'boolean',
			default: false,
			description: 'Accept symlinks that point outside the layer (absolute, or climbing out with ..)',
		});
}

function storeOf(options: {store?: string | undefined}): {store: string} {
	return {store: options.store ?? defaultStorePath()};
}

/** Print a result: JSON for machines with --json, else the rendering for people. */
function print<T>(json: boolean, value: T, render: (value: T) => string): void {
	process.stdout.write(json ? `${JSON.stringify(value, undefined, '\t')}\n` : render(value));
}

const workspaceCommandNames = [
	'init',
	'run',
	'snapshot',
	'rollback',
	'clean',
	'snapshots',
	'rm',
	'scrub',
	'ls',
];

function addOptionSpecs<T>(command: Argv<T>, specs: readonly RunOptionSpec[]): Argv<T> {
	for (const spec of specs) {
		command.option(spec.name, {
			type: spec.type,
			...(spec.array ? {array: true} : {}),
			...(spec.choices ? {choices: spec.choices} : {}),
			description: spec.description,
		});
	}

	return command;
}

/** `scratch ws ...`. `ws init` and `ws run` only show their help here: they run on the fast path (ws-cli.ts). */
function workspaceCommands<T>(ws: Argv<T>, argv: readonly string[]): Argv<T> {
	const afterSubcommand = () => argv.slice(argv.indexOf('ws') + 2);
	const help = (subcommand: string) => async () => main(['ws', subcommand, '--help']);
	const workspace = {type: 'string', demandOption: true, description: 'The workspace'} as const;
	const snapshot = {
		type: 'string',
		demandOption: true,
		description: 'A snapshot name (one segment)',
	} as const;
	return ws
		.usage(
			'$0 ws <command> WS ...\n\nA workspace keeps its writes across runs, on top of a current snapshot.',
		)
		.command(
			'init <workspace> [command..]',
			'Make a workspace (after an optional init command); its start is snapshot WS/postinit',
			(command) =>
				addOptionSpecs(command, wsInitOptionSpecs)
					.positional('workspace', workspace)
					.usage('$0 ws init WS [--src DIR] [--base NAME]... [-- CMD [ARG...]]')
					.example('$0 ws init dev --src . -- npm ci', 'install once; every ws run starts there')
					.epilogue('Exit status: 0 made; 1 not made (the init command failed, or scratch did); 2 bad usage.')
					.strict(false),
			async () => {
				exitCode = await wsInitCli(afterSubcommand(), {showHelp: help('init')});
			},
		)
		.command(
			'run <workspace> [command..]',
			"Run a command in the workspace: it sees the current snapshot and earlier runs' writes; its writes stay",
			(command) =>
				addOptionSpecs(command, wsRunOptionSpecs)
					.positional('workspace', workspace)
					.usage('$0 ws run WS [options] -- CMD [ARG...]')
					.example("$0 ws run dev --touch 'var/lib/rpm/*' -- rpm -qa", 'copy the rpm database up first')
					.epilogue(
						"Exit status: the command's own; 126 cannot execute, 127 not found, 128+N killed by signal N, 125 scratch failed (also: busy with --no-wait).",
					)
					.strict(false),
			async () => {
				exitCode = await wsRunCli(afterSubcommand(), {showHelp: help('run')});
			},
		)
		.command(
			'snapshot <workspace> <name>',
			'Freeze the writes so far as snapshot WS/NAME, which becomes current',
			(command) => storeOption(command).positional('workspace', workspace).positional('name', snapshot),
			async (options) => {
				const taken = await snapshotWorkspace({
					...storeOf(options),
					workspace: options.workspace,
					name: options.name,
				});
				print(options.json, taken, renderWorkspaceSnapshot);
			},
		)
		.command(
			'rollback <workspace> <name>',
			'Drop the writes; snapshot WS/NAME becomes current',
			(command) => storeOption(command).positional('workspace', workspace).positional('name', snapshot),
			async (options) => {
				const reset = await rollbackWorkspace({
					...storeOf(options),
					workspace: options.workspace,
					name: options.name,
				});
				print(options.json, reset, (value) =>
					renderWorkspaceReset(value, `${value.workspace}/${options.name}`),
				);
			},
		)
		.command(
			'clean <workspace>',
			'Drop the writes since the current snapshot',
			(command) => storeOption(command).positional('workspace', workspace),
			async (options) => {
				const reset = await cleanWorkspace({...storeOf(options), workspace: options.workspace});
				print(options.json, reset, (value) => renderWorkspaceReset(value, 'its current snapshot'));
			},
		)
		.command(
			'snapshots <workspace>',
			'List the snapshots, current ones marked with *',
			(command) => storeOption(command).positional('workspace', workspace),
			async (options) => {
				const listing = await listWorkspaceSnapshots({...storeOf(options), workspace: options.workspace});
				print(options.json, listing, renderWorkspaceSnapshots);
			},
		)
		.command(
			'rm <workspace> <name>',
			'Remove a snapshot name (even the current one); its layer is freed once nothing reaches it',
			(command) => storeOption(command).positional('workspace', workspace).positional('name', snapshot),
			async (options) => {
				const removal = await removeWorkspaceSnapshot({
					...storeOf(options),
					workspace: options.workspace,
					name: options.name,
				});
				print(options.json, removal, renderWorkspaceRemoval);
			},
		)
		.command(
			'scrub <workspace>',
			'Remove the workspace, its snapshot names and every layer only it reaches',
			(command) => storeOption(command).positional('workspace', workspace),
			async (options) => {
				const scrub = await scrubWorkspace({...storeOf(options), workspace: options.workspace});
				print(options.json, scrub, renderWorkspaceScrub);
			},
		)
		.command(
			'ls',
			'List the workspaces',
			(command) => storeOption(command),
			async (options) => {
				print(options.json, await listWorkspaces(storeOf(options)), renderWorkspaces);
			},
		);
}

/** The full CLI, for every command but the `run` fast path. Returns the exit status. */
let exitCode = 0;

// Options that take no value: yargs would read `--dry-run=maybe` as false and go on.
const booleanOptions = new Set([
	'json',
	'verbose',
	'dry-run',
	'force',
	'gzip',
	'flatten',
	'insecure',
	'keep-setid',
	'allow-outside-symlinks',
	'no-wait',
	'help',
	'version',
]);

// Single-value options and what their value is: yargs makes a repeated one an array, a bare one ''.
const valueOptions: Record<string, string> = {
	store: 'DIR',
	output: 'FILE',
	name: 'NAME',
	base: 'NAME',
	as: 'NEW',
};

/**
Refuse what yargs would quietly misread: a value given to a flag (`--dry-run=maybe` reads as false), a
value option with no value after it (a bare `--store` reads as '', the working directory).
*/
function checkRawArguments(argv: readonly string[]): void {
	const end = argv.indexOf('--');
	const words = end === -1 ? argv : argv.slice(0, end);
	for (const [index, word] of words.entries()) {
		const match = /^--([a-z-]+)=(.*)$/s.exec(word);
		if (match && booleanOptions.has(match[1] as string) && !['true', 'false'].includes(match[2] as string)) {
			throw new UsageError(`--${match[1]} takes no value; write just --${match[1]}`);
		}

		const key = word === '-o' ? 'output' : word.startsWith('--') ? word.slice(2) : undefined;
		const next = words[index + 1];
		if (key && valueOptions[key] && (next === undefined || next.startsWith('--'))) {
			throw new UsageError(`${word} needs a value (${valueOptions[key]})`);
		}
	}
}

/** Refuse single-value options given twice (yargs makes them arrays). */
function checkOptionValues(argv: readonly string[], options: Record<string, unknown>): void {
	for (const key of Object.keys(valueOptions)) {
		if (Array.isArray(options[key])) {
			const flag = key === 'output' && argv.includes('-o') ? '-o' : `--${key}`;
			throw new UsageError(`${flag} was given more than once; give it once`);
		}
	}
}

/**
The word yargs could not place that starts with '-' but is no option: most often a name given as
`-x`, which yargs reads as a flag. Undefined when there is none.
*/
function strayDashWord(argv: readonly string[]): string | undefined {
	const end = argv.indexOf('--');
	return (end === -1 ? argv : argv.slice(0, end)).find(
		(word) => /^-[^-]/.test(word) && !['-h', '-o'].includes(word),
	);
}

export async function main(argv: readonly string[]): Promise<number> {
	exitCode = 0;
	try {
		checkRawArguments(argv);
	} catch (error) {
		reportError(error);
		return exitCodeFor(error);
	}

	const parser = yargs([...argv])
		.scriptName('scratch')
		.usage(
			'$0 <command> [options]\n\nRun commands in throwaway copy-on-write views of a directory tree (Linux overlayfs).',
		)
		.version(typeof SCRATCH_VERSION === 'string' ? SCRATCH_VERSION : 'development')
		.command(
			'run [command..]',
			'Run a command in a throwaway view of the source tree; exits with its status (125: scratch failed)',
			(command) =>
				addOptionSpecs(command, runOptionSpecs)
					.positional('command', {type: 'string', array: true, description: 'The command, after --'})
					.usage('$0 run [options] -- CMD [ARG...]')
					.epilogue(
						"Exit status: the command's own; 126 cannot execute, 127 not found, 128+N killed by signal N (also when scratch got signal N and passed it on), 125 scratch failed.",
					)
					.example('$0 run -- make', 'build; the source tree is untouched afterwards')
					.example('$0 run --keep --tmpfs /tmp -- ./configure', 'keep the writes for later')
					.strict(false),
			async () => {
				const withoutCommandName = [...argv];
				withoutCommandName.splice(withoutCommandName.indexOf('run'), 1);
				exitCode = await runCli(withoutCommandName, {showHelp: () => main(['run', '--help'])});
			},
		)
		.command(
			'gc',
			"Free dead runs' leftovers, abandoned entries and the trash",
			(command) =>
				storeOption(command).option('dry-run', {
					type: 'boolean',
					default: false,
					description: 'Report without deleting',
				}),
			async (options) => {
				const report = await collectGarbage({
					store: options.store ?? defaultStorePath(),
					dryRun: options['dry-run'],
				});
				print(options.json, report, renderGcReport);
			},
		)
		.command(
			'doctor',
			'What works here: kernel overlay, user namespaces, fuse-overlayfs, the store, limits; tries each backend',
			(command) =>
				storeOption(command).epilogue(
					'Exit status: 0 when at least one backend can isolate runs here, 1 when none can, 2 usage error.',
				),
			async (options) => {
				// An interrupted doctor removes what its trials made before it exits 128+N.
				const controller = new AbortController();
				let received: NodeJS.Signals | undefined;
				const stop = (signal: NodeJS.Signals) => {
					received ??= signal;
					controller.abort();
				};
				const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
				for (const signal of signals) {
					process.on(signal, stop);
				}

				try {
					const report = await runDoctor({...storeOf(options), signal: controller.signal});
					print(options.json, report, renderDoctorReport);
					exitCode = report.works ? 0 : 1;
				} catch (error) {
					if (!received) {
						throw error;
					}

					reportError(error, {verbose: options.verbose});
					exitCode = 128 + os.constants.signals[received];
				} finally {
					for (const signal of signals) {
						process.off(signal, stop);
					}
				}
			},
		)
		.command(
			'ls',
			'List snapshot names: name, layer, parent, depth, size, files, created, command',
			(command) => storeOption(command),
			async (options) => {
				const entries = await listSnapshots(storeOf(options));
				print(options.json, entries, (value) => renderSnapshots(value, process.stdout.columns || 120));
			},
		)
		.command(
			'inspect <name>',
			"One layer's record, names and chain (NAME or LAYER-ID)",
			(command) => storeOption(command).positional('name', {type: 'string', demandOption: true}),
			async (options) => {
				const details = await inspectLayer({...storeOf(options), reference: options.name});
				print(options.json, details, renderLayerDetails);
			},
		)
		.command(
			'tag <name> <new-name>',
			'Give the layer NAME points at another name, NEW-NAME',
			(command) =>
				storeOption(command)
					.positional('name', {type: 'string', demandOption: true})
					.positional('new-name', {type: 'string', demandOption: true})
					.option('force', {type: 'boolean', default: false, description: 'Move NEW-NAME if it exists'}),
			async (options) => {
				const ref = await tagSnapshot({
					...storeOf(options),
					reference: options.name,
					name: options['new-name'],
					force: options.force,
				});
				print(options.json, ref, (value) => `${value.name} -> layer ${value.layer}\n`);
			},
		)
		.command(
			'rm <names..>',
			'Remove snapshot names; a layer is freed by gc once nothing reaches it',
			(command) =>
				storeOption(command).positional('names', {type: 'string', array: true, demandOption: true}),
			async (options) => {
				const removed = await removeSnapshots({...storeOf(options), names: options.names});
				print(options.json, {removed}, (value) =>
					value.removed.map((ref) => `removed ${ref.name} (layer ${ref.layer})\n`).join(''),
				);
			},
		)
		.command(
			'diff <name>',
			'What a layer or kept run changed: A added, M modified, D deleted (NAME, RUN-ID or LAYER-ID)',
			(command) => storeOption(command).positional('name', {type: 'string', demandOption: true}),
			async (options) => {
				const diff = await diffLayer({...storeOf(options), reference: options.name});
				const color = Boolean(process.stdout.isTTY) && !process.env['NO_COLOR'];
				print(options.json, diff, (value) => renderDiff(value, {color}));
			},
		)
		.command(
			'squash <name>',
			"Flatten NAME's chain into one layer with the same merged content, named by --as",
			(command) =>
				storeOption(command)
					.positional('name', {type: 'string', demandOption: true})
					.option('as', {type: 'string', demandOption: true, description: 'Name of the flattened layer'}),
			async (options) => {
				const squash = await squashLayer({...storeOf(options), name: options.name, as: options.as});
				print(
					options.json,
					squash,
					(value) =>
						`squashed ${options.name} (${value.squashedLayers} layers) into layer ${value.layer.id}, named ${value.ref.name}\n`,
				);
			},
		)
		.command(
			'promote <run-id> <name>',
			'Make the writes of a run kept with --keep a layer named NAME',
			(command) =>
				storeOption(command)
					.positional('run-id', {type: 'string', demandOption: true})
					.positional('name', {type: 'string', demandOption: true}),
			async (options) => {
				const promotion = await promoteRun({
					...storeOf(options),
					runId: options['run-id'],
					name: options.name,
				});
				print(
					options.json,
					promotion,
					(value) =>
						`promoted run ${options['run-id']} as ${value.ref.name} (layer ${value.layer.id}: ${formatCommand(value.layer.command ?? [])})\n`,
				);
			},
		)
		.command(
			'export <name>',
			'A layer (or with --flatten its whole stack) as a deterministic OCI image layer tar (to stdout, or -o FILE); records its DiffID and ChainID',
			(command) =>
				storeOption(command)
					.positional('name', {
						type: 'string',
						demandOption: true,
						description: 'A snapshot name or layer id',
					})
					.option('output', {
						alias: 'o',
						type: 'string',
						description: 'Write the tar to FILE instead of stdout',
					})
					.option('gzip', {type: 'boolean', default: false, description: 'Compress it with gzip'})
					.option('flatten', {
						type: 'boolean',
						default: false,
						description: 'The whole stack merged into one layer (nothing is recorded then)',
					}),
			async (options) => {
				if (options.output === undefined && process.stdout.isTTY) {
					throw new UsageError(
						'scratch export writes a tar, and stdout is a terminal; give -o FILE or pipe it',
					);
				}

				if (options.output === undefined && options.json) {
					throw new UsageError(
						'--json prints the summary on stdout, where the tar would go; give -o FILE too',
					);
				}

				let output: {file: string} | {fd: number} | {stream: NodeJS.WriteStream};
				if (options.output !== undefined) {
					output = {file: options.output};
				} else if (options.gzip) {
					output = {stream: process.stdout};
				} else {
					// The tar goes to fd 1 from a worker thread with blocking writes; Node made a pipe's non-blocking.
					(
						process.stdout as unknown as {_handle?: {setBlocking?: (blocking: boolean) => number}}
					)._handle?.setBlocking?.(true);
					output = {fd: 1};
				}

				const progress = createProgress(`export ${options.name}`);
				let exported: Awaited<ReturnType<typeof exportLayer>>;
				try {
					exported = await exportLayer({
						...storeOf(options),
						reference: options.name,
						...output,
						gzip: options.gzip,
						flatten: options.flatten,
						...(progress ? {onProgress: (done: number, total?: number) => progress.update(done, total)} : {}),
					});
				} finally {
					progress?.finish();
				}

				const layers = exported.flattened ? `, flattened: ${plural(exported.layers, 'layer')}` : '';
				const summary = `exported ${exported.name ?? exported.layer} (layer ${exported.layer}${layers}): ${exported.entries} entries, ${exported.bytes} bytes of tar${exported.gzip ? ', gzipped' : ''}; DiffID ${exported.diffId}\n`;
				if (options.json) {
					print(true, exported, () => '');
				} else {
					process.stderr.write(`scratch: ${summary}`);
				}
			},
		)
		.command(
			'import <file>',
			'An OCI image layer tar (or a gzip of one; - for stdin) as a layer named --name, on --base if given',
			(command) =>
				archiveOptions(storeOption(command))
					.positional('file', {
						type: 'string',
						demandOption: true,
						description: 'The tar or tar.gz file, or - for stdin',
					})
					.option('name', {
						type: 'string',
						demandOption: true,
						description: 'The name the layer gets (an existing name is moved to it)',
					})
					.option('base', {
						type: 'string',
						description: 'A snapshot name or layer id the layer stacks on, with its lowers',
					})
					.epilogue(
						'Exit status: 0 imported; 1 not imported (a damaged or refused archive, a missing base), nothing changed; 2 bad usage.',
					),
			async (options) => {
				for (const key of ['name', 'base'] as const) {
					if (Array.isArray(options[key])) {
						throw new UsageError(`--${key} was given more than once; give it once`);
					}
				}

				// yargs reads a lone '-' as an empty string.
				const fromStdin = options.file === '-' || (options.file === '' && argv.includes('-'));
				if (fromStdin && process.stdin.isTTY) {
					throw new UsageError(
						'scratch import - reads a tar from stdin, and stdin is a terminal; pipe a tar into it or give a FILE',
					);
				}

				const progress = createProgress(`import ${options.name}`);
				let imported: LayerImport;
				try {
					imported = await importLayer({
						...storeOf(options),
						...(fromStdin ? {stream: process.stdin} : {file: options.file}),
						name: options.name,
						...(options.base === undefined ? {} : {base: options.base}),
						keepSetid: options['keep-setid'],
						allowOutsideSymlinks: options['allow-outside-symlinks'],
						...(progress ? {onProgress: (done: number, total?: number) => progress.update(done, total)} : {}),
					});
				} finally {
					progress?.finish();
				}

				if (imported.ownersMapped > 0) {
					process.stderr.write(
						`scratch: warning: ${plural(imported.ownersMapped, 'entry', 'entries')} of ${fromStdin ? 'stdin' : options.file} belonged to owners other than uid and gid 0; in this rootless store they belong to you (uid 0 in your runs)\n`,
					);
				}

				const summary = `imported ${imported.name} (layer ${imported.layer}${imported.reused ? ', which the store had already' : ''}): ${imported.entries} entries, ${imported.bytes} bytes of tar; DiffID ${imported.diffId}\n`;
				if (options.json) {
					print(true, imported, () => '');
				} else {
					process.stderr.write(`scratch: ${summary}`);
				}
			},
		)
		.command('ws', 'Workspaces: persistent writable states with snapshots, rollback, clean and scrub', (ws) =>
			workspaceCommands(ws, argv).demandCommand(1, 'no ws command given (see scratch ws --help)'),
		)
		.command(
			'push <name> <destination>',
			"Send a snapshot's whole stack (or it flattened) to an OCI registry as REGISTRY/REPO:TAG",
			(command) =>
				insecureOption(storeOption(command))
					.positional('name', {
						type: 'string',
						demandOption: true,
						description: 'A snapshot name or layer id',
					})
					.positional('destination', {
						type: 'string',
						demandOption: true,
						description: 'REGISTRY/REPOSITORY:TAG, e.g. 127.0.0.1:5000/team/deps:v1',
					})
					.option('flatten', {
						type: 'boolean',
						default: false,
						description: 'Send the stack as one layer (what export --flatten writes)',
					}),
			async (options) => {
				const progress = labelledProgress();
				let pushed: Push;
				try {
					pushed = await pushLayer({
						...storeOf(options),
						reference: options.name,
						destination: options.destination,
						flatten: options.flatten,
						insecure: options.insecure,
						onProgress: progress.report,
					});
				} finally {
					progress.finish();
				}

				print(options.json, pushed, (value) => {
					const sent = value.layers.filter(({uploaded}) => uploaded).length;
					return `pushed ${value.name ?? value.layer} to ${value.destination}: ${plural(value.layers.length, 'layer')}${value.flattened ? ' (flattened)' : ''}, ${sent} sent (${formatBytes(value.uploadedBytes)}), ${value.layers.length - sent} already there; ${value.digest}\n`;
				});
			},
		)
		.command(
			'pull <source>',
			"Fetch an OCI image's layers from a registry as a stack and name its top layer",
			(command) =>
				archiveOptions(insecureOption(storeOption(command)))
					.positional('source', {
						type: 'string',
						demandOption: true,
						description: 'REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:DIGEST',
					})
					.option('name', {type: 'string', demandOption: true, description: 'The name the top layer gets'}),
			async (options) => {
				const progress = labelledProgress();
				let pulled: Pull;
				try {
					pulled = await pullLayer({
						...storeOf(options),
						source: options.source,
						name: options.name,
						insecure: options.insecure,
						keepSetid: options['keep-setid'],
						allowOutsideSymlinks: options['allow-outside-symlinks'],
						onProgress: progress.report,
					});
				} finally {
					progress.finish();
				}

				print(options.json, pulled, (value) => {
					const fetched = value.layers.filter(({reused}) => !reused).length;
					return `pulled ${value.source} as ${value.name} (layer ${value.layer}): ${plural(value.layers.length, 'layer')}, ${fetched} fetched (${formatBytes(value.downloadedBytes)}), ${value.layers.length - fetched} already in the store; ${value.digest}\n`;
				});
			},
		)
		.middleware((options) => {
			checkOptionValues(argv, options);
		})
		.demandCommand(1, 'no command given')
		.strict()
		.help()
		.alias('h', 'help')
		.wrap(Math.min(110, process.stdout.columns || 80))
		.fail((message, error) => {
			if (error) {
				throw error;
			}

			const known = [
				'run',
				'ls',
				'inspect',
				'tag',
				'rm',
				'diff',
				'promote',
				'gc',
				'squash',
				'export',
				'import',
				'push',
				'pull',
				'doctor',
				'ws',
			];
			const [first, second] = argv;
			let text = message.charAt(0).toLowerCase() + message.slice(1);
			const stray = strayDashWord(argv);
			const command =
				first === 'ws' && second && workspaceCommandNames.includes(second) ? `ws ${second}` : first;
			if (stray && command && known.includes(command.split(' ')[0] as string)) {
				throw new UsageError(
					`unknown option ${stray} for scratch ${command}; a name cannot start with '-'; see scratch ${command} --help`,
				);
			}

			if (first && !first.startsWith('-') && !known.includes(first)) {
				text = `unknown command '${first}' (commands: ${known.join(', ')})`;
			} else if (
				first === 'ws' &&
				second &&
				!second.startsWith('-') &&
				!workspaceCommandNames.includes(second)
			) {
				text = `unknown command 'ws ${second}' (ws commands: ${workspaceCommandNames.join(', ')})`;
			}

			throw new UsageError(`${text}; see scratch --help`);
		});

	try {
		await parser.parseAsync();
	} catch (error) {
		reportError(error, {verbose: argv.includes('--verbose')});
		return exitCodeFor(error);
	}

	return exitCode;
}
