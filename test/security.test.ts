import {spawnSync} from 'node:child_process';
import {chmodSync, chownSync, lstatSync, mkdirSync, readdirSync, readFileSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import test from 'ava';
import {nameProblem, refFileName} from '../src/store/names.js';
import {checkWorkspaceName} from '../src/workspace/records.js';
import {fuseSetup} from './helpers/fuse.js';
import {makeSandbox, nobodyId, type Sandbox, scratch, scratchRun, users} from './helpers/scratch.js';

/*
What a store lets others do, and what it lets its own user do: the store and everything scratch writes
in it is its owner's alone (0700 dirs, 0600 records), nothing scratch makes is setuid or setgid, a
rootless store never holds more than its user could make (no root-owned files, no devices, no setuid
root), and no name can address a path outside the store.
*/

/** Entries of the store scratch itself writes: everything but the trees of layers, runs and workspaces. */
function storeOwnEntries(store: string): Array<{path: string; mode: number; uid: number}> {
	const entries: Array<{path: string; mode: number; uid: number}> = [];
	const visit = (directory: string, depth: number) => {
		for (const name of readdirSync(directory)) {
			const entryPath = path.join(directory, name);
			const relative = path.relative(store, entryPath);
			const info = lstatSync(entryPath);
			entries.push({path: relative, mode: info.mode, uid: info.uid});
			// Layer trees, uppers and mount points hold what commands wrote, with their own modes.
			const isTree =
				/^layers\/[a-z\d]{6}$/.test(relative) ||
				/^(kept|runs)\/[a-z\d]+\/(upper|work|merged)$/.test(relative) ||
				/^workspaces\/[^/]+\/(upper|work|merged)$/.test(relative);
			if (info.isDirectory() && !isTree && depth < 4) {
				visit(entryPath, depth + 1);
			}
		}
	};

	visit(store, 0);
	return entries;
}

async function useEveryPart(sandbox: Sandbox): Promise<void> {
	const steps: string[][] = [
		[
			'run',
			'--store',
			sandbox.store,
			'--src',
			sandbox.src,
			'--promote',
			'deps',
			'--',
			'sh',
			'-c',
			'echo x > x; rm README.md',
		],
		['run', '--store', sandbox.store, '--src', sandbox.src, '--keep', '--', 'touch', 'kept'],
		['tag', 'deps', 'team/deps', '--store', sandbox.store],
		['ws', 'init', 'dev', '--store', sandbox.store, '--src', sandbox.src, '--', 'touch', 'init'],
		['ws', 'run', 'dev', '--store', sandbox.store, '--', 'touch', 'more'],
		['ws', 'snapshot', 'dev', 'one', '--store', sandbox.store],
		['export', 'deps', '-o', path.join(sandbox.root, 'deps.tar'), '--store', sandbox.store],
		['import', path.join(sandbox.root, 'deps.tar'), '--name', 'again', '--store', sandbox.store],
		['gc', '--store', sandbox.store],
	];
	for (const args of steps) {
		const result = await scratch(sandbox, args, {env: {}, setup: fuseSetup(sandbox)});
		if (result.exitCode !== 0) {
			throw new Error(`${args.join(' ')}: ${String(result.stderr)}`);
		}
	}
}

for (const user of users) {
	test(`the store and everything scratch writes in it are its owner's alone, even under umask 000 (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		// A loose umask for every scratch process: sh sets it, then execs scratch.
		const steps = ['run', '--store', sandbox.store, '--src', sandbox.src, '--promote', 'deps', '--', 'true'];
		const result = await scratch(sandbox, steps, {env: {}});
		t.is(result.exitCode, 0, String(result.stderr));
		spawnSync('sh', ['-c', 'true']);
		const loose = spawnSync(
			'sh',
			[
				'-c',
				`umask 000; exec ${user === 'root' ? '' : `setpriv --reuid ${nobodyId} --regid ${nobodyId} --clear-groups`} "$0" "$@"`,
				process.execPath,
				path.resolve('dist/cli.cjs'),
				'run',
				'--store',
				sandbox.store,
				'--src',
				sandbox.src,
				'--keep',
				'--',
				'true',
			],
			{encoding: 'utf8', env: {...process.env, HOME: '/nonexistent'}},
		);
		t.is(loose.status, 0, loose.stderr);
		await useEveryPart(sandbox);

		const owner = user === 'root' ? 0 : nobodyId;
		t.is(lstatSync(sandbox.store).mode & 0o777, 0o700);
		t.is(lstatSync(sandbox.store).uid, owner);
		for (const entry of storeOwnEntries(sandbox.store)) {
			if (entry.path.split('/').length === 1 && entry.path !== 'scratch-store.json') {
				t.is(entry.mode & 0o777, 0o700, `${entry.path} is a private dir`);
			}

			t.is(
				entry.mode & 0o022,
				0,
				`${entry.path} (${(entry.mode & 0o7777).toString(8)}) is writable by nobody else`,
			);
			t.is(entry.mode & 0o6000, 0, `${entry.path} is neither setuid nor setgid`);
			t.is(entry.uid, owner, `${entry.path} belongs to the store's owner`);
		}
	});

	test(`an empty directory open to everyone becomes private when it becomes a store (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		mkdirSync(sandbox.store);
		chmodSync(sandbox.store, 0o777);
		if (user === 'nobody') {
			chownSync(sandbox.store, nobodyId, nobodyId);
		}

		const result = await scratchRun(sandbox, ['--', 'true']);
		t.is(result.exitCode, 0, String(result.stderr));
		t.is(lstatSync(sandbox.store).mode & 0o777, 0o700);
	});
}

test("an empty directory of another user is refused as a store, and left as it was (root on nobody's dir)", async (t) => {
	const sandbox = makeSandbox(t, 'root');
	mkdirSync(sandbox.store, {mode: 0o777});
	chownSync(sandbox.store, nobodyId, nobodyId);
	const result = await scratchRun(sandbox, ['--', 'true']);
	t.is(result.exitCode, 125);
	t.regex(
		String(result.stderr),
		/^scratch: cannot make a store in \S+: the directory belongs to uid 65534, who could change what the store holds; use a directory you own with --store DIR$/,
	);
	t.deepEqual(readdirSync(sandbox.store), []);
});

test('a rootless store never holds more than its user could make: no root-owned, setuid-root or device files', async (t) => {
	const sandbox = makeSandbox(t, 'nobody');
	// Root inside the run's user namespace is the user outside it.
	const result = await scratchRun(sandbox, [
		'--promote',
		'escalate',
		'--',
		'sh',
		'-c',
		'id -u; cp /bin/true rootshell && chown 0:0 rootshell && chmod 6755 rootshell; mknod disk b 8 0 2>/dev/null && echo made-device || echo no-device; cat /etc/shadow >/dev/null 2>&1 && echo read-shadow || echo no-shadow',
	]);
	t.is(result.exitCode, 0, String(result.stderr));
	t.is(String(result.stdout), '0\nno-device\nno-shadow');
	const layer = /layer ([a-z\d]{6})/.exec(String(result.stderr))?.[1] ?? '';
	const shell = lstatSync(path.join(sandbox.store, 'layers', layer, 'rootshell'));
	t.is(shell.uid, nobodyId, 'the "root-owned" file belongs to the user');
	t.is(shell.gid, nobodyId);
	t.not(shell.mode & 0o4000, 0, 'it is setuid, but to the user themself');
	const found = spawnSync(
		'find',
		[sandbox.store, '-uid', '0', '-o', '-type', 'b', '-o', '(', '-type', 'c', '!', '-perm', '-0', ')'],
		{
			encoding: 'utf8',
		},
	);
	t.is(found.stdout, '', 'nothing root-owned and no block device in the store');
});

test('an archive with setuid root files imported into a rootless store, even with --keep-setid, gives them to the user', async (t) => {
	const sandbox = makeSandbox(t, 'nobody');
	const tree = path.join(sandbox.root, 'tree');
	mkdirSync(tree);
	writeFileSync(path.join(tree, 'su'), 'binary');
	chmodSync(path.join(tree, 'su'), 0o4755);
	const archive = path.join(sandbox.root, 'setuid.tar');
	const tar = spawnSync('tar', ['--owner=0', '--group=0', '-cf', archive, '-C', tree, '.'], {
		encoding: 'utf8',
	});
	t.is(tar.status, 0, tar.stderr);
	chownSync(archive, nobodyId, nobodyId);
	const result = await scratch(sandbox, [
		'import',
		archive,
		'--name',
		'su',
		'--keep-setid',
		'--store',
		sandbox.store,
	]);
	t.is(result.exitCode, 0, String(result.stderr));
	const [layer] = readdirSync(path.join(sandbox.store, 'layers')).filter((name) => !name.endsWith('.json'));
	const file = lstatSync(path.join(sandbox.store, 'layers', layer as string, 'su'));
	t.is(file.uid, nobodyId);
	t.is(readFileSync(path.join(sandbox.store, 'layers', layer as string, 'su'), 'utf8'), 'binary');
});

const hostileNames = [
	'..',
	'.',
	'../escape',
	'a/../../escape',
	'/etc/passwd',
	'a/./b',
	'a//b',
	'a/',
	'-rf',
	'a+b',
	'a\\b',
	'a\nb',
	'a\0b',
	'..hidden',
	'.hidden',
	'café',
	'x'.repeat(129),
	'',
	' a',
	'a b',
	'~/x',
	'$HOME',
	'a:b',
	'a,b',
];

test('no name scratch accepts can address a path outside the refs dir, and every hostile name is refused', (t) => {
	for (const name of hostileNames) {
		t.truthy(nameProblem(name), `refused: ${JSON.stringify(name)}`);
	}

	// Every accepted name, built from a hostile alphabet, maps to one file directly inside refs/.
	const alphabet = ['a', 'Z', '0', '.', '_', '-', '/', '+', '\\', ' ', '\0', '\n', '~', ':'];
	let accepted = 0;
	let seed = 7;
	for (let index = 0; index < 20_000; index++) {
		let name = '';
		const length = 1 + (index % 9);
		for (let position = 0; position < length; position++) {
			seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648;
			name += alphabet[seed % alphabet.length];
		}

		if (nameProblem(name) !== undefined) {
			continue;
		}

		accepted++;
		const file = refFileName(name);
		const resolved = path.resolve('/store/refs', file);
		t.is(path.dirname(resolved), '/store/refs', `${JSON.stringify(name)} stays in refs/`);
		t.false(['.', '..'].includes(file));
	}

	t.true(accepted > 100, `some names were accepted (${accepted})`);
});

test('workspace names are single safe segments: none addresses a path outside workspaces/', (t) => {
	for (const name of [...hostileNames, 'a/b']) {
		t.throws(() => checkWorkspaceName(name), undefined, JSON.stringify(name));
	}

	t.notThrows(() => checkWorkspaceName('dev-1.x_y'));
});
