import {existsSync, readdirSync, readFileSync, statSync} from 'node:fs';
import path from 'node:path';
import test, {type ExecutionContext} from 'ava';
import type {WorkspaceReset, WorkspaceSnapshot, WorkspaceSnapshots} from '../src/workspace/workspaces.js';
import {
	eventually,
	fingerprintTree,
	hostMountsUnder,
	makeSandbox,
	type Sandbox,
	scratch,
	storeLeftovers,
	type User,
} from './helpers/scratch.js';
import {checkStoreConsistency, completeLayers, refTarget} from './helpers/store-check.js';
import {viewOf, ws, wsJson} from './helpers/workspaces.js';

/*
Long sequences of workspace operations checked against a small reference model. After every step the
next run's view must be the model's, `ws snapshots` must mark exactly the names of the current layer,
and the complete layers on disk must be exactly those reachable from the workspace's names and its
current stack (with their lowers): `ws rm` frees what nothing reaches any more, rollback and clean
create no layer, a snapshot with no writes since the last one names the current layer (lazy). An
operation that is invalid in a state (a removed name, an existing name) fails with exit status 1 and
one line on stderr, and changes nothing.
*/

const workspace = 'dev';

/** A tree as the model knows it: path to content (without its newline); directories end in '/'. */
type Content = Map<string, string>;

const sourceFiles = {'a.txt': 'a\n', 'b.txt': 'b\n', 'c.txt': 'c\n'};

/** The sandbox's source: makeSandbox's files and `sourceFiles`. */
const sourceContent: Content = new Map([
	['README.md', '# fixture'],
	['a.txt', 'a'],
	['b.txt', 'b'],
	['c.txt', 'c'],
	['lib/', ''],
	['lib/code.c', 'int main(void) { return 0; }'],
	['lib/deep/', ''],
	['lib/deep/x.txt', 'x'],
]);

/** `viewOf`'s listing of a tree. */
function viewLines(content: Content): string[] {
	return [...content].map(([entry, text]) => (entry.endsWith('/') ? entry : `${entry} f ${text}`)).sort();
}

/** An operation as sequences name it; the model resolves it to a concrete one in the current state. */
type Kind =
	| 'run'
	| 'snapshot'
	| 'resnapshot'
	| 'rollback'
	| 'rollback-postinit'
	| 'rollback-any'
	| 'clean'
	| 'rm'
	| 'rm-postinit'
	| 'rm-any'
	| 'rm-other';

/*
The core kinds, each a different relation to the model's state: a run writes a new file and deletes or
changes an earlier one; snapshot takes a new name; resnapshot takes the last name given again (refused
while it exists, a new snapshot once removed); rollback and rm use the last name given (postinit before
any), so rm may remove the current name and rollback may name a removed one.
*/
const coreKinds: Kind[] = [
	'run',
	'snapshot',
	'rollback',
	'rollback-postinit',
	'clean',
	'rm',
	'rm-postinit',
	'resnapshot',
];

type Operation = {verb: 'run'} | {verb: 'clean'} | {verb: 'snapshot' | 'rollback' | 'rm'; name: string};

function describe(operation: Operation): string {
	return 'name' in operation ? `${operation.verb} ${operation.name}` : operation.verb;
}

type ModelLayer = {label: string; lowers: string[]; content: Content};

/** What a workspace should be: its layers, names, current stack, view and writable state. */
class WorkspaceModel {
	/** Every layer the workspace ever made, by label: P (postinit), then L1, L2... */
	readonly layers = new Map<string, ModelLayer>();
	/** The real layer id of each label. */
	readonly ids = new Map<string, string>();
	readonly names = new Map<string, string>();
	/** Every name ever given, postinit first. */
	readonly given: string[] = ['postinit'];
	stack: string[];
	/** What the next run sees. */
	view: Content;
	/** Whether a run wrote since the current snapshot was taken or restored. */
	dirty = false;
	runs = 0;
	from = 'postinit';
	/** The last name a snapshot was given. */
	lastGiven = 'postinit';
	/** Layers found on disk though nothing reaches them (reported once, then tolerated until gc). */
	leaked = new Set<string>();
	private runCount = 0;
	private snapshotCount = 0;

	constructor(postinit: string) {
		this.layers.set('P', {label: 'P', lowers: [], content: new Map(sourceContent)});
		this.ids.set('P', postinit);
		this.names.set('postinit', 'P');
		this.stack = ['P'];
		this.view = new Map(sourceContent);
	}

	top(): string {
		return this.stack.at(-1) as string;
	}

	layer(label: string): ModelLayer {
		return this.layers.get(label) as ModelLayer;
	}

	/** The label of a real layer id, or the id itself marked unknown. */
	label(id: string): string {
		for (const [label, known] of this.ids) {
			if (known === id) {
				return label;
			}
		}

		return `unknown:${id}`;
	}

	stackOf(label: string): string[] {
		return [...this.layer(label).lowers, label];
	}

	/** Layers the names and the current stack reach, with their lowers. */
	reachable(): Set<string> {
		return new Set([...[...this.names.values()].flatMap((label) => this.stackOf(label)), ...this.stack]);
	}

	/** `ws snapshots`' entries: name, layer, current. */
	snapshots(): Array<[string, string, boolean]> {
		return [...this.names]
			.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
			.map(([name, label]) => [name, label, label === this.top()]);
	}

	resolve(kind: Kind, random: () => number): Operation {
		const pick = (names: string[]) => names[Math.floor(random() * names.length)] as string;
		switch (kind) {
			case 'run':
			case 'clean': {
				return {verb: kind};
			}

			case 'snapshot': {
				this.snapshotCount++;
				this.lastGiven = `s${this.snapshotCount}`;
				this.given.push(this.lastGiven);
				return {verb: 'snapshot', name: this.lastGiven};
			}

			case 'resnapshot': {
				return {verb: 'snapshot', name: this.lastGiven};
			}

			case 'rollback': {
				return {verb: 'rollback', name: this.lastGiven};
			}

			case 'rollback-postinit': {
				return {verb: 'rollback', name: 'postinit'};
			}

			case 'rollback-any': {
				return {verb: 'rollback', name: pick(this.given)};
			}

			case 'rm': {
				return {verb: 'rm', name: this.lastGiven};
			}

			case 'rm-postinit': {
				return {verb: 'rm', name: 'postinit'};
			}

			case 'rm-any': {
				return {verb: 'rm', name: pick(this.given)};
			}

			case 'rm-other': {
				const others = [...this.names].filter(([, label]) => label !== this.top()).map(([name]) => name);
				return {verb: 'rm', name: others.length > 0 ? pick(others.sort()) : this.lastGiven};
			}
		}
	}

	/** Why the operation must be refused in this state, as a pattern of its one line on stderr. */
	refusal(operation: Operation): RegExp | undefined {
		if (operation.verb === 'snapshot' && this.names.has(operation.name)) {
			return new RegExp(`^scratch: snapshot ${workspace}/${operation.name} exists; `);
		}

		if ((operation.verb === 'rollback' || operation.verb === 'rm') && !this.names.has(operation.name)) {
			return new RegExp(`^scratch: workspace ${workspace} has no snapshot ${operation.name}; `);
		}

		return undefined;
	}

	/** The situations an operation meets in this state, to show what the sequences cover. */
	situations(operation: Operation): string[] {
		if (this.refusal(operation)) {
			return [`${operation.verb} refused`];
		}

		const named = [...this.names.values()].includes(this.top());
		switch (operation.verb) {
			case 'run': {
				return [this.dirty ? 'run on writes' : 'run on a snapshot'];
			}

			case 'clean': {
				return [this.dirty ? 'clean drops writes' : 'clean without writes'];
			}

			case 'snapshot': {
				return [
					this.dirty ? 'snapshot makes a layer' : 'snapshot names the current layer (lazy)',
					...(this.given.indexOf(operation.name) < this.given.lastIndexOf(operation.name) ||
					(operation.name === 'postinit' && !this.names.has('postinit'))
						? ['snapshot reuses a removed name']
						: []),
					...(named ? [] : ['snapshot over an unnamed current layer']),
				];
			}

			case 'rollback': {
				const target = this.names.get(operation.name) as string;
				return [
					this.dirty ? 'rollback drops writes' : 'rollback without writes',
					...(target === this.top() ? ['rollback to the current layer'] : []),
					...(operation.name === 'postinit' ? ['rollback to postinit'] : []),
					...(!named && !this.stackOf(target).includes(this.top())
						? ['rollback away from an unnamed current layer']
						: []),
				];
			}

			case 'rm': {
				const target = this.names.get(operation.name) as string;
				const aliases = [...this.names.values()].filter((label) => label === target).length;
				return [
					...(target === this.top() ? ['rm of a current name'] : ['rm of another name']),
					...(operation.name === 'postinit' ? ['rm postinit'] : []),
					...(aliases > 1 ? ['rm of one of several names of a layer'] : []),
				];
			}
		}
	}

	/** The shell script of the next run: a new file, and an earlier file deleted (odd runs) or changed. */
	nextRun(): string {
		this.runCount++;
		const k = this.runCount;
		const files = [...this.view.keys()].filter((entry) => !entry.endsWith('/')).sort();
		const target = files[(k * 7) % files.length];
		const created = k % 4 === 0 ? `d/w${k}.txt` : `w${k}.txt`;
		const lines = ['set -e'];
		if (created.startsWith('d/')) {
			lines.push('mkdir -p d');
			this.view.set('d/', '');
		}

		lines.push(`printf '%s\\n' 'run ${k}' > ${created}`);
		if (target !== undefined) {
			if (k % 2 === 1) {
				lines.push(`rm ${target}`);
				this.view.delete(target);
			} else {
				lines.push(`printf '%s\\n' 'changed by run ${k}' > ${target}`);
				this.view.set(target, `changed by run ${k}`);
			}
		}

		this.view.set(created, `run ${k}`);
		this.dirty = true;
		this.runs++;
		return lines.join('\n');
	}

	/** Take a valid snapshot; returns the label it names and whether it made a layer. */
	snapshot(name: string): {label: string; created: boolean} {
		const created = this.dirty;
		if (created) {
			const label = `L${this.layers.size}`;
			this.layers.set(label, {label, lowers: [...this.stack], content: new Map(this.view)});
			this.stack = [...this.stack, label];
		}

		this.names.set(name, this.top());
		this.reset(name);
		return {label: this.top(), created};
	}

	/**
	Roll back to a valid name; returns whether writes were dropped, and the labels of the old stack that
	nothing reaches any more, which are freed at once.
	*/
	rollback(name: string): {hadWrites: boolean; freed: string[]} {
		const hadWrites = this.dirty;
		const label = this.names.get(name) as string;
		const old = this.stack;
		const onDisk = new Set([...this.reachable(), ...this.leaked]);
		this.stack = this.stackOf(label);
		this.view = new Map(this.layer(label).content);
		this.reset(name);
		const reachable = this.reachable();
		const freed = [...new Set(old)].filter((lower) => onDisk.has(lower) && !reachable.has(lower));
		for (const lower of freed) {
			this.leaked.delete(lower);
		}

		return {hadWrites, freed};
	}

	clean(): boolean {
		const hadWrites = this.dirty;
		this.view = new Map(this.layer(this.top()).content);
		this.reset(this.from);
		return hadWrites;
	}

	/** Remove a valid name; returns its label and the labels that must be freed at once. */
	remove(name: string): {label: string; freed: string[]} {
		const label = this.names.get(name) as string;
		const onDisk = new Set([...this.reachable(), ...this.leaked]);
		this.names.delete(name);
		const reachable = this.reachable();
		const freed = [...new Set(this.stackOf(label))].filter(
			(lower) => onDisk.has(lower) && !reachable.has(lower),
		);
		for (const lower of freed) {
			this.leaked.delete(lower);
		}

		return {label, freed};
	}

	private reset(from: string): void {
		this.dirty = false;
		this.runs = 0;
		this.from = from;
	}
}

/** Everything a refused operation must leave as it was: names, layers, the workspace's record and writes. */
function storeState(sandbox: Sandbox): string {
	const listing = (relative: string) => {
		const full = path.join(sandbox.store, relative);
		return existsSync(full)
			? readdirSync(full, {recursive: true})
					.map(String)
					.sort()
					.map((entry) =>
						statSync(path.join(full, entry)).isFile() && !relative.startsWith('layers')
							? `${entry}=${readFileSync(path.join(full, entry), 'utf8')}`
							: entry,
					)
			: [];
	};
	return JSON.stringify({
		refs: listing('refs'),
		layers: listing('layers'),
		// Its record (with the writes' runs and commands), upper and merged; work is the kernel's.
		workspace: listing(`workspaces/${workspace}`).filter(
			(entry) => entry !== 'work' && !entry.startsWith('work/'),
		),
	});
}

type Removal = {name: string; layer: string; freed: string[]};

/** Run one operation, checking its output against the model, which it updates. */
async function perform(
	t: ExecutionContext,
	sandbox: Sandbox,
	model: WorkspaceModel,
	operation: Operation,
	where: string,
): Promise<void> {
	const refusal = model.refusal(operation);
	if (refusal) {
		const before = storeState(sandbox);
		const result = await ws(sandbox, operation.verb, workspace, [
			...('name' in operation ? [operation.name] : []),
			'--json',
		]);
		t.is(result.exitCode, 1, `${where}: refused with status 1 (${String(result.stderr)})`);
		// execa strips the final newline.
		t.regex(String(result.stderr), /^scratch: [^\n]+$/, `${where}: one line on stderr`);
		t.regex(String(result.stderr), refusal, `${where}: says why`);
		t.is(String(result.stdout), '', `${where}: prints nothing on stdout`);
		t.is(storeState(sandbox), before, `${where}: changes nothing`);
		return;
	}

	switch (operation.verb) {
		case 'run': {
			const script = model.nextRun();
			const result = await ws(sandbox, 'run', workspace, ['--', 'sh', '-c', script]);
			t.is(result.exitCode, 0, `${where}: ${script}: ${String(result.stderr)}`);
			return;
		}

		case 'snapshot': {
			const {label, created} = model.snapshot(operation.name);
			const taken = await wsJson<WorkspaceSnapshot>(t, sandbox, 'snapshot', workspace, [operation.name]);
			t.is(taken.name, `${workspace}/${operation.name}`, where);
			t.is(taken.created, created, `${where}: a layer is made only when something was written`);
			if (created) {
				t.false([...model.ids.values()].includes(taken.layer), `${where}: a new layer id`);
				model.ids.set(label, taken.layer);
			} else {
				t.is(model.label(taken.layer), label, `${where}: names the current layer`);
			}

			return;
		}

		case 'rollback': {
			const {hadWrites, freed} = model.rollback(operation.name);
			const reset = await wsJson<WorkspaceReset>(t, sandbox, 'rollback', workspace, [operation.name]);
			t.is(model.label(reset.layer), model.top(), `${where}: the layer rolled back to`);
			t.is(reset.dropped.hadWrites, hadWrites, `${where}: whether writes were dropped`);
			t.deepEqual(
				reset.freed.map((id) => model.label(id)).sort(),
				freed.sort(),
				`${where}: frees at once the old stack's layers nothing reaches any more`,
			);
			return;
		}

		case 'clean': {
			const hadWrites = model.clean();
			const reset = await wsJson<WorkspaceReset>(t, sandbox, 'clean', workspace);
			t.is(model.label(reset.layer), model.top(), `${where}: the current layer`);
			t.is(reset.dropped.hadWrites, hadWrites, `${where}: whether writes were dropped`);
			return;
		}

		case 'rm': {
			const {label, freed} = model.remove(operation.name);
			const removal = await wsJson<Removal>(t, sandbox, 'rm', workspace, [operation.name]);
			t.is(removal.name, `${workspace}/${operation.name}`, where);
			t.is(model.label(removal.layer), label, `${where}: the layer the name pointed at`);
			t.deepEqual(
				removal.freed.map((id) => model.label(id)).sort(),
				freed.sort(),
				`${where}: frees at once exactly what nothing reaches any more`,
			);
		}
	}
}

/** Check the workspace against the model after a step; false when it is too far off to go on. */
async function checkState(
	t: ExecutionContext,
	sandbox: Sandbox,
	model: WorkspaceModel,
	where: string,
): Promise<boolean> {
	const view = await viewOf(t, sandbox, workspace);
	model.runs++;
	const viewMatches = t.deepEqual(view, viewLines(model.view), `${where}: what the next run sees`);

	const listing = await wsJson<WorkspaceSnapshots>(t, sandbox, 'snapshots', workspace);
	t.is(model.label(listing.current), model.top(), `${where}: the current layer`);
	t.deepEqual(
		listing.snapshots.map((entry) => [entry.name, model.label(entry.layer), entry.current]),
		model.snapshots(),
		`${where}: the names, those of the current layer marked current`,
	);
	t.is(listing.writes.runs, model.runs, `${where}: runs since the current snapshot`);
	t.is(listing.writes.from, model.from, `${where}: the snapshot the writes sit on`);

	// The complete layers on disk must be exactly the reachable ones. A leak is reported at the step
	// that makes it, then tolerated (until gc), so that one bug fails one assertion, not every later one.
	const reachable = model.reachable();
	const onDisk = completeLayers(sandbox.store)
		.map((id) => model.label(id))
		.sort();
	const missing = [...reachable].filter((label) => !onDisk.includes(label)).sort();
	t.deepEqual(
		{
			leaked: onDisk.filter((label) => !reachable.has(label) && !model.leaked.has(label)),
			neededButFreed: missing,
		},
		{leaked: [], neededButFreed: []},
		`${where}: the complete layers on disk (${onDisk.join(' ')}) are exactly the reachable ones (${[...reachable].sort().join(' ')}: names ${model
			.snapshots()
			.map(([name, label]) => `${name}=${label}`)
			.join(' ')}, current stack ${model.stack.join(' ')})`,
	);
	model.leaked = new Set(onDisk.filter((label) => model.layers.has(label) && !reachable.has(label)));
	t.deepEqual(checkStoreConsistency(sandbox.store), [], `${where}: store consistency`);
	return viewMatches && missing.length === 0;
}

type Sequence = {name: string; kinds: Kind[]; seed?: number};

/** mulberry32: the same names for `rollback-any` and `rm-any` on every machine. */
function seededRandom(seed: number): () => number {
	let state = seed;
	return () => {
		state = (state + 0x6d_2b_79_f5) | 0;
		let value = Math.imul(state ^ (state >>> 15), 1 | state);
		value = (value + Math.imul(value ^ (value >>> 7), 61 | value)) ^ value;
		return ((value ^ (value >>> 14)) >>> 0) / 4_294_967_296;
	};
}

/** Run a sequence on a fresh sandbox, checking every step, then gc and the store at rest. */
async function runSequence(t: ExecutionContext, user: User, sequence: Sequence): Promise<void> {
	const sandbox = makeSandbox(t, user, sourceFiles);
	const source = fingerprintTree(sandbox.src);
	const init = await ws(sandbox, 'init', workspace);
	t.is(init.exitCode, 0, `${sequence.name}: ws init: ${String(init.stderr)}`);
	const postinit = refTarget(sandbox.store, `${workspace}/postinit`);
	if (!t.truthy(postinit, `${sequence.name}: ws init names postinit`)) {
		return;
	}

	const model = new WorkspaceModel(postinit as string);
	const done: string[] = ['init'];
	if (!(await checkState(t, sandbox, model, `as ${user}, ${sequence.name}, after init`))) {
		return;
	}

	const random = seededRandom(sequence.seed ?? 1);
	for (const [index, kind] of sequence.kinds.entries()) {
		const operation = model.resolve(kind, random);
		done.push(describe(operation) + (model.refusal(operation) ? ' (refused)' : ''));
		const where = `as ${user}, ${sequence.name}, step ${index + 1} [${done.join(', ')}]`;
		await perform(t, sandbox, model, operation, where);
		if (!(await checkState(t, sandbox, model, where))) {
			return;
		}
	}

	const gc = await scratch(sandbox, ['gc', '--store', sandbox.store, '--json']);
	t.is(gc.exitCode, 0, String(gc.stderr));
	const where = `as ${user}, ${sequence.name}, after gc [${done.join(', ')}]`;
	t.deepEqual(
		completeLayers(sandbox.store)
			.map((id) => model.label(id))
			.sort(),
		[...model.reachable()].sort(),
		`${where}: gc keeps exactly the reachable layers`,
	);
	model.leaked.clear();
	await checkState(t, sandbox, model, where);
	t.deepEqual(hostMountsUnder(sandbox.root), [], `${where}: no mounts left`);
	t.true(
		await eventually(() => storeLeftovers(sandbox.store).length === 0, 20_000),
		`${where}: left over: ${storeLeftovers(sandbox.store).join(' ')}`,
	);
	t.deepEqual(fingerprintTree(sandbox.src), source, `${where}: the source never changes`);
}

/**
A row-complete Latin square (Williams): n sequences, each a permutation of 0..n-1, where every ordered
pair of different values is adjacent in exactly one of them (n even).
*/
function williamsSquare(n: number): number[][] {
	const first = [0];
	for (let low = 1, high = n - 1; first.length < n; low++, high--) {
		first.push(low);
		if (first.length < n) {
			first.push(high);
		}
	}

	return Array.from({length: n}, (_, row) => first.map((value) => (value + row) % n));
}

/** Ordered pairs of kinds adjacent somewhere in the sequences (after init, as `init` too). */
function adjacentPairs(sequences: Sequence[]): Set<string> {
	const pairs = new Set<string>();
	for (const {kinds} of sequences) {
		for (const [index, kind] of kinds.entries()) {
			pairs.add(`${index === 0 ? 'init' : kinds[index - 1]} > ${kind}`);
		}
	}

	return pairs;
}

const pairwise: Sequence[] = williamsSquare(coreKinds.length).map((row, index) => ({
	name: `pairwise ${index + 1}`,
	kinds: row.map((value) => coreKinds[value] as Kind),
}));
const pairwiseReversed: Sequence[] = pairwise.map(({name, kinds}) => ({
	name: `${name} reversed`,
	kinds: kinds.toReversed(),
}));
/** Every kind twice in a row: the pairs of a kind with itself, which a Latin square leaves out. */
const doubled: Sequence = {name: 'doubled', kinds: coreKinds.flatMap((kind) => [kind, kind])};
const brief: Sequence = {
	name: 'brief',
	kinds: ['run', 'snapshot', 'rollback', 'snapshot', 'run', 'rollback-postinit', 'rm'],
};
/** The current layer loses its name, then the workspace rolls away from it: nothing reaches it then. */
const orphan: Sequence = {
	name: 'orphan',
	kinds: [
		'run',
		'snapshot',
		'run',
		'rm',
		'clean',
		'rollback-postinit',
		'run',
		'snapshot',
		'rm-any',
		'rm-any',
	],
	seed: 7,
};

/** Kinds of the random sequences, weighted: enough runs and rollbacks to branch, so that rm frees. */
/** Branches: the workspace rolls back below a snapshot, snapshots elsewhere, and rm frees the abandoned branch. */
const branches: Sequence = {
	name: 'branches',
	kinds: [
		'run',
		'snapshot',
		'run',
		'snapshot',
		'run',
		'rollback-postinit',
		'rm',
		'run',
		'snapshot',
		'rm-other',
		'rollback-any',
		'rm-other',
		'clean',
		'rm-other',
		'rm-postinit',
		'rollback-any',
	],
	seed: 3,
};

const randomKinds: Kind[] = [
	'run',
	'run',
	'run',
	'run',
	'run',
	'snapshot',
	'snapshot',
	'snapshot',
	'resnapshot',
	'rollback',
	'rollback-postinit',
	'rollback-any',
	'rollback-any',
	'rollback-any',
	'clean',
	'rm',
	'rm-postinit',
	'rm-any',
	'rm-other',
	'rm-other',
	'rm-other',
];

function randomSequence(seed: number, length: number): Sequence {
	const random = seededRandom(seed * 7919);
	return {
		name: `random ${seed}`,
		kinds: Array.from({length}, () => randomKinds[Math.floor(random() * randomKinds.length)] as Kind),
		seed,
	};
}

/** Seeds whose sequences free layers (67, 20, 92) and orphan an unnamed current layer (193). */
const randomSequences = [67, 193, 20].map((seed) => randomSequence(seed, 36));

test('the sequences cover every ordered pair of operations, and init followed by each', (t) => {
	const expected = ['init', ...coreKinds].flatMap((first) =>
		coreKinds.filter((second) => second !== first).map((second) => `${first} > ${second}`),
	);
	const covered = adjacentPairs([...pairwise, doubled]);
	t.deepEqual(
		expected.filter((pair) => !covered.has(pair)),
		[],
	);
	for (const kind of coreKinds) {
		t.true(covered.has(`${kind} > ${kind}`), `${kind} twice in a row`);
	}

	for (const sequence of pairwise) {
		t.deepEqual([...sequence.kinds].sort(), [...coreKinds].sort(), `${sequence.name} is a permutation`);
	}
});

/** The situations a sequence meets, from the model alone, and how many layers its rm steps free. */
function simulate(sequence: Sequence): {situations: Set<string>; freed: number} {
	const model = new WorkspaceModel('postinit');
	const random = seededRandom(sequence.seed ?? 1);
	const situations = new Set<string>();
	let freed = 0;
	for (const kind of sequence.kinds) {
		const operation = model.resolve(kind, random);
		for (const situation of model.situations(operation)) {
			situations.add(situation);
		}

		if (model.refusal(operation)) {
			continue;
		}

		if (operation.verb === 'run') {
			model.nextRun();
		} else if (operation.verb === 'clean') {
			model.clean();
		} else if (operation.verb === 'snapshot') {
			const {label} = model.snapshot(operation.name);
			model.ids.set(label, label);
		} else if (operation.verb === 'rollback') {
			if (model.rollback(operation.name).freed.length > 0) {
				situations.add('rollback frees layers');
			}
		} else {
			const removal = model.remove(operation.name);
			freed += removal.freed.length;
			if (removal.freed.length > 0) {
				situations.add('rm frees layers');
			}
		}
	}

	return {situations, freed};
}

const rootSequences = () => [
	...pairwise,
	...pairwiseReversed,
	doubled,
	brief,
	orphan,
	branches,
	...randomSequences,
];

test('the sequences meet every situation of the model', (t) => {
	const required = [
		'run on writes',
		'run on a snapshot',
		'clean drops writes',
		'clean without writes',
		'snapshot makes a layer',
		'snapshot names the current layer (lazy)',
		'snapshot reuses a removed name',
		'snapshot over an unnamed current layer',
		'rollback drops writes',
		'rollback without writes',
		'rollback to the current layer',
		'rollback to postinit',
		'rollback away from an unnamed current layer',
		'rm of a current name',
		'rm of another name',
		'rm postinit',
		'rm of one of several names of a layer',
		'rm frees layers',
		'rollback frees layers',
		'snapshot refused',
		'rollback refused',
		'rm refused',
	];
	const met = new Set(rootSequences().flatMap((sequence) => [...simulate(sequence).situations]));
	t.deepEqual(
		required.filter((situation) => !met.has(situation)),
		[],
	);
	t.deepEqual(
		[...met].filter((situation) => !required.includes(situation)),
		[],
		'every situation met is listed',
	);
});

function sequenceTest(user: User, title: string, sequences: Sequence[]): void {
	test(`as ${user}: ${title}`, async (t) => {
		for (const sequence of sequences) {
			await runSequence(t, user, sequence);
		}
	});
}

// AVA reports a test's first failed assertion only: the sequences that meet the orphaned current layer
// (orphan, random 193) have tests of their own, so a failure there hides nothing else.
sequenceTest('root', 'pairwise sequences 1-4', pairwise.slice(0, 4));
sequenceTest('root', 'pairwise sequences 5-8', pairwise.slice(4));
sequenceTest('root', 'pairwise sequences reversed 1-4', pairwiseReversed.slice(0, 4));
sequenceTest('root', 'pairwise sequences reversed 5-8', pairwiseReversed.slice(4));
sequenceTest('root', 'doubled, brief and branches sequences', [doubled, brief, branches]);
sequenceTest('root', 'orphan sequence', [orphan]);
for (const sequence of randomSequences) {
	sequenceTest('root', `${sequence.name} (36 steps)`, [sequence]);
}

sequenceTest(
	'nobody',
	'pairwise sequences 1, 3, 5, 7',
	[0, 2, 4, 6].map((index) => pairwise[index] as Sequence),
);
sequenceTest('nobody', 'doubled, brief, branches and random 92 sequences', [
	doubled,
	brief,
	branches,
	randomSequence(92, 36),
]);
sequenceTest('nobody', 'orphan sequence', [orphan]);
