import {existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import test, {type ExecutionContext} from 'ava';
import {execa} from 'execa';
import {promoteLayer} from './helpers/layers.js';
import {
	chownTree,
	eventually,
	fingerprintTree,
	hostMountsUnder,
	makeSandbox,
	nobodyId,
	type Sandbox,
	scratch,
	scratchRun,
	storeLeftovers,
	type User,
	users,
} from './helpers/scratch.js';

type LayerJson = {id: string; parent: string | null; lowers: string[]; command: string[]; exitCode: number};
type GcJson = {dryRun: boolean; layers: string[]; halfMadeLayers: string[]; bytesFreed: number};

/** What `sh -c SCRIPT` prints over the given bases; the run must succeed. */
async function outputOver(t: ExecutionContext, sandbox: Sandbox, bases: string[], script: string) {
	const result = await scratchRun(sandbox, [
		...bases.flatMap((base) => ['--base', base]),
		'--',
		'sh',
		'-c',
		script,
	]);
	t.is(result.exitCode, 0, `--base ${bases.join(' --base ')}: ${String(result.stderr)}`);
	return String(result.stdout);
}

function store(sandbox: Sandbox, ...args: string[]) {
	return scratch(sandbox, [...args, '--store', sandbox.store]);
}

async function gc(t: ExecutionContext, sandbox: Sandbox, ...flags: string[]): Promise<GcJson> {
	const result = await store(sandbox, 'gc', '--json', ...flags);
	t.is(result.exitCode, 0, String(result.stderr));
	return JSON.parse(String(result.stdout)) as GcJson;
}

/** Layer trees in the store, sorted. */
function layerDirectories(sandbox: Sandbox): string[] {
	const layers = path.join(sandbox.store, 'layers');
	return existsSync(layers)
		? readdirSync(layers)
				.filter((name) => lstatSync(path.join(layers, name)).isDirectory())
				.sort()
		: [];
}

function layerRecord(sandbox: Sandbox, id: string): LayerJson {
	return JSON.parse(readFileSync(path.join(sandbox.store, 'layers', `${id}.json`), 'utf8')) as LayerJson;
}

function refTarget(sandbox: Sandbox, name: string): string | undefined {
	const file = path.join(sandbox.store, 'refs', name.replaceAll('/', '+'));
	return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as {layer: string}).layer : undefined;
}

async function noLeftovers(t: ExecutionContext, sandbox: Sandbox): Promise<void> {
	t.deepEqual(hostMountsUnder(sandbox.root), []);
	t.true(
		await eventually(() => storeLeftovers(sandbox.store).length === 0, 20_000),
		storeLeftovers(sandbox.store).join(),
	);
}

function keptRunId(stderr: unknown): string {
	return /scratch: kept run ([a-z\d]{12});/.exec(String(stderr))?.[1] ?? '';
}

async function xattr(file: string, name: string): Promise<string> {
	const result = await execa('getfattr', ['--only-values', '--absolute-names', '-n', name, file], {
		reject: false,
	});
	return String(result.stdout);
}

// Everything a layer must carry over: new, changed, deleted and re-created entries, links, modes, xattrs.
const writeEverything = `set -e
echo new > new.txt
echo changed > README.md
rm gone.txt
rm -r rmdir
rm -r olddir && mkdir olddir && echo fresh > olddir/fresh
ln -s new.txt link
ln -s ../README.md lib/uplink
echo shared > h1 && ln h1 h2
chmod 700 lib/code.c
echo private > private && chmod 640 private
echo suid > suid && chmod 4755 suid
setfattr -n user.k -v v new.txt
: > empty
mkdir -p a/b/c/d/e && echo deep > a/b/c/d/e/f
mkdir emptydir`;

const readEverything = `set -e
cat new.txt README.md olddir/fresh a/b/c/d/e/f
ls -A olddir
test ! -e gone.txt && test ! -L gone.txt && echo gone-ok
test ! -e rmdir && echo rmdir-ok
readlink link lib/uplink
cat link lib/uplink
stat -c '%h' h1 h2
test "$(stat -c %i h1)" = "$(stat -c %i h2)" && echo same-inode
stat -c '%a %n' lib/code.c private suid
getfattr --only-values -n user.k new.txt; echo
stat -c '%s %F' empty
ls -A emptydir | wc -l
find . | sort`;

const everythingSeen = [
	'new',
	'changed',
	'fresh',
	'deep',
	'fresh',
	'gone-ok',
	'rmdir-ok',
	'new.txt',
	'../README.md',
	'new',
	'changed',
	'2',
	'2',
	'same-inode',
	'700 lib/code.c',
	'640 private',
	'4755 suid',
	'v',
	'0 regular empty file',
	'0',
	'.',
	'./README.md',
	'./a',
	'./a/b',
	'./a/b/c',
	'./a/b/c/d',
	'./a/b/c/d/e',
	'./a/b/c/d/e/f',
	'./empty',
	'./emptydir',
	'./h1',
	'./h2',
	'./lib',
	'./lib/code.c',
	'./lib/deep',
	'./lib/deep/x.txt',
	'./lib/uplink',
	'./link',
	'./new.txt',
	'./olddir',
	'./olddir/fresh',
	'./private',
	'./suid',
];

for (const user of users) {
	test(`a promoted layer carries new files, deletions, opaque dirs, links, modes and xattrs to runs on it (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user, {
			'gone.txt': 'gone\n',
			'rmdir/r': 'r\n',
			'olddir/keep': 'keep\n',
			'olddir/sub/old': 'old\n',
		});
		const before = fingerprintTree(sandbox.src);
		const id = await promoteLayer(t, sandbox, 'everything', writeEverything);
		t.deepEqual(fingerprintTree(sandbox.src), before);
		t.deepEqual(refTarget(sandbox, 'everything'), id);
		t.like(layerRecord(sandbox, id), {id, parent: null, lowers: [], exitCode: 0});

		// The layer is in overlay upper format with user xattrs: 0/0 whiteouts, an opaque marker.
		const tree = path.join(sandbox.store, 'layers', id);
		for (const deleted of ['gone.txt', 'rmdir']) {
			const info = lstatSync(path.join(tree, deleted));
			t.true(info.isCharacterDevice() && info.rdev === 0, deleted);
		}

		t.is(await xattr(path.join(tree, 'olddir'), 'user.overlay.opaque'), 'y');
		t.is(lstatSync(path.join(tree, 'new.txt')).uid, user === 'root' ? 0 : nobodyId);

		const layerBefore = fingerprintTree(tree);
		t.deepEqual(
			String(await outputOver(t, sandbox, ['everything'], readEverything)).split('\n'),
			everythingSeen,
		);
		// A run on the layer writes to its own upper: the layer never changes.
		await outputOver(
			t,
			sandbox,
			['everything'],
			'echo more >> new.txt; rm -r olddir a; rm h1; chmod 600 suid',
		);
		t.deepEqual(fingerprintTree(tree), layerBefore);
		t.deepEqual(
			String(await outputOver(t, sandbox, ['everything'], readEverything)).split('\n'),
			everythingSeen,
		);

		t.deepEqual(fingerprintTree(sandbox.src), before);
		await noLeftovers(t, sandbox);
	});

	test(`a chain of layers stacks in order: later layers override and delete what earlier ones wrote (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const before = fingerprintTree(sandbox.src);
		const l1 = await promoteLayer(t, sandbox, 'L1', 'echo 1 > f; echo 1 > one; mkdir d; echo x > d/x');
		const l2 = await promoteLayer(t, sandbox, 'L2', 'test "$(cat f)" = 1; echo 2 > f; rm one; echo 2 > two', [
			'L1',
		]);
		const l3 = await promoteLayer(t, sandbox, 'ws/L3', 'test ! -e one; echo 3 > three; rm -r d lib/deep', [
			'L2',
		]);

		t.is(
			await outputOver(t, sandbox, ['ws/L3'], 'cat f two three README.md; ls -A; ls -A lib'),
			['2', '2', '3', '# fixture', 'README.md', 'f', 'lib', 'three', 'two', 'code.c'].join('\n'),
		);
		t.is(
			await outputOver(t, sandbox, ['L2'], 'cat f one d/x 2>&1; ls -A'),
			['2', 'cat: one: No such file or directory', 'x', 'README.md', 'd', 'f', 'lib', 'two'].join('\n'),
		);

		t.like(layerRecord(sandbox, l1), {parent: null, lowers: []});
		t.like(layerRecord(sandbox, l2), {parent: l1, lowers: [l1]});
		t.like(layerRecord(sandbox, l3), {parent: l2, lowers: [l1, l2]});
		const inspected = await store(sandbox, 'inspect', 'ws/L3', '--json');
		t.is(inspected.exitCode, 0, String(inspected.stderr));
		const details = JSON.parse(String(inspected.stdout)) as {
			layer: LayerJson;
			names: string[];
			chain: Array<{id: string; names: string[]; command: string[]}>;
		};
		t.like(details.layer, {id: l3, parent: l2, lowers: [l1, l2]});
		t.deepEqual(details.names, ['ws/L3']);
		t.deepEqual(
			details.chain.map(({id, names}) => [id, names]),
			[
				[l1, ['L1']],
				[l2, ['L2']],
				[l3, ['ws/L3']],
			],
		);
		t.deepEqual(details.chain[0]?.command, ['sh', '-c', 'echo 1 > f; echo 1 > one; mkdir d; echo x > d/x']);
		// Every chain entry's parent is the entry below it.
		for (const [index, entry] of details.chain.entries()) {
			t.is(layerRecord(sandbox, entry.id).parent, details.chain[index - 1]?.id ?? null);
		}

		const human = await store(sandbox, 'inspect', l3);
		t.is(human.exitCode, 0, String(human.stderr));
		const chainLines = String(human.stdout).split('chain (top first):\n')[1]?.trimEnd().split('\n') ?? [];
		t.deepEqual(
			chainLines
				.map((line) => line.trim().split(/\s+/))
				.map((cells) => (cells[0] === '*' ? cells.slice(0, 3) : cells.slice(0, 2))),
			[
				['*', l3, 'ws/L3'],
				[l2, 'L2'],
				[l1, 'L1'],
			],
		);

		// Naming a layer and its own lower stacks the lower once.
		const summary = path.join(sandbox.root, 'summary.json');
		const both = await scratchRun(sandbox, [
			'--base',
			'L1',
			'--base',
			'ws/L3',
			'--json-file',
			summary,
			'--',
			'cat',
			'f',
		]);
		t.is(both.exitCode, 0, String(both.stderr));
		t.is(String(both.stdout), '2');
		t.deepEqual((JSON.parse(readFileSync(summary, 'utf8')) as {layers: string[]}).layers, [l1, l2, l3]);
		t.deepEqual(fingerprintTree(sandbox.src), before);
		await noLeftovers(t, sandbox);
	});

	test(`unrelated bases stack in the order given, the later one winning, and a layer made on them records both (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const a = await promoteLayer(t, sandbox, 'A', 'echo A > f; echo A > a; rm README.md');
		const b = await promoteLayer(t, sandbox, 'B', 'echo B > f; echo B > b');
		t.is(await outputOver(t, sandbox, ['A', 'B'], 'cat f a b; ls -A'), 'B\nA\nB\na\nb\nf\nlib');
		t.is(await outputOver(t, sandbox, ['B', 'A'], 'cat f a b; ls -A'), 'A\nA\nB\na\nb\nf\nlib');

		const c = await promoteLayer(t, sandbox, 'C', 'echo C > c; echo C2 > a', ['A', 'B']);
		t.like(layerRecord(sandbox, c), {parent: b, lowers: [a, b]});
		t.is(await outputOver(t, sandbox, ['C'], 'cat f a b c'), 'B\nC2\nB\nC');
		await noLeftovers(t, sandbox);
	});

	test(`a failed command is not promoted: its status is kept and the name is unchanged or absent (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const failed = await scratchRun(sandbox, ['--promote', 'L1', '--', 'sh', '-c', 'echo new > f; exit 3']);
		t.is(failed.exitCode, 3);
		t.regex(
			String(failed.stderr),
			/^scratch: not promoted to L1: the command exited with status 3; L1 is unchanged$/m,
		);
		t.is(refTarget(sandbox, 'L1'), undefined);
		t.deepEqual(layerDirectories(sandbox), []);
		const inspect = await store(sandbox, 'inspect', 'L1');
		t.is(inspect.exitCode, 1);

		const old = await promoteLayer(t, sandbox, 'L1', 'echo old > f');
		const again = await scratchRun(sandbox, ['--promote', 'L1', '--', 'sh', '-c', 'echo new > f; exit 3']);
		t.is(again.exitCode, 3);
		t.regex(String(again.stderr), /not promoted to L1: the command exited with status 3; L1 is unchanged/);
		const killed = await scratchRun(sandbox, [
			'--promote',
			'L1',
			'--',
			'sh',
			'-c',
			'echo new > f; kill -KILL $$',
		]);
		t.is(killed.exitCode, 137);
		t.regex(String(killed.stderr), /not promoted to L1: the command exited with status 137/);
		t.is(refTarget(sandbox, 'L1'), old);
		t.deepEqual(layerDirectories(sandbox), [old]);
		t.is(await outputOver(t, sandbox, ['L1'], 'cat f'), 'old');
		t.deepEqual(readdirSync(path.join(sandbox.store, 'kept')), []);
		await noLeftovers(t, sandbox);
	});

	test(`--keep with --promote keeps a failed run for a later promote, and promotes a successful one without keeping it (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const failed = await scratchRun(sandbox, [
			'--keep',
			'--promote',
			'L1',
			'--',
			'sh',
			'-c',
			'echo new > f; exit 3',
		]);
		t.is(failed.exitCode, 3);
		t.regex(String(failed.stderr), /not promoted to L1: the command exited with status 3; L1 is unchanged/);
		const runId = keptRunId(failed.stderr);
		t.truthy(runId, String(failed.stderr));
		t.is(readFileSync(path.join(sandbox.store, 'kept', runId, 'upper', 'f'), 'utf8'), 'new\n');
		t.is(refTarget(sandbox, 'L1'), undefined);

		const promoted = await store(sandbox, 'promote', runId, 'L1');
		t.is(promoted.exitCode, 0, String(promoted.stderr));
		const id = refTarget(sandbox, 'L1') ?? '';
		t.is(String(promoted.stdout), `promoted run ${runId} as L1 (layer ${id}: sh -c 'echo new > f; exit 3')`);
		t.like(layerRecord(sandbox, id), {exitCode: 3, parent: null});
		t.is(await outputOver(t, sandbox, ['L1'], 'cat f'), 'new');

		const succeeded = await scratchRun(sandbox, [
			'--keep',
			'--promote',
			'L2',
			'--base',
			'L1',
			'--',
			'sh',
			'-c',
			'echo 2 >> f',
		]);
		t.is(succeeded.exitCode, 0, String(succeeded.stderr));
		t.is(keptRunId(succeeded.stderr), '', 'a promoted run is not also kept');
		t.like(layerRecord(sandbox, refTarget(sandbox, 'L2') ?? ''), {parent: id, lowers: [id]});
		t.deepEqual(readdirSync(path.join(sandbox.store, 'kept')), []);
		t.is(await outputOver(t, sandbox, ['L2'], 'cat f'), 'new\n2');
		await noLeftovers(t, sandbox);
	});

	test(`promoting to an existing name moves it to the new layer, and gc frees the old one (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const old = await promoteLayer(t, sandbox, 'deps', 'echo old > f; echo old > only-old');
		const tagged = await store(sandbox, 'tag', 'deps', 'pinned');
		t.is(tagged.exitCode, 0, String(tagged.stderr));
		const next = await promoteLayer(t, sandbox, 'deps', 'echo new > f');
		t.not(next, old);
		t.is(refTarget(sandbox, 'deps'), next);
		t.deepEqual(readdirSync(path.join(sandbox.store, 'refs')).sort(), ['deps', 'pinned']);
		t.is(await outputOver(t, sandbox, ['deps'], 'cat f; test ! -e only-old && echo clean'), 'new\nclean');

		// Still reachable through the tag.
		t.like(await gc(t, sandbox), {layers: []});
		t.deepEqual(layerDirectories(sandbox), [old, next].sort());
		const third = await promoteLayer(t, sandbox, 'deps', 'echo third > f');
		const removed = await store(sandbox, 'rm', 'pinned');
		t.is(removed.exitCode, 0, String(removed.stderr));
		const report = await gc(t, sandbox);
		t.deepEqual(report.layers.sort(), [old, next].sort());
		t.true(report.bytesFreed > 0);
		t.deepEqual(layerDirectories(sandbox), [third]);
		t.is(await outputOver(t, sandbox, ['deps'], 'cat f'), 'third');

		// Promoting onto the name of its own base: the old layer lives on as the new one's lower.
		const fourth = await promoteLayer(t, sandbox, 'deps', 'echo fourth >> f', ['deps']);
		t.like(layerRecord(sandbox, fourth), {parent: third, lowers: [third]});
		t.like(await gc(t, sandbox), {layers: []});
		t.deepEqual(layerDirectories(sandbox), [third, fourth].sort());
		t.is(await outputOver(t, sandbox, ['deps'], 'cat f'), 'third\nfourth');
		const inspectOld = await store(sandbox, 'inspect', old);
		t.is(inspectOld.exitCode, 1, 'the old layer is gone for good');
		await noLeftovers(t, sandbox);
	});

	test(`a run kept with --keep becomes a layer with scratch promote, and runs stack on it (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const base = await promoteLayer(t, sandbox, 'base', 'echo base > b');
		const kept = await scratchRun(sandbox, [
			'--base',
			'base',
			'--keep',
			'--',
			'sh',
			'-c',
			'echo kept > k; rm README.md',
		]);
		t.is(kept.exitCode, 0, String(kept.stderr));
		const runId = keptRunId(kept.stderr);
		t.regex(runId, /^[a-z\d]{12}$/, String(kept.stderr));

		const promoted = await store(sandbox, 'promote', runId, 'ws/kept', '--json');
		t.is(promoted.exitCode, 0, String(promoted.stderr));
		const promotion = JSON.parse(String(promoted.stdout)) as {
			layer: LayerJson;
			ref: {name: string; layer: string};
		};
		t.like(promotion, {layer: {parent: base, lowers: [base], exitCode: 0}, ref: {name: 'ws/kept'}});
		t.is(promotion.ref.layer, promotion.layer.id);
		t.is(refTarget(sandbox, 'ws/kept'), promotion.layer.id);
		t.deepEqual(readdirSync(path.join(sandbox.store, 'kept')), []);
		t.is(await outputOver(t, sandbox, ['ws/kept'], 'cat b k; ls -A'), 'base\nkept\nb\nk\nlib');

		const twice = await store(sandbox, 'promote', runId, 'other');
		t.is(twice.exitCode, 1);
		t.regex(String(twice.stderr), new RegExp(`^scratch: no kept run ${runId} in store [^\\n]+\\n?$`));
		for (const unknown of ['nosuchrun000', '..', '../layers']) {
			const result = await store(sandbox, 'promote', unknown, 'other');
			t.is(result.exitCode, 1, unknown);
			t.regex(
				String(result.stderr),
				/^scratch: no kept run [^\n]+; keep one with scratch run --keep[^\n]*\n?$/,
			);
		}

		t.is(refTarget(sandbox, 'other'), undefined);
		await noLeftovers(t, sandbox);
	});

	test(`a kept run's base survives gc after its name is removed (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const base = await promoteLayer(t, sandbox, 'base', 'echo base > b');
		const kept = await scratchRun(sandbox, ['--base', 'base', '--keep', '--', 'sh', '-c', 'echo kept > k']);
		t.is(kept.exitCode, 0, String(kept.stderr));
		const runId = keptRunId(kept.stderr);
		t.is((await store(sandbox, 'rm', 'base')).exitCode, 0);
		t.like(await gc(t, sandbox), {layers: []});
		t.deepEqual(layerDirectories(sandbox), [base]);

		t.is((await store(sandbox, 'promote', runId, 'after')).exitCode, 0);
		t.is(await outputOver(t, sandbox, ['after'], 'cat b k'), 'base\nkept');
		t.is((await store(sandbox, 'rm', 'after')).exitCode, 0);
		const report = await gc(t, sandbox);
		t.is(report.layers.length, 2);
		t.deepEqual(layerDirectories(sandbox), []);
		await noLeftovers(t, sandbox);
	});

	test(`a live run's base survives gc while the run goes on, and the next gc after it frees it (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const base = await promoteLayer(t, sandbox, 'base', 'echo base > b');
		const run = scratch(
			sandbox,
			[
				'run',
				'--store',
				sandbox.store,
				'--src',
				sandbox.src,
				'--base',
				'base',
				'--',
				'sh',
				'-c',
				'echo ready; read go; cat b; echo "$go"',
			],
			{stdin: 'pipe'},
		);
		let output = '';
		run.stdout?.on('data', (chunk: Buffer) => {
			output += chunk.toString();
		});
		t.true(await eventually(() => output.startsWith('ready'), 20_000), output);

		t.is((await store(sandbox, 'rm', 'base')).exitCode, 0);
		t.like(await gc(t, sandbox), {layers: []});
		t.deepEqual(layerDirectories(sandbox), [base]);

		run.stdin?.end('go\n');
		const result = await run;
		t.is(result.exitCode, 0, String(result.stderr));
		t.is(String(result.stdout), 'ready\nbase\ngo');

		const report = await gc(t, sandbox);
		t.deepEqual(report.layers, [base]);
		t.deepEqual(layerDirectories(sandbox), []);
		await noLeftovers(t, sandbox);
	});

	test(`gc --dry-run reports unreachable and half-made layers and changes nothing (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const doomed = await promoteLayer(t, sandbox, 'doomed', 'head -c 100000 /dev/zero > big');
		const kept = await promoteLayer(t, sandbox, 'kept', 'echo kept > k');
		t.is((await store(sandbox, 'rm', 'doomed')).exitCode, 0);
		// Half-made layers: a tree whose record never came, a record whose tree never came.
		const layers = path.join(sandbox.store, 'layers');
		writeFileSync(path.join(layers, 'yyyyyy.json'), '{}\n');
		const treeOnly = path.join(layers, 'zzzzzz');
		mkdirSync(path.join(treeOnly, 'inner'), {recursive: true});
		if (user === 'nobody') {
			chownTree(layers, nobodyId);
		}

		await noLeftovers(t, sandbox);
		// Everything but the holders' lock files, which gc takes whether it deletes or not.
		const listing = () =>
			(readdirSync(sandbox.store, {recursive: true}) as string[])
				.filter((name) => !name.startsWith('locks/'))
				.sort();
		const before = listing();
		const dry = await gc(t, sandbox, '--dry-run');
		t.like(dry, {dryRun: true, layers: [doomed], halfMadeLayers: ['yyyyyy', 'zzzzzz']});
		t.true(dry.bytesFreed >= 100_000, String(dry.bytesFreed));
		t.deepEqual(listing(), before);
		const human = await store(sandbox, 'gc', '--dry-run');
		t.regex(
			String(human.stdout),
			/^scratch gc: would free 1 unreachable layer, 2 half-made layers, .*; kept 1 reachable layer$/,
		);
		t.deepEqual(listing(), before);

		const real = await gc(t, sandbox);
		t.like(real, {dryRun: false, layers: [doomed], halfMadeLayers: ['yyyyyy', 'zzzzzz']});
		t.is(real.bytesFreed, dry.bytesFreed);
		t.deepEqual(readdirSync(layers).sort(), [kept, `${kept}.json`]);
		t.like(await gc(t, sandbox, '--dry-run'), {layers: [], halfMadeLayers: [], bytesFreed: 0});
		t.is(await outputOver(t, sandbox, ['kept'], 'cat k'), 'kept');
		await noLeftovers(t, sandbox);
	});
}

// Every order of removing the names of a two-layer chain, with gc after each removal.
const removalOrders: string[][] = [
	['n1', 'n2', 't2'],
	['n1', 't2', 'n2'],
	['n2', 'n1', 't2'],
	['n2', 't2', 'n1'],
	['t2', 'n1', 'n2'],
	['t2', 'n2', 'n1'],
];

async function removeInOrder(t: ExecutionContext, user: User, order: string[]): Promise<void> {
	const sandbox = makeSandbox(t, user);
	const l1 = await promoteLayer(t, sandbox, 'n1', 'echo 1 > f; echo 1 > one');
	const l2 = await promoteLayer(t, sandbox, 'n2', 'echo 2 > f; echo 2 > two', ['n1']);
	t.is((await store(sandbox, 'tag', 'n2', 't2')).exitCode, 0);
	const stacks: Record<string, string[]> = {n1: [l1], n2: [l1, l2], t2: [l1, l2]};
	const seen: Record<string, string> = {n1: '1\n1\n-', n2: '2\n1\n2', t2: '2\n1\n2'};
	const remaining = new Set(['n1', 'n2', 't2']);
	let present = [l1, l2].sort();
	for (const name of order) {
		const removed = await store(sandbox, 'rm', name);
		t.is(removed.exitCode, 0, String(removed.stderr));
		remaining.delete(name);
		const report = await gc(t, sandbox);
		const reachable = [...new Set([...remaining].flatMap((other) => stacks[other] ?? []))].sort();
		t.deepEqual(
			report.layers.sort(),
			present.filter((id) => !reachable.includes(id)),
			`after rm ${name}`,
		);
		t.deepEqual(layerDirectories(sandbox), reachable, `after rm ${name}`);
		present = reachable;
		for (const other of remaining) {
			t.is(
				await outputOver(t, sandbox, [other], 'cat f one; cat two 2>/dev/null || echo -'),
				seen[other] ?? '',
				`--base ${other} after rm ${name}`,
			);
		}
	}

	t.deepEqual(readdirSync(path.join(sandbox.store, 'layers')), []);
	await noLeftovers(t, sandbox);
}

for (const user of users) {
	for (const order of removalOrders) {
		test(`removing the names of a chain in the order ${order.join(', ')} frees each layer only when no name reaches it, even as a lower (${user})`, async (t) => {
			await removeInOrder(t, user, order);
		});
	}
}
