import {UsageError} from '../errors.js';
import {backendChoices} from '../run/backend.js';

/** One option of `scratch run`; the table feeds both the fast parser below and yargs' help text. */
export type RunOptionSpec = {
	name: string;
	type: 'string' | 'boolean';
	array?: boolean;
	choices?: readonly string[];
	placeholder?: string;
	description: string;
};

export const runOptionSpecs: readonly RunOptionSpec[] = [
	{
		name: 'src',
		type: 'string',
		placeholder: 'DIR',
		description: 'Source tree, the bottom of the view (default: the current directory)',
	},
	{
		name: 'in-place',
		type: 'boolean',
		description: "Mount the view over the source's own path (only the command sees it)",
	},
	{
		name: 'base',
		type: 'string',
		array: true,
		placeholder: 'NAME',
		description: 'Stack layer NAME (and its lowers) over the source; repeatable, later ones higher',
	},
	{
		name: 'promote',
		type: 'string',
		placeholder: 'NAME',
		description: 'When the command exits 0, keep its writes as a layer named NAME (replacing NAME)',
	},
	{
		name: 'keep',
		type: 'boolean',
		description: "Keep the run's writes in the store and print the run id (with --promote: if not promoted)",
	},
	{
		name: 'backend',
		type: 'string',
		choices: backendChoices,
		placeholder: 'NAME',
		description: 'auto (kernel as root, else userns, else fuse), kernel, userns, or fuse (fuse-overlayfs)',
	},
	{
		name: 'touch',
		type: 'string',
		array: true,
		placeholder: 'GLOB',
		description:
			"Copy files matching GLOB (relative to the view's root) up before the command starts; repeatable",
	},
	{
		name: 'tmpfs',
		type: 'string',
		array: true,
		placeholder: 'PATH',
		description: 'Private tmpfs at PATH (relative: inside the view; absolute: e.g. /tmp); repeatable',
	},
	{
		name: 'json-file',
		type: 'string',
		placeholder: 'FILE',
		description: 'Write a JSON summary of the run to FILE',
	},
	{
		name: 'store',
		type: 'string',
		placeholder: 'DIR',
		description: 'Store directory (default: $SCRATCH_STORE or the per-user default)',
	},
	{name: 'verbose', type: 'boolean', description: 'Print stack traces of errors'},
];

/** Parsed `scratch run` arguments. */
export type RunArguments = {
	src?: string;
	inPlace: boolean;
	keep: boolean;
	bases: string[];
	promote?: string;
	backend: string;
	tmpfs: string[];
	touch: string[];
	jsonFile?: string;
	store?: string;
	verbose: boolean;
	help: boolean;
	command: string[];
};

/** Options, leading words and the command of a command line that ends with `-- CMD [ARG...]`. */
export type ParsedCommandLine = {
	values: Map<string, string[]>;
	/** The words before the command that are not options (`WS` of `ws run WS -- CMD`). */
	positionals: string[];
	help: boolean;
	command: string[];
};

/**
Parse a command line of options, `positionalCount` leading words and a command, without loading yargs
(it costs ~40 ms of start-up, a third of a whole run). Options end at `--` or at the first word that is
not an option once the leading words are taken; the rest is the command.
*/
export function parseCommandLine(
	argv: readonly string[],
	specs: readonly RunOptionSpec[],
	{usage, positionalCount = 0}: {usage: string; positionalCount?: number},
): ParsedCommandLine {
	const specsByName = new Map(specs.map((spec) => [spec.name, spec]));
	const values = new Map<string, string[]>();
	const positionals: string[] = [];
	let help = false;
	let index = 0;
	for (; index < argv.length; index++) {
		const argument = argv[index] as string;
		if (argument === '--') {
			index++;
			break;
		}

		if (argument === '-h' || argument === '--help') {
			help = true;
			continue;
		}

		if (!argument.startsWith('-') || argument === '-') {
			if (positionals.length < positionalCount) {
				positionals.push(argument);
				continue;
			}

			break;
		}

		const equals = argument.indexOf('=');
		const name = argument.slice(2, equals === -1 ? undefined : equals);
		const spec = argument.startsWith('--') ? specsByName.get(name) : undefined;
		if (!spec) {
			if (name === 'json' && argument.startsWith('--') && specsByName.has('json-file')) {
				throw new UsageError(
					`${usage} writes its summary with --json-file FILE, not --json: stdout belongs to the command`,
				);
			}

			throw new UsageError(`unknown option ${argument} for ${usage}; see ${usage} --help`);
		}

		let value: string;
		if (spec.type === 'boolean') {
			if (equals !== -1) {
				throw new UsageError(`--${name} takes no value; write just --${name}`);
			}

			value = 'true';
		} else if (equals === -1) {
			const next = argv[index + 1];
			if (next === undefined || next === '--') {
				throw new UsageError(`--${name} needs a value (${spec.placeholder ?? 'VALUE'})`);
			}

			value = next;
			index++;
		} else {
			value = argument.slice(equals + 1);
		}

		if (value === '') {
			throw new UsageError(`--${name} needs a non-empty value (${spec.placeholder ?? 'VALUE'})`);
		}

		if (spec.choices && !spec.choices.includes(value)) {
			throw new UsageError(`--${name} ${value} is not one of ${spec.choices.join(', ')}`);
		}

		const previous = values.get(name);
		if (previous && !spec.array) {
			throw new UsageError(`--${name} is given more than once; give it once`);
		}

		values.set(name, [...(previous ?? []), value]);
	}

	return {values, positionals, help, command: argv.slice(index)};
}

/** The value of an option given once (parseCommandLine refuses a second one), or undefined. */
export function firstValue(values: ReadonlyMap<string, string[]>, name: string): string | undefined {
	return values.get(name)?.[0];
}

/** Parse `scratch run` arguments (see parseCommandLine). */
export function parseRunArguments(argv: readonly string[]): RunArguments {
	const {values, help, command} = parseCommandLine(argv, runOptionSpecs, {usage: 'scratch run'});
	const single = (name: string) => firstValue(values, name);
	const src = single('src');
	const jsonFile = single('json-file');
	const store = single('store');
	const promote = single('promote');
	return {
		...(src === undefined ? {} : {src}),
		inPlace: values.has('in-place'),
		keep: values.has('keep'),
		bases: values.get('base') ?? [],
		...(promote === undefined ? {} : {promote}),
		backend: single('backend') ?? 'auto',
		tmpfs: values.get('tmpfs') ?? [],
		touch: values.get('touch') ?? [],
		...(jsonFile === undefined ? {} : {jsonFile}),
		...(store === undefined ? {} : {store}),
		verbose: values.has('verbose'),
		help,
		command,
	};
}
