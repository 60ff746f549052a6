import test from 'ava';
import {parseRunArguments, type RunArguments} from '../src/cli/run-arguments.js';
import {UsageError} from '../src/errors.js';

const defaults: RunArguments = {
	inPlace: false,
	keep: false,
	bases: [],
	backend: 'auto',
	tmpfs: [],
	touch: [],
	verbose: false,
	help: false,
	command: [],
};

const parsingCases: Array<{title: string; argv: string[]; expected: Partial<RunArguments>}> = [
	{title: 'no arguments give the defaults and no command', argv: [], expected: {}},
	{
		title: '--base repeats and keeps its order, --promote takes one name',
		argv: ['--base', 'deps', '--base=tools', '--promote', 'out', '--', 'make'],
		expected: {bases: ['deps', 'tools'], promote: 'out', command: ['make']},
	},
	{
		title: 'a bare command is the whole command',
		argv: ['make', 'test'],
		expected: {command: ['make', 'test']},
	},
	{
		title: '`--` ends the options and is not part of the command',
		argv: ['--keep', '--', 'make', 'test'],
		expected: {keep: true, command: ['make', 'test']},
	},
	{
		title: 'a `--` after the first `--` belongs to the command',
		argv: ['--', 'git', '--', 'file'],
		expected: {command: ['git', '--', 'file']},
	},
	{
		title: 'the first word that is not an option starts the command',
		argv: ['--keep', 'rm', '--keep', '-rf', 'build'],
		expected: {keep: true, command: ['rm', '--keep', '-rf', 'build']},
	},
	{
		title: 'options after `--` are kept verbatim as the command',
		argv: ['--', '--keep', '--json', '--src=x', '-h'],
		expected: {command: ['--keep', '--json', '--src=x', '-h']},
	},
	{
		title: 'a help flag after the command name belongs to the command',
		argv: ['ls', '--help', '-h'],
		expected: {command: ['ls', '--help', '-h']},
	},
	{title: 'a lone dash starts the command', argv: ['-', 'x'], expected: {command: ['-', 'x']}},
	{
		title: '--src takes the next word as its value',
		argv: ['--src', '/repo', 'ls'],
		expected: {src: '/repo', command: ['ls']},
	},
	{
		title: '--src=VALUE takes the value after the equals sign',
		argv: ['--src=/repo', 'ls'],
		expected: {src: '/repo', command: ['ls']},
	},
	{
		title: 'a value keeps every equals sign after the first',
		argv: ['--json-file=a=b.json', 'ls'],
		expected: {jsonFile: 'a=b.json', command: ['ls']},
	},
	{
		title: 'a separate value may itself look like an option',
		argv: ['--store', '--keep', 'ls'],
		expected: {store: '--keep', command: ['ls']},
	},
	{
		title: 'every boolean option sets its flag',
		argv: ['--in-place', '--keep', '--verbose', 'ls'],
		expected: {inPlace: true, keep: true, verbose: true, command: ['ls']},
	},
	{
		title: '--json-file and --store are read in both spellings',
		argv: ['--json-file', 'out.json', '--store=/var/tmp/store', 'ls'],
		expected: {jsonFile: 'out.json', store: '/var/tmp/store', command: ['ls']},
	},
	{
		title: '--tmpfs is repeatable and keeps the order given',
		argv: ['--tmpfs', '/tmp', '--tmpfs=node_modules/.cache', '--tmpfs', 'build', 'ls'],
		expected: {tmpfs: ['/tmp', 'node_modules/.cache', 'build'], command: ['ls']},
	},
	{
		title: '--backend kernel is accepted',
		argv: ['--backend', 'kernel', 'ls'],
		expected: {backend: 'kernel', command: ['ls']},
	},
	{
		title: '--backend=userns is accepted',
		argv: ['--backend=userns', 'ls'],
		expected: {backend: 'userns', command: ['ls']},
	},
	{
		title: '--backend auto is accepted',
		argv: ['--backend', 'auto', 'ls'],
		expected: {backend: 'auto', command: ['ls']},
	},
	{title: '-h sets help', argv: ['-h'], expected: {help: true}},
	{
		title: '--help sets help and options around it still parse',
		argv: ['--keep', '--help', 'ls'],
		expected: {keep: true, help: true, command: ['ls']},
	},
	{
		title: 'command arguments with spaces, quotes and newlines are kept verbatim',
		argv: ['--', 'sh', '-c', 'echo "a b" \'c\'\nexit 3', ''],
		expected: {command: ['sh', '-c', 'echo "a b" \'c\'\nexit 3', '']},
	},
];

for (const {title, argv, expected} of parsingCases) {
	test(`parseRunArguments: ${title}`, (t) => {
		t.deepEqual(parseRunArguments(argv), {...defaults, ...expected});
	});
}

test('parseRunArguments leaves optional string options out of the result when they are not given', (t) => {
	const parsed = parseRunArguments(['ls']);
	t.false('src' in parsed);
	t.false('jsonFile' in parsed);
	t.false('store' in parsed);
});

test('parseRunArguments does not modify the argv it is given', (t) => {
	const argv = ['--tmpfs', '/tmp', '--', 'ls'];
	const copy = [...argv];
	parseRunArguments(argv);
	t.deepEqual(argv, copy);
});

const errorCases: Array<{title: string; argv: string[]; message: RegExp}> = [
	{title: 'an unknown long option', argv: ['--frobnicate', 'ls'], message: /unknown option --frobnicate/},
	{
		title: 'an unknown long option with a value',
		argv: ['--frobnicate=1', 'ls'],
		message: /unknown option --frobnicate=1/,
	},
	{title: 'an unknown short option', argv: ['-x', 'ls'], message: /unknown option -x/},
	{title: '--json, pointing at --json-file', argv: ['--json', 'ls'], message: /--json-file FILE/},
	{
		title: 'a repeated --src',
		argv: ['--src', 'a', '--src', 'b', 'ls'],
		message: /--src is given more than once/,
	},
	{
		title: 'a repeated --backend',
		argv: ['--backend=kernel', '--backend=userns', 'ls'],
		message: /--backend is given more than once/,
	},
	{title: 'a repeated boolean', argv: ['--keep', '--keep', 'ls'], message: /--keep is given more than once/},
	{title: 'a missing value at the end', argv: ['--src'], message: /--src needs a value \(DIR\)/},
	{
		title: 'a missing value before `--`',
		argv: ['--json-file', '--', 'ls'],
		message: /--json-file needs a value \(FILE\)/,
	},
	{
		title: 'an empty value after an equals sign',
		argv: ['--src=', 'ls'],
		message: /--src needs a non-empty value \(DIR\)/,
	},
	{
		title: 'an empty separate value',
		argv: ['--tmpfs', '', 'ls'],
		message: /--tmpfs needs a non-empty value \(PATH\)/,
	},
	{title: 'a value given to a boolean', argv: ['--keep=yes', 'ls'], message: /--keep takes no value/},
	{
		title: 'an invalid --backend choice',
		argv: ['--backend', 'docker', 'ls'],
		message: /--backend docker is not one of auto, kernel, userns/,
	},
	{
		title: 'an invalid --backend= choice',
		argv: ['--backend=KERNEL', 'ls'],
		message: /--backend KERNEL is not one of/,
	},
];

for (const {title, argv, message} of errorCases) {
	test(`parseRunArguments rejects ${title} with a one-line UsageError`, (t) => {
		const error = t.throws(() => parseRunArguments(argv), {instanceOf: UsageError, message});
		t.is(error?.code, 'ERR_SCRATCH_USAGE');
		t.false(error?.message.includes('\n'));
	});
}
