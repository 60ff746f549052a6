import yargs, {type Argv} from 'yargs';
import {UsageError} from '../errors.js';
import {collectGarbage, type GcReport} from '../store/gc.js';
import {defaultStorePath} from '../store/store.js';
import {exitCodeFor, reportError} from './report-error.js';
import {runOptionSpecs} from './run-arguments.js';
import {runCli} from './run-cli.js';

declare const SCRATCH_VERSION: string;

function formatBytes(bytes: number): string {
	const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
	let value = bytes;
	let unit = 0;
	while (value >= 1024 && unit < units.length - 1) {
		value /= 1024;
		unit++;
	}

	return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

function describeGc(report: GcReport): string {
	const verb = report.dryRun ? 'would free' : 'freed';
	const parts = [
		`${report.deadRuns.length} dead run${report.deadRuns.length === 1 ? '' : 's'}`,
		`${report.abandonedTemporary.length} abandoned temporary entr${report.abandonedTemporary.length === 1 ? 'y' : 'ies'}`,
		`${report.trashEntries.length} trash entr${report.trashEntries.length === 1 ? 'y' : 'ies'}`,
	];
	return `scratch gc: ${verb} ${parts.join(', ')}: ${report.entriesFreed} files and directories, ${formatBytes(report.bytesFreed)}\n`;
}

function storeOption<T>(argv: Argv<T>) {
	return argv
		.option('store', {
			type: 'string',
			description: 'Store directory (default: $SCRATCH_STORE or the per-user default)',
		})
		.option('json', {type: 'boolean', default: false, description: 'Machine-readable output on stdout'})
		.option('verbose', {type: 'boolean', default: false, description: 'Print stack traces of errors'});
}

/** The full CLI, for every command but the `run` fast path. Returns the exit status. */
export async function main(argv: readonly string[]): Promise<number> {
	let exitCode = 0;
	const parser = yargs([...argv])
		.scriptName('scratch')
		.usage(
			'$0 <command> [options]\n\nRun commands in throwaway copy-on-write views of a directory tree (Linux overlayfs).',
		)
		.version(typeof SCRATCH_VERSION === 'string' ? SCRATCH_VERSION : 'development')
		.command(
			'run [command..]',
			'Run a command in a throwaway view of the source tree; exits with its status (125: scratch failed)',
			(command) => {
				for (const spec of runOptionSpecs) {
					command.option(spec.name, {
						type: spec.type,
						...(spec.array ? {array: true} : {}),
						...(spec.choices ? {choices: spec.choices} : {}),
						description: spec.description,
					});
				}

				return command
					.positional('command', {type: 'string', array: true, description: 'The command, after --'})
					.usage('$0 run [options] -- CMD [ARG...]')
					.epilogue(
						"Exit status: the command's own; 126 cannot execute, 127 not found, 128+N killed by signal N (also when scratch got signal N and passed it on), 125 scratch failed.",
					)
					.example('$0 run -- make', 'build; the source tree is untouched afterwards')
					.example('$0 run --keep --tmpfs /tmp -- ./configure', 'keep the writes for later')
					.strict(false);
			},
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
				process.stdout.write(
					options.json ? `${JSON.stringify(report, undefined, '\t')}\n` : describeGc(report),
				);
			},
		)
		.demandCommand(1, 'no command given')
		.strict()
		.help()
		.alias('h', 'help')
		.wrap(Math.min(110, process.stdout.columns || 80))
		.fail((message, error) => {
			if (error) {
				throw error;
			}

			const known = ['run', 'gc'];
			const [first] = argv;
			const text =
				first && !first.startsWith('-') && !known.includes(first)
					? `unknown command '${first}' (commands: ${known.join(', ')})`
					: message.charAt(0).toLowerCase() + message.slice(1);
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
