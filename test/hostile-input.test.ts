/*
The hostile and careless input suite (issue 7): bad input gets one clear line on stderr (what, why,
what to do), the documented exit status, and changes nothing. Every case is a row of `cases` below and
runs as root and as uid 65534. For each run the test checks:
- the exit status DESIGN.md and README.md document: `run` and `ws run` 125 when scratch itself fails,
  126/127 when the command cannot execute or is not found; other commands 2 for usage errors (invalid
  names included), 1 for operational errors;
- stderr: exactly one line, `scratch: ...`, matching the row's pattern (what failed, why, what to do);
- nothing changed: a fingerprint of the whole sandbox (source tree, store, everything the row set up),
  so a store that did not exist still does not; no mount left under the sandbox; no process left.
Rows whose input is fine despite looking hostile (paths with `:` `,` `\` or newlines) must work instead.
A row marked `knownFailure` for a user runs as test.failing: the product is wrong there, and the reason
says where and how to fix it; when the fix lands, the row fails until the mark is removed.
*/
import {
	chownSync,
	existsSync,
	lchownSync,
	lstatSync,
	mkdirSync,
	readFileSync,
	renameSync,
	symlinkSync,
	writeFileSync,
} from 'node:fs';
import path from 'node:path';
import test, {type ExecutionContext} from 'ava';
import {overlayfsStore} from './helpers/fuse.js';
import {copyPopulatedStore, type Launcher, launch, populated, snapshotOf} from './helpers/hostile.js';
import {
	chownTree,
	eventually,
	hostMountsUnder,
	makeSandbox,
	nobodyId,
	processesWith,
	type Sandbox,
	scratch,
	storeLeftovers,
	type User,
	users,
} from './helpers/scratch.js';

type Category = 'names' | 'paths' | 'flags' | 'commands' | 'stores' | 'environment';

/** What one case sets up and gives scratch; setup may move the source or the store. */
type CaseContext = {
	user: User;
	/** The user whose store a row about "another user's store" uses. */
	otherUser: User;
	sandbox: Sandbox;
	/** The source tree to pass (default: the sandbox's). */
	src: string;
	/** The store path scratch is given (default: the sandbox's). */
	store: string;
	/** Where the test reads that store (differs inside an overlayfs). */
	observedStore: string;
	launcher: Launcher;
	/** Scaffolding of the test that scratch's run changes by design (an overlay's work dir), left out. */
	ignore: string[];
	/** A path in the sandbox. */
	at: (relative: string) => string;
	/** Give paths (recursively for directories) to the case's user, as if it had made them. */
	own: (...paths: string[]) => void;
};

/** What the run must end with. */
type Outcome = {
	status: number;
	/** The one line on stderr; `undefined` for a run that works: stderr must then be empty. */
	stderr?: RegExp;
	stdout?: RegExp;
	/**
	The run got as far as its namespace (the command ran, with 126, 127 or a status of its own, or the
	setup failed in there): entries came and went in the store's working dirs (runs, tmp, trash), so their
	own mtimes may differ; nothing may be left in them.
	*/
	runStarted?: boolean;
	/** A run that works and legitimately records something (a ws run): only the source must stay. */
	changesStore?: boolean;
};

type HostileCase = {
	category: Category;
	title: string;
	/** The store a case starts with: none at the store path, or a copy of a populated store. */
	store: 'none' | 'populated';
	setup?: (context: CaseContext) => void | Promise<void>;
	argv: (context: CaseContext) => string[];
	outcome: Outcome | Record<User, Outcome>;
	/** What the error line tells users to do, one command after another, which must then work (exit 0). */
	remedy?: (context: CaseContext) => string[][];
	/** Product bugs, per user: the row runs as test.failing, and the text says where the fix goes. */
	knownFailure?: {users: User[]; fix: string};
};

const escapeRegExp = (text: string) => text.replaceAll(/[.*+?^${}()|[\]\\/]/g, '\\$&');

// ---------------------------------------------------------------------------------------------------
// Names: every kind of invalid name, wherever a name is given.

/** What a role's error says after the name, up to the end of the line. */
type NameRule = 'hierarchical' | 'one-segment';

type NameVariant = {
	label: string;
	name: string;
	/** The problem as `nameProblem` words it, for hierarchical names and for one-segment names. */
	problem: Record<NameRule, string>;
};

const holdsSlash =
	"it holds '\\/'; a (?:workspace name is one segment \\(its snapshots are WS\\/NAME\\)|snapshot name is one segment)";
const emptySegment = 'it has an empty segment \\(a leading, trailing or doubled \\/\\)';
const otherCharacter = (segment: string) =>
	`segment '${segment}' holds a character other than letters, digits, '\\.', '_' and '-'`;

const nameVariants: NameVariant[] = [
	{
		label: 'climbing out with ../x',
		name: '../x',
		problem: {hierarchical: "segment '\\.\\.' must start with a letter or digit", 'one-segment': holdsSlash},
	},
	{
		label: 'climbing out in the middle, a/../../b',
		name: 'a/../../b',
		problem: {hierarchical: "segment '\\.\\.' must start with a letter or digit", 'one-segment': holdsSlash},
	},
	{
		label: 'a doubled separator, a//b',
		name: 'a//b',
		problem: {hierarchical: emptySegment, 'one-segment': holdsSlash},
	},
	{
		label: 'a trailing separator, a/',
		name: 'a/',
		problem: {hierarchical: emptySegment, 'one-segment': holdsSlash},
	},
	{
		label: 'a leading separator, /a',
		name: '/a',
		problem: {hierarchical: emptySegment, 'one-segment': holdsSlash},
	},
	{
		label: 'a backslash, a\\b',
		name: 'a\\b',
		problem: {hierarchical: otherCharacter('a\\\\b'), 'one-segment': otherCharacter('a\\\\b')},
	},
	{
		label: 'non-ASCII letters, café',
		name: 'café',
		problem: {hierarchical: otherCharacter('café'), 'one-segment': otherCharacter('café')},
	},
	{
		label: 'too long, 129 characters',
		name: 'n'.repeat(129),
		problem: {
			hierarchical: 'it is 129 characters long, the limit is 128',
			'one-segment': 'it is 129 characters long, the limit is 128',
		},
	},
	{label: 'empty', name: '', problem: {hierarchical: 'it is empty', 'one-segment': 'it is empty'}},
	{
		label: 'a terminal escape and a newline',
		name: 'a\u001b[31mb\nc',
		problem: {
			hierarchical: otherCharacter('a\\\\u001b\\[31mb\\\\nc'),
			'one-segment': otherCharacter('a\\\\u001b\\[31mb\\\\nc'),
		},
	},
	{label: 'a leading dash, -x', name: '-x', problem: {hierarchical: '', 'one-segment': ''}},
];

type NameTarget = {
	label: string;
	store: HostileCase['store'];
	rule: NameRule;
	/** How the error names the role: `invalid --promote "NAME": ...`. */
	role: string;
	status: number;
	setup?: HostileCase['setup'];
	argv: (context: CaseContext, name: string) => string[];
	/** Through yargs, `-x` is an option: the line must still name it (see nameCases). */
	yargs: boolean;
};

const nameTargets: NameTarget[] = [
	{
		label: 'run --promote NAME',
		store: 'none',
		rule: 'hierarchical',
		role: 'invalid --promote',
		status: 125,
		argv: (c, name) => ['run', '--store', c.store, '--src', c.src, '--promote', name, '--', 'true'],
		yargs: false,
	},
	{
		label: 'tag NAME NEW-NAME',
		store: 'populated',
		rule: 'hierarchical',
		role: 'invalid NEW-NAME',
		status: 2,
		argv: (c, name) => ['tag', '--store', c.store, populated.name, name],
		yargs: true,
	},
	{
		label: 'rm NAME',
		store: 'populated',
		rule: 'hierarchical',
		role: 'invalid NAME',
		status: 2,
		argv: (c, name) => ['rm', '--store', c.store, name],
		yargs: true,
	},
	{
		label: 'inspect NAME',
		store: 'populated',
		rule: 'hierarchical',
		role: 'invalid NAME',
		status: 2,
		argv: (c, name) => ['inspect', '--store', c.store, name],
		yargs: true,
	},
	{
		label: 'ws init WS',
		store: 'none',
		rule: 'one-segment',
		role: 'invalid workspace name',
		status: 2,
		argv: (c, name) => ['ws', 'init', name, '--store', c.store, '--src', c.src],
		yargs: false,
	},
	{
		label: 'ws snapshot WS NAME',
		store: 'populated',
		rule: 'one-segment',
		role: 'invalid snapshot name',
		status: 2,
		argv: (c, name) => ['ws', 'snapshot', populated.workspace, name, '--store', c.store],
		yargs: true,
	},
	{
		label: 'import FILE --name NAME',
		store: 'none',
		rule: 'hierarchical',
		role: 'invalid --name',
		status: 2,
		setup(c) {
			writeFileSync(c.at('layer.tar'), Buffer.alloc(1024));
			c.own(c.at('layer.tar'));
		},
		argv: (c, name) => ['import', c.at('layer.tar'), '--name', name, '--store', c.store],
		yargs: true,
	},
	{
		label: 'pull REFERENCE --name NAME',
		store: 'none',
		rule: 'hierarchical',
		role: 'invalid --name',
		status: 2,
		// Nothing listens there: the name must be refused before any connection.
		argv: (c, name) => ['pull', '127.0.0.1:9/team/app:v1', '--name', name, '--store', c.store],
		yargs: true,
	},
];

const whatToDo: Record<NameRule, string> = {
	hierarchical: "; use segments of letters, digits, '\\.', '_' and '-' separated by \\/$",
	'one-segment': "; use letters, digits, '\\.', '_' and '-'$",
};

function nameCases(): HostileCase[] {
	const rows: HostileCase[] = [];
	for (const target of nameTargets) {
		for (const variant of nameVariants) {
			let stderr: RegExp;
			if (variant.name === '-x') {
				// Whatever parses it, the line must name -x: as an unknown option or as an invalid name.
				stderr =
					/^scratch: (?:unknown option -x for scratch [a-z ]+(?:; a name cannot start with '-')?; see scratch [a-z ]+ --help|invalid [^"]+"-x": segment '-x' must start with a letter or digit; use .+)$/;
			} else if (variant.name === '' && target.role === 'invalid --promote') {
				stderr = /^scratch: --promote needs a non-empty value \(NAME\)$/;
			} else {
				stderr = new RegExp(
					`^scratch: ${escapeRegExp(target.role)} ${escapeRegExp(JSON.stringify(variant.name))}: ${variant.problem[target.rule]}${whatToDo[target.rule]}`,
				);
			}

			rows.push({
				category: 'names',
				title: `${target.label} refuses a name with ${variant.label}`,
				store: target.store,
				...(target.setup ? {setup: target.setup} : {}),
				argv: (c) => target.argv(c, variant.name),
				outcome: {status: target.status, stderr},
			});
		}
	}

	return rows;
}

// ---------------------------------------------------------------------------------------------------
// Everything else, one row each.

const run = (c: CaseContext, ...rest: string[]) => ['run', '--store', c.store, '--src', c.src, ...rest];
const usage125 = (stderr: RegExp): Outcome => ({status: 125, stderr});

/** A source tree and store whose paths hold every character overlay options would need escaped. */
function oddPaths(c: CaseContext): {directory: string; src: string; store: string} {
	const directory = c.at('we:ird, na\\me\nwith lines');
	mkdirSync(directory);
	c.own(directory);
	const src = path.join(directory, 'src:1,2\\3');
	renameSync(c.sandbox.src, src);
	return {directory, src, store: path.join(directory, 'store,a:b\\c')};
}

/** Tear the record of the layer `app` names, as a crash of another tool or a bad disk would. */
function damageLayerRecord(c: CaseContext): void {
	const {layer} = JSON.parse(readFileSync(path.join(c.store, 'refs', populated.name), 'utf8')) as {
		layer: string;
	};
	writeFileSync(path.join(c.store, 'layers', `${layer}.json`), '{"id": "');
}

const otherCases: HostileCase[] = [
	// Paths.
	{
		category: 'paths',
		title: 'a --src that does not exist',
		store: 'none',
		argv: (c) => run({...c, src: c.at('missing')}, '--', 'true'),
		outcome: usage125(
			/^scratch: source tree .*\/missing does not exist; pass an existing directory with --src DIR$/,
		),
	},
	{
		category: 'paths',
		title: 'a --src that is a file',
		store: 'none',
		setup: (c) => writeFileSync(c.at('plain-file'), 'x\n'),
		argv: (c) => run({...c, src: c.at('plain-file')}, '--', 'true'),
		outcome: usage125(/^scratch: source .*\/plain-file is not a directory; pass a directory with --src DIR$/),
	},
	{
		category: 'paths',
		title: 'a --src that is a symlink loop',
		store: 'none',
		setup(c) {
			symlinkSync('loop-b', c.at('loop-a'));
			symlinkSync('loop-a', c.at('loop-b'));
		},
		argv: (c) => run({...c, src: c.at('loop-a')}, '--', 'true'),
		outcome: usage125(
			/^scratch: source tree .*\/loop-a cannot be used: too many levels of symbolic links; pass a readable directory with --src DIR$/,
		),
	},
	{
		category: 'paths',
		title: 'a --src with a newline in a path that does not exist',
		store: 'none',
		argv: (c) => run({...c, src: c.at('mis\nsing')}, '--', 'true'),
		outcome: usage125(
			/^scratch: source tree .*\/mis\\nsing does not exist; pass an existing directory with --src DIR$/,
		),
	},
	{
		category: 'paths',
		title: 'the store itself as --src',
		store: 'populated',
		argv: (c) => run({...c, src: c.store}, '--', 'true'),
		outcome: usage125(
			/^scratch: (?:store .* is inside the source tree .*: the run would see \(and overlap\) its own store; put the store elsewhere with --store DIR|source .* is inside the store .*; run on a directory outside the store)$/,
		),
	},
	{
		category: 'paths',
		title: 'a directory inside the store as --src',
		store: 'populated',
		argv: (c) => run({...c, src: path.join(c.store, 'layers')}, '--', 'true'),
		outcome: usage125(
			/^scratch: source .*\/store\/layers is inside the store .*\/store; run on a directory outside the store$/,
		),
	},
	{
		category: 'paths',
		title: 'a store inside the source tree',
		store: 'none',
		argv: (c) => run({...c, store: path.join(c.src, '.scratch')}, '--', 'true'),
		outcome: usage125(
			/^scratch: store .*\/src\/\.scratch is inside the source tree .*\/src: the run would see \(and overlap\) its own store; put the store elsewhere with --store DIR$/,
		),
	},
	{
		category: 'paths',
		title: '--src / holds every store',
		store: 'none',
		argv: (c) => run({...c, src: '/'}, '--', 'true'),
		outcome: usage125(
			/^scratch: store .* is inside the source tree \/: the run would see \(and overlap\) its own store; put the store elsewhere with --store DIR$/,
		),
	},
	{
		category: 'paths',
		title: 'a --store that is a file',
		store: 'none',
		setup(c) {
			writeFileSync(c.at('store-file'), 'not a store\n');
			c.own(c.at('store-file'));
		},
		argv: (c) => run({...c, store: c.at('store-file')}, '--', 'true'),
		outcome: usage125(
			/^scratch: store .*\/store-file is not a directory; pass a directory with --store DIR$/,
		),
	},
	{
		category: 'paths',
		title: 'a --store that is a symlink loop',
		store: 'none',
		setup(c) {
			symlinkSync('loop-b', c.at('loop-a'));
			symlinkSync('loop-a', c.at('loop-b'));
		},
		argv: (c) => run({...c, store: c.at('loop-a')}, '--', 'true'),
		outcome: usage125(
			/^scratch: cannot open store .*\/loop-a: too many levels of symbolic links; pass .*--store DIR$/,
		),
	},
	{
		category: 'paths',
		title: '--tmpfs climbing out of the view with ..',
		store: 'none',
		argv: (c) => run(c, '--tmpfs', 'build/../../x', '--', 'true'),
		outcome: usage125(
			/^scratch: --tmpfs build\/\.\.\/\.\.\/x: a relative PATH must stay inside the view; give an absolute path for other places$/,
		),
	},
	{
		category: 'paths',
		title: '--tmpfs on an absolute path outside the source that does not exist',
		store: 'none',
		argv: (c) => run(c, '--tmpfs', c.at('no/such/dir'), '--', 'true'),
		outcome: usage125(
			/^scratch: --tmpfs .*\/no\/such\/dir: .*\/no\/such\/dir is not an existing directory outside the source tree; name an existing directory such as \/tmp, or a path inside the source$/,
		),
	},
	{
		category: 'paths',
		title: '--tmpfs /proc, which the overlay mount itself needs',
		store: 'populated',
		argv: (c) => run(c, '--tmpfs', '/proc', '--', 'true'),
		outcome: usage125(/^scratch: --tmpfs \/proc: .+; .+$/),
	},
	{
		category: 'paths',
		title: 'a --src the user cannot read',
		store: 'populated',
		setup(c) {
			// Made by the other user, mode 0700: root reads it anyway, uid 65534 cannot.
			mkdirSync(c.at('private'), {mode: 0o700});
			writeFileSync(c.at('private/secret.txt'), 'secret\n');
			const id = c.otherUser === 'root' ? 0 : nobodyId;
			chownTree(c.at('private'), id);
		},
		argv: (c) => run({...c, src: c.at('private')}, '--', 'cat', 'secret.txt'),
		outcome: {
			root: {status: 0, stdout: /^secret$/, runStarted: true},
			nobody: {
				...usage125(
					/^scratch: the source tree .*\/private could not be opened when the run started \(.*Permission denied\); check --src$/,
				),
				runStarted: true,
			},
		},
	},
	{
		category: 'paths',
		title: '--json-file in a directory that does not exist',
		store: 'none',
		argv: (c) => run(c, '--json-file', c.at('missing/summary.json'), '--', 'true'),
		outcome: usage125(
			/^scratch: --json-file .*\/missing\/summary\.json: directory .*\/missing does not exist; create it or write the summary elsewhere$/,
		),
	},
	{
		category: 'paths',
		title: '--touch ..',
		store: 'none',
		argv: (c) => run(c, '--touch', '..', '--', 'true'),
		outcome: usage125(
			/^scratch: --touch \.\. climbs out of the view with '\.\.'; give a glob relative to the view's root such as 'var\/lib\/rpm\/\*'$/,
		),
	},
	{
		category: 'paths',
		title: 'export -o into a directory that does not exist',
		store: 'populated',
		argv: (c) => ['export', '--store', c.store, populated.name, '-o', c.at('missing/app.tar')],
		outcome: {
			status: 1,
			stderr:
				/^scratch: cannot write .*\/missing\/app\.tar: .*; give a file in an existing, writable directory with -o FILE$/,
		},
	},
	{
		category: 'paths',
		title: 'import of a file that does not exist',
		store: 'populated',
		argv: (c) => ['import', c.at('missing.tar'), '--name', 'imported', '--store', c.store],
		outcome: {
			status: 1,
			stderr:
				/^scratch: cannot import .*\/missing\.tar: no such file; give the path of a layer tar \(or \.tar\.gz\)$/,
		},
	},
	{
		category: 'paths',
		title: 'a source, store and --tmpfs whose paths hold : , \\ and a newline work',
		store: 'none',
		setup(c) {
			const odd = oddPaths(c);
			c.src = odd.src;
			c.store = odd.store;
			c.observedStore = odd.store;
		},
		argv: (c) =>
			run(c, '--tmpfs', 'tmp, dir:x\\y', '--', 'sh', '-c', 'cat README.md; stat -f -c %T "tmp, dir:x\\y"'),
		// The store is created on first use: it is the run that must leave the source as it was.
		outcome: {status: 0, stdout: /^# fixture\ntmpfs$/, runStarted: true, changesStore: true},
	},
	{
		category: 'paths',
		title: 'an --in-place run over a source whose path holds : , \\ and a newline works',
		store: 'populated',
		setup(c) {
			const odd = oddPaths(c);
			renameSync(c.store, odd.store);
			c.src = odd.src;
			c.store = odd.store;
			c.observedStore = odd.store;
		},
		argv: (c) =>
			run(
				c,
				'--in-place',
				'--',
				'sh',
				'-c',
				'echo written > new.txt; test "$PWD" = "$0" && cat README.md',
				c.src,
			),
		outcome: {status: 0, stdout: /^# fixture$/, runStarted: true},
	},
	{
		category: 'paths',
		title: 'a workspace whose source and store paths hold : , \\ and a newline works',
		store: 'none',
		async setup(c) {
			const odd = oddPaths(c);
			c.src = odd.src;
			c.store = odd.store;
			c.observedStore = odd.store;
			const init = await scratch({user: c.user}, ['ws', 'init', 'odd', '--store', c.store, '--src', c.src]);
			if (init.exitCode !== 0) {
				throw new Error(`ws init failed: ${String(init.stderr)}`);
			}
		},
		argv: (c) => [
			'ws',
			'run',
			'odd',
			'--store',
			c.store,
			'--',
			'sh',
			'-c',
			'echo written > new.txt; cat README.md',
		],
		outcome: {status: 0, stdout: /^# fixture$/, runStarted: true, changesStore: true},
	},

	// Flags.
	...['--promote', '--keep', '--base'].map(
		(flag): HostileCase => ({
			category: 'flags',
			title: `ws run with run's ${flag}, which ws run does not take`,
			store: 'populated',
			argv: (c) => [
				'ws',
				'run',
				populated.workspace,
				'--store',
				c.store,
				...(flag === '--keep' ? [flag] : [flag, populated.name]),
				'--',
				'true',
			],
			outcome: usage125(
				new RegExp(`^scratch: unknown option ${flag} for scratch ws run; see scratch ws run --help$`),
			),
		}),
	),
	{
		category: 'flags',
		title: '--promote given twice',
		store: 'none',
		argv: (c) => run(c, '--promote', 'a', '--promote', 'b', '--', 'true'),
		outcome: usage125(/^scratch: --promote is given more than once; give it once$/),
	},
	{
		category: 'flags',
		title: '--src given twice',
		store: 'none',
		argv: (c) => run(c, '--src', c.src, '--', 'true'),
		outcome: usage125(/^scratch: --src is given more than once; give it once$/),
	},
	{
		category: 'flags',
		title: '--store given twice to run',
		store: 'none',
		argv: (c) => run(c, '--store', c.at('other-store'), '--', 'true'),
		outcome: usage125(/^scratch: --store is given more than once; give it once$/),
	},
	{
		category: 'flags',
		title: '--store given twice to tag',
		store: 'populated',
		argv: (c) => ['tag', '--store', c.store, populated.name, 'copy', '--store', c.at('other-store')],
		outcome: {status: 2, stderr: /^scratch: --store (?:is|was) given more than once; give it once$/},
	},
	{
		category: 'flags',
		title: 'import --name given twice',
		store: 'none',
		setup(c) {
			writeFileSync(c.at('layer.tar'), Buffer.alloc(1024));
			c.own(c.at('layer.tar'));
		},
		argv: (c) => ['import', c.at('layer.tar'), '--name', 'a', '--name', 'b', '--store', c.store],
		outcome: {status: 2, stderr: /^scratch: --name was given more than once; give it once$/},
	},
	{
		category: 'flags',
		title: 'ws init --src given twice',
		store: 'none',
		argv: (c) => ['ws', 'init', 'dev', '--store', c.store, '--src', c.src, '--src', c.src],
		outcome: {status: 2, stderr: /^scratch: --src is given more than once; give it once$/},
	},
	{
		category: 'flags',
		title: 'an unknown option to run',
		store: 'none',
		argv: (c) => run(c, '--frobnicate', '--', 'true'),
		outcome: usage125(/^scratch: unknown option --frobnicate for scratch run; see scratch run --help$/),
	},
	{
		category: 'flags',
		title: 'an unknown short option to run',
		store: 'none',
		argv: (c) => run(c, '-x', '--', 'true'),
		outcome: usage125(/^scratch: unknown option -x for scratch run; see scratch run --help$/),
	},
	{
		category: 'flags',
		title: 'an unknown option to ls',
		store: 'populated',
		argv: (c) => ['ls', '--store', c.store, '--frobnicate'],
		outcome: {status: 2, stderr: /^scratch: unknown argument: frobnicate; see scratch --help$/},
	},
	{
		category: 'flags',
		title: 'an unknown backend',
		store: 'none',
		argv: (c) => run(c, '--backend', 'magic', '--', 'true'),
		outcome: usage125(/^scratch: --backend magic is not one of auto, kernel, userns, fuse$/),
	},
	{
		category: 'flags',
		title: '--src without its value',
		store: 'none',
		argv: (c) => ['run', '--store', c.store, '--src', '--', 'true'],
		outcome: usage125(/^scratch: --src needs a value \(DIR\)$/),
	},
	{
		category: 'flags',
		title: '--promote without its value, at the end',
		store: 'none',
		argv: (c) => run(c, '--promote'),
		outcome: usage125(/^scratch: --promote needs a value \(NAME\)$/),
	},
	{
		category: 'flags',
		title: 'ls --store without its value',
		store: 'none',
		argv: () => ['ls', '--store'],
		outcome: {status: 2, stderr: /^scratch: --store needs a (?:non-empty )?value \(DIR\)$/},
	},
	{
		category: 'flags',
		title: 'export -o without its value',
		store: 'populated',
		argv: (c) => ['export', '--store', c.store, populated.name, '-o'],
		outcome: {status: 2, stderr: /^scratch: (?:-o|--output) needs a (?:non-empty )?value \(FILE\)$/},
	},
	{
		category: 'flags',
		title: 'gc --dry-run=maybe',
		store: 'populated',
		argv: (c) => ['gc', '--store', c.store, '--dry-run=maybe'],
		outcome: {status: 2, stderr: /^scratch: --dry-run takes no value; write just --dry-run$/},
	},
	{
		category: 'flags',
		title: 'run --keep=yes',
		store: 'none',
		argv: (c) => run(c, '--keep=yes', '--', 'true'),
		outcome: usage125(/^scratch: --keep takes no value; write just --keep$/),
	},
	{
		category: 'flags',
		title: 'run --json, which belongs to the other commands',
		store: 'none',
		argv: (c) => run(c, '--json', '--', 'true'),
		outcome: usage125(
			/^scratch: scratch run writes its summary with --json-file FILE, not --json: stdout belongs to the command$/,
		),
	},

	// Commands.
	{
		category: 'commands',
		title: 'run with nothing after --',
		store: 'none',
		argv: (c) => run(c, '--'),
		outcome: usage125(/^scratch: no command to run; put it after '--', for example: scratch run -- make$/),
	},
	{
		category: 'commands',
		title: 'run with no command at all',
		store: 'none',
		argv: (c) => run(c),
		outcome: usage125(/^scratch: no command to run; put it after '--', for example: scratch run -- make$/),
	},
	{
		category: 'commands',
		title: 'run with an empty command name',
		store: 'none',
		argv: (c) => run(c, '--', ''),
		outcome: usage125(/^scratch: the command name is empty; put the command after '--'$/),
	},
	{
		category: 'commands',
		title: 'run of a file that is not executable',
		store: 'populated',
		setup(c) {
			writeFileSync(path.join(c.src, 'data.txt'), 'data\n');
			c.own(path.join(c.src, 'data.txt'));
		},
		argv: (c) => run(c, '--', './data.txt'),
		outcome: {
			status: 126,
			stderr: /^scratch: (?:\d+: )?exec: \.\/data\.txt: Permission denied$/,
			runStarted: true,
		},
	},
	{
		category: 'commands',
		title: 'run of a directory as the command',
		store: 'populated',
		argv: (c) => run(c, '--', './lib'),
		outcome: {
			status: 126,
			stderr: /^scratch: (?:\d+: )?exec: \.\/lib: Permission denied$/,
			runStarted: true,
		},
	},
	{
		category: 'commands',
		title: 'run of a command that is not found',
		store: 'populated',
		argv: (c) => run(c, '--', 'no-such-command-for-scratch'),
		outcome: {
			status: 127,
			stderr: /^scratch: (?:\d+: )?exec: no-such-command-for-scratch: not found$/,
			runStarted: true,
		},
	},
	{
		category: 'commands',
		title: 'ws run of a command that is not found',
		store: 'populated',
		argv: (c) => ['ws', 'run', populated.workspace, '--store', c.store, '--', 'no-such-command-for-scratch'],
		// The workspace records the run: only the status, the line and the source are checked.
		outcome: {
			status: 127,
			stderr: /^scratch: (?:\d+: )?exec: no-such-command-for-scratch: not found$/,
			runStarted: true,
			changesStore: true,
		},
	},
	{
		category: 'commands',
		title: 'an unknown subcommand',
		store: 'none',
		argv: () => ['frobnicate'],
		outcome: {
			status: 2,
			stderr: /^scratch: unknown command 'frobnicate' \(commands: run, ls, .*\); see scratch --help$/,
		},
	},
	{
		category: 'commands',
		title: 'no subcommand at all',
		store: 'none',
		argv: () => [],
		outcome: {status: 2, stderr: /^scratch: no command given; see scratch --help$/},
	},
	{
		category: 'commands',
		title: 'ws without a subcommand',
		store: 'populated',
		argv: (c) => ['ws', '--store', c.store],
		outcome: {status: 2, stderr: /^scratch: no ws command given \(see scratch ws --help\)/},
	},
	{
		category: 'commands',
		title: 'an unknown ws subcommand',
		store: 'populated',
		argv: (c) => ['ws', 'frobnicate', populated.workspace, '--store', c.store],
		outcome: {
			status: 2,
			stderr: /^scratch: unknown command 'ws frobnicate' \(ws commands: init, run, .*\); see scratch --help$/,
		},
	},
	{
		category: 'commands',
		title: 'ws run without a command',
		store: 'populated',
		argv: (c) => ['ws', 'run', populated.workspace, '--store', c.store],
		outcome: usage125(/^scratch: no command to run; put it after '--', for example: scratch run -- make$/),
	},
	{
		category: 'commands',
		title: 'ws run without a workspace',
		store: 'populated',
		argv: (c) => ['ws', 'run', '--store', c.store],
		outcome: usage125(/^scratch: no workspace given; write scratch ws run WS -- CMD$/),
	},
	{
		category: 'commands',
		title: 'ws init without a workspace',
		store: 'none',
		argv: (c) => ['ws', 'init', '--store', c.store, '--src', c.src],
		outcome: {
			status: 2,
			stderr: /^scratch: no workspace name given; write scratch ws init WS \[-- CMD\.\.\.\]$/,
		},
	},
	{
		category: 'commands',
		title: 'ws run in a workspace that does not exist',
		store: 'populated',
		argv: (c) => ['ws', 'run', 'nope', '--store', c.store, '--', 'true'],
		outcome: usage125(
			/^scratch: no workspace nope in store .*; create it with scratch ws init nope \(scratch ws ls lists them\)$/,
		),
	},
	{
		category: 'commands',
		title: 'run --base of a name that does not exist',
		store: 'populated',
		argv: (c) => run(c, '--base', 'nope', '--', 'true'),
		outcome: usage125(/^scratch: no snapshot named nope in store .*; see scratch ls$/),
	},
	{
		category: 'commands',
		title: 'run --base of an invalid name',
		store: 'populated',
		argv: (c) => run(c, '--base', '../x', '--', 'true'),
		outcome: usage125(
			/^scratch: invalid --base "\.\.\/x": segment '\.\.' must start with a letter or digit; use .+$/,
		),
	},
	{
		category: 'commands',
		title: 'promote of a run id that was never kept',
		store: 'populated',
		argv: (c) => ['promote', '--store', c.store, 'abcdefghjkmn', 'promoted'],
		outcome: {
			status: 1,
			stderr:
				/^scratch: no kept run abcdefghjkmn in store .*; keep one with scratch run --keep \(its id is printed then\)$/,
		},
	},
	{
		category: 'commands',
		title: 'tag onto a name that exists, without --force',
		store: 'populated',
		setup: async (c) => {
			const tagged = await scratch({user: c.user}, ['tag', '--store', c.store, populated.snapshot, 'taken']);
			if (tagged.exitCode !== 0) {
				throw new Error(String(tagged.stderr));
			}
		},
		argv: (c) => ['tag', '--store', c.store, populated.name, 'taken'],
		outcome: {
			status: 1,
			stderr:
				/^scratch: taken exists already \(layer [a-z\d]{6}\); remove it with scratch rm taken or pass --force to move it$/,
		},
	},
	{
		category: 'commands',
		title: 'tag to an invalid NEW-NAME in a store that does not exist',
		store: 'none',
		argv: (c) => ['tag', '--store', c.store, populated.name, '../x'],
		// An invalid name is a usage error whatever the store holds, as for run --promote and import --name.
		outcome: {
			status: 2,
			stderr:
				/^scratch: invalid NEW-NAME "\.\.\/x": segment '\.\.' must start with a letter or digit; use .+$/,
		},
	},
	{
		category: 'commands',
		title: 'ws rollback to a snapshot that does not exist',
		store: 'populated',
		argv: (c) => ['ws', 'rollback', populated.workspace, 'nope', '--store', c.store],
		outcome: {
			status: 1,
			stderr: /^scratch: workspace WS has no snapshot nope; scratch ws snapshots WS lists them$/,
		},
	},

	// Stores.
	{
		category: 'stores',
		title: 'a new store in a directory on a read-only mount',
		store: 'none',
		setup(c) {
			mkdirSync(c.at('read-only'));
			c.own(c.at('read-only'));
			c.store = c.at('read-only/store');
			c.observedStore = c.store;
			c.launcher = {kind: 'read-only', directories: [c.at('read-only')]};
		},
		argv: (c) => run(c, '--', 'true'),
		outcome: usage125(
			/^scratch: cannot create store .*\/read-only\/store: read-only file system; use a writable place with --store DIR$/,
		),
	},
	{
		category: 'stores',
		title: 'run in a store on a read-only mount',
		store: 'populated',
		setup(c) {
			mkdirSync(c.at('read-only'));
			c.own(c.at('read-only'));
			renameSync(c.store, c.at('read-only/store'));
			c.store = c.at('read-only/store');
			c.observedStore = c.store;
			c.launcher = {kind: 'read-only', directories: [c.at('read-only')]};
		},
		argv: (c) => run(c, '--', 'true'),
		outcome: usage125(
			/^scratch: store .*\/read-only\/store is on a read-only file system, and a run needs to write its upper dir there; use a writable store with --store DIR \(a read-only store can still be listed, inspected, diffed and exported\)$/,
		),
	},
	{
		category: 'stores',
		title: 'tag in a store on a read-only mount',
		store: 'populated',
		setup(c) {
			mkdirSync(c.at('read-only'));
			c.own(c.at('read-only'));
			renameSync(c.store, c.at('read-only/store'));
			c.store = c.at('read-only/store');
			c.observedStore = c.store;
			c.launcher = {kind: 'read-only', directories: [c.at('read-only')]};
		},
		argv: (c) => ['tag', '--store', c.store, populated.name, 'copy'],
		outcome: {
			status: 1,
			stderr:
				/^scratch: cannot .* store .*: read-only file system.*; use a store on a writable file system with --store DIR$/,
		},
	},
	{
		category: 'stores',
		title: 'a store on overlayfs with --backend kernel',
		store: 'none',
		async setup(c) {
			const overlay = overlayfsStore(c.sandbox);
			c.store = overlay.store;
			c.observedStore = overlay.backing;
			c.launcher = {kind: 'setup', setup: overlay.setup};
			// The kernel empties and remakes the overlay's work dir at every mount.
			c.ignore.push(overlay.setup.overlayfs?.work ?? '');
		},
		argv: (c) => run(c, '--backend', 'kernel', '--', 'true'),
		outcome: {
			root: usage125(
				/^scratch: backend kernel cannot run here: the store .* is on overlayfs \(as inside a container\), which the kernel refuses as an upper dir; try --backend fuse$/,
			),
			nobody: usage125(
				/^scratch: backend kernel cannot run here: the kernel backend needs root \(you are uid 65534\); try --backend (?:userns|fuse)(?: or --backend fuse)?$/,
			),
		},
	},
	{
		category: 'stores',
		title: "run --promote in another user's store",
		store: 'none',
		setup: async (c) => {
			await copyPopulatedStore(c.otherUser, c.store);
		},
		argv: (c) => run(c, '--promote', 'mine', '--', 'sh', '-c', 'echo mine > mine.txt'),
		outcome: {
			root: usage125(/^scratch: store .* belongs to uid 65534.*--store DIR$/),
			nobody: usage125(
				/^scratch: cannot open store .*: permission denied; use a store you own with --store DIR or SCRATCH_STORE$/,
			),
		},
	},
	{
		category: 'stores',
		title: "ls of another user's store",
		store: 'none',
		setup: async (c) => {
			await copyPopulatedStore(c.otherUser, c.store);
		},
		argv: (c) => ['ls', '--store', c.store],
		outcome: {
			// Root may read any store (test/names.test.ts relies on it); reading changes nothing.
			root: {status: 0, stdout: /^NAME +LAYER .*\napp +/},
			nobody: {
				status: 1,
				stderr: /^scratch: cannot open store .*: permission denied; use a store you own .*$/,
			},
		},
	},
	{
		category: 'stores',
		title: 'a file where the store should be, for ls',
		store: 'none',
		setup(c) {
			writeFileSync(c.store, 'not a store\n');
			c.own(c.store);
		},
		argv: (c) => ['ls', '--store', c.store],
		outcome: {
			status: 1,
			stderr: /^scratch: no scratch store at .*\/store; pass the right one with --store DIR$/,
		},
	},
	{
		category: 'stores',
		title: 'a file where the store should be, for ws init',
		store: 'none',
		setup(c) {
			writeFileSync(c.store, 'not a store\n');
			c.own(c.store);
		},
		argv: (c) => ['ws', 'init', 'dev', '--store', c.store, '--src', c.src],
		outcome: {
			status: 1,
			stderr: /^scratch: store .*\/store is not a directory; pass a directory with --store DIR$/,
		},
	},
	{
		category: 'stores',
		title: 'a directory of other files as the store',
		store: 'none',
		setup(c) {
			mkdirSync(c.store);
			writeFileSync(path.join(c.store, 'precious.txt'), 'keep me\n');
			c.own(c.store);
		},
		argv: (c) => run(c, '--', 'true'),
		outcome: usage125(
			/^scratch: .*\/store is not a scratch store: it holds other files and no scratch-store\.json; pass an empty or new directory with --store DIR$/,
		),
	},
	...(['run', 'ls'] as const).flatMap((command): HostileCase[] => [
		{
			category: 'stores',
			title: `${command} in a store with a damaged scratch-store.json`,
			store: 'populated',
			setup: (c) => writeFileSync(path.join(c.store, 'scratch-store.json'), '{"scratchStore": 1, "layerF'),
			argv: (c) => (command === 'run' ? run(c, '--', 'true') : ['ls', '--store', c.store]),
			outcome: {
				status: command === 'run' ? 125 : 1,
				stderr:
					/^scratch: store .* has a damaged scratch-store\.json; move the directory aside and let scratch create a new store$/,
			},
		},
		{
			category: 'stores',
			title: `${command} in a store recorded with another format`,
			store: 'populated',
			setup: (c) =>
				writeFileSync(
					path.join(c.store, 'scratch-store.json'),
					'{"scratchStore": 2, "layerFormat": "overlay-v9"}\n',
				),
			argv: (c) => (command === 'run' ? run(c, '--', 'true') : ['ls', '--store', c.store]),
			outcome: {
				status: command === 'run' ? 125 : 1,
				stderr:
					/^scratch: store .* has format 2\/overlay-v9, this scratch uses 1\/overlay-userxattr-1 or 1\/whiteout-files-1; use another --store$/,
			},
		},
	]),
	{
		category: 'stores',
		title: 'run --base of a name whose file is damaged',
		store: 'populated',
		setup: (c) => writeFileSync(path.join(c.store, 'refs', populated.name), 'garbage\n'),
		argv: (c) => run(c, '--base', populated.name, '--', 'true'),
		outcome: usage125(
			/^scratch: name app in store .* is damaged: .*\/refs\/app does not hold a layer id; delete that file and name the layer again \(scratch ls, scratch tag\)$/,
		),
	},
	{
		category: 'stores',
		title: 'ls of a store with a name file that holds no layer',
		store: 'populated',
		setup: (c) => writeFileSync(path.join(c.store, 'refs', populated.name), '{"updated": "2026-01-01"}\n'),
		argv: (c) => ['ls', '--store', c.store],
		outcome: {
			status: 1,
			stderr:
				/^scratch: name app in store .* is damaged: .*\/refs\/app does not hold a layer id; delete that file and name the layer again \(scratch ls, scratch tag\)$/,
		},
	},
	{
		category: 'stores',
		title: 'run --base of a name whose layer is missing',
		store: 'populated',
		setup: (c) => writeFileSync(path.join(c.store, 'refs', populated.name), '{"layer": "zzzzzz"}\n'),
		argv: (c) => run(c, '--base', populated.name, '--', 'true'),
		outcome: usage125(
			/^scratch: layer zzzzzz \(reached from name app\) is missing from store .*; the store is damaged: remove that name with scratch rm$/,
		),
	},
	{
		category: 'stores',
		title: 'run --base of a name whose layer record is damaged, and the rm and gc it advises',
		store: 'populated',
		setup: damageLayerRecord,
		argv: (c) => run(c, '--base', populated.name, '--', 'true'),
		outcome: usage125(
			/^scratch: the record of layer [a-z\d]{6} in store .* is damaged \(.+\); remove the names that reach it \(scratch rm app\), then scratch gc frees it$/,
		),
		remedy: (c) => [
			['rm', '--store', c.store, populated.name],
			['gc', '--store', c.store],
		],
	},
	{
		category: 'stores',
		title: 'ls of a store with a damaged layer record',
		store: 'populated',
		setup: damageLayerRecord,
		argv: (c) => ['ls', '--store', c.store],
		outcome: {
			status: 1,
			stderr:
				/^scratch: the record of layer [a-z\d]{6} in store .* is damaged \(.+\); remove the names that reach it.*, then scratch gc frees it$/,
		},
	},
	{
		category: 'stores',
		title: 'ws run in a workspace whose record is damaged, and the scrub it advises',
		store: 'populated',
		setup: (c) =>
			writeFileSync(
				path.join(c.store, 'workspaces', populated.workspace, 'workspace.json'),
				'{"name": "WS", "st',
			),
		argv: (c) => ['ws', 'run', populated.workspace, '--store', c.store, '--', 'true'],
		outcome: usage125(/^scratch: workspace WS's record is damaged; remove it with scratch ws scrub WS$/),
		remedy: (c) => [['ws', 'scrub', populated.workspace, '--store', c.store]],
	},
	{
		category: 'stores',
		title: 'run --base of a name whose file belongs to another user',
		store: 'populated',
		setup(c) {
			const file = path.join(c.store, 'refs', populated.name);
			const id = c.otherUser === 'root' ? 0 : nobodyId;
			chownSync(file, id, id);
		},
		argv: (c) => run(c, '--base', populated.name, '--', 'true'),
		outcome: {
			// Root reads any file: the run works and changes nothing.
			root: {status: 0, runStarted: true},
			nobody: usage125(
				/^scratch: cannot read name app in store .*: permission denied on .*\/refs\/app; run scratch as the user who owns the store, or give the whole store back to that user with chown -R$/,
			),
		},
	},

	// Environment.
	{
		category: 'environment',
		title: 'a host without user namespaces, with the default backend',
		store: 'populated',
		setup(c) {
			c.launcher = {kind: 'no-user-namespaces'};
		},
		argv: (c) => run(c, '--', 'true'),
		outcome: {
			// Root needs no user namespace: the kernel backend works.
			root: {status: 0, runStarted: true},
			nobody: usage125(
				/^scratch: no backend can isolate a run on this host \(userns: user namespaces are disabled \(user\.max_user_namespaces = 0\); raise it with sysctl; fuse: .+\); scratch never runs without isolation$/,
			),
		},
	},
	{
		category: 'environment',
		title: 'a host without user namespaces, with --backend userns',
		store: 'none',
		setup(c) {
			c.launcher = {kind: 'no-user-namespaces'};
		},
		argv: (c) => run(c, '--backend', 'userns', '--', 'true'),
		outcome: usage125(
			/^scratch: backend userns cannot run here: user namespaces are disabled \(user\.max_user_namespaces = 0\); raise it with sysctl; (?:try --backend kernel or --backend fuse|run scratch doctor to see what works here)$/,
		),
	},
	{
		category: 'environment',
		title: 'ws init on a host without user namespaces',
		store: 'none',
		setup(c) {
			c.launcher = {kind: 'no-user-namespaces'};
		},
		argv: (c) => [
			'ws',
			'init',
			'dev',
			'--store',
			c.store,
			'--src',
			c.src,
			'--backend',
			'userns',
			'--',
			'true',
		],
		outcome: {
			status: 1,
			stderr:
				/^scratch: backend userns cannot run here: user namespaces are disabled \(user\.max_user_namespaces = 0\); raise it with sysctl; .+$/,
		},
	},
	{
		category: 'environment',
		title: '--backend kernel without root',
		store: 'populated',
		argv: (c) => run(c, '--backend', 'kernel', '--', 'true'),
		outcome: {
			root: {status: 0, runStarted: true},
			nobody: usage125(
				/^scratch: backend kernel cannot run here: the kernel backend needs root \(you are uid 65534\); try --backend (?:userns|fuse)(?: or --backend fuse)?$/,
			),
		},
	},
];

const cases: HostileCase[] = [...nameCases(), ...otherCases];

// ---------------------------------------------------------------------------------------------------

function outcomeFor(row: HostileCase, user: User): Outcome {
	return 'status' in row.outcome ? (row.outcome as Outcome) : (row.outcome as Record<User, Outcome>)[user];
}

function describeResult(result: {exitCode?: number | undefined; stdout: unknown; stderr: unknown}): string {
	return `status ${String(result.exitCode)}, stderr ${JSON.stringify(String(result.stderr))}, stdout ${JSON.stringify(String(result.stdout).slice(0, 300))}`;
}

async function checkCase(t: ExecutionContext, row: HostileCase, user: User): Promise<void> {
	const sandbox = makeSandbox(t, user);
	const context: CaseContext = {
		user,
		otherUser: user === 'root' ? 'nobody' : 'root',
		sandbox,
		src: sandbox.src,
		store: sandbox.store,
		observedStore: sandbox.store,
		launcher: {kind: 'plain'},
		ignore: [],
		at: (relative) => path.join(sandbox.root, relative),
		own(...paths) {
			if (user === 'nobody') {
				for (const entry of paths) {
					if (lstatSync(entry).isDirectory()) {
						chownTree(entry, nobodyId);
					} else {
						lchownSync(entry, nobodyId, nobodyId);
					}
				}
			}
		},
	};
	if (row.store === 'populated') {
		await copyPopulatedStore(user, sandbox.store);
	}

	await row.setup?.(context);
	const outcome = outcomeFor(row, user);
	const storeExisted = existsSync(context.observedStore);
	const before = snapshotOf(sandbox.root, {
		store: context.observedStore,
		runs: outcome.runStarted,
		ignore: context.ignore,
	});
	const sourceBefore = snapshotOf(context.src, {store: context.observedStore});

	const result = await launch(user, row.argv(context), context.launcher, sandbox.root);
	const stderr = String(result.stderr);
	if (row.knownFailure?.users.includes(user)) {
		t.log(`known product failure, got ${describeResult(result)}; fix: ${row.knownFailure.fix}`);
	}

	t.is(result.exitCode, outcome.status, describeResult(result));
	if (outcome.stderr) {
		t.regex(
			stderr,
			/^scratch: [^\n]+$/,
			`exactly one line, starting with "scratch: ": ${JSON.stringify(stderr)}`,
		);
		t.regex(stderr, outcome.stderr);
	} else {
		t.is(stderr, '', 'a run that works says nothing');
	}

	if (outcome.stdout) {
		t.regex(String(result.stdout), outcome.stdout);
	} else if (outcome.stderr) {
		t.is(String(result.stdout), '', 'nothing on stdout');
	}

	if (outcome.runStarted) {
		t.true(
			await eventually(() => storeLeftovers(context.observedStore).length === 0, 10_000),
			`the run's leftovers are deleted: ${storeLeftovers(context.observedStore).join(', ')}`,
		);
	}

	t.deepEqual(hostMountsUnder(sandbox.root), [], 'no mount is left under the sandbox');
	t.true(
		await eventually(() => processesWith(sandbox.root).length === 0, 10_000),
		`no process is left: ${processesWith(sandbox.root).join(', ')}`,
	);
	t.deepEqual(
		snapshotOf(context.src, {store: context.observedStore}),
		sourceBefore,
		'the source tree is unchanged',
	);
	if (!outcome.changesStore) {
		t.deepEqual(
			snapshotOf(sandbox.root, {
				store: context.observedStore,
				runs: outcome.runStarted,
				ignore: context.ignore,
			}),
			before,
			'nothing under the sandbox changed (store included)',
		);
		t.is(
			existsSync(context.observedStore),
			storeExisted,
			storeExisted ? 'the store still exists' : 'the store still does not exist',
		);
	}

	for (const step of row.remedy?.(context) ?? []) {
		const remedy = await launch(user, step, context.launcher, sandbox.root);
		t.is(
			remedy.exitCode,
			0,
			`what the line says to do works: scratch ${step.join(' ')}: ${describeResult(remedy)}`,
		);
	}
}

test('the suite enumerates at least 40 distinct hostile-input cases, each run as root and as nobody', (t) => {
	const titles = cases.map((row) => `${row.category}: ${row.title}`);
	t.is(new Set(titles).size, titles.length, 'every case is distinct');
	const byCategory = new Map<Category, number>();
	for (const row of cases) {
		byCategory.set(row.category, (byCategory.get(row.category) ?? 0) + 1);
	}

	const known = users.flatMap((user) =>
		cases.filter((row) => row.knownFailure?.users.includes(user)).map((row) => `${row.title} (${user})`),
	);
	t.log(
		`${cases.length} distinct cases, ${cases.length * users.length} runs (${[...byCategory].map(([category, count]) => `${category} ${count}`).join(', ')}); ${known.length} runs are known product failures`,
	);
	t.true(cases.length >= 40, `${cases.length} cases`);
	t.deepEqual(
		[...byCategory.keys()].sort(),
		['commands', 'environment', 'flags', 'names', 'paths', 'stores'],
		'every category of issue 7 is covered',
	);
});

for (const row of cases) {
	for (const user of users) {
		const title = `${row.category}: ${row.title} (${user})`;
		const implementation = async (t: ExecutionContext) => checkCase(t, row, user);
		if (row.knownFailure?.users.includes(user)) {
			test.serial.failing(title, implementation);
		} else {
			test.serial(title, implementation);
		}
	}
}
