import {spawnSync} from 'node:child_process';
import {existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test, {type ExecutionContext} from 'ava';
import type {Options, ResultPromise} from 'execa';
import {fuseDaemonsIn, fuseSetup, overlayfsStore} from './helpers/fuse.js';
import {holdMountNamespace} from './helpers/mount-namespace.js';
import {
	chownTree,
	eventually,
	fingerprintTree,
	hostMountsUnder,
	makeSandbox,
	type NamespaceSetup,
	nobodyId,
	processesWith,
	type Sandbox,
	scratch,
	scratchRun,
	storeLeftovers,
	type User,
	uniqueSleep,
	users,
	waitForLine,
} from './helpers/scratch.js';

/*
The fuse backend (fuse-overlayfs) against the kernel backends: the same views, the same layer format,
and the same guarantees (no daemon, mount or run dir left after any exit, SIGKILL included). As nobody,
each scratch process gets a usable /dev/fuse in a private mount namespace (this machine's is mode 0600).
*/

/** The backends a user can run here, fuse last. */
function backendsOf(user: User): string[] {
	return user === 'root' ? ['kernel', 'userns', 'fuse'] : ['userns', 'fuse'];
}

function run(
	sandbox: Sandbox,
	args: string[],
	options: Options & {cwd?: string; setup?: NamespaceSetup} = {},
) {
	return scratchRun(sandbox, args, {setup: fuseSetup(sandbox), ...options});
}

function cli(
	sandbox: Sandbox,
	args: string[],
	options: Options & {cwd?: string; setup?: NamespaceSetup} = {},
) {
	return scratch(sandbox, [...args, '--store', sandbox.store], {setup: fuseSetup(sandbox), ...options});
}

/**
A layer dir as the store keeps it, one line per entry: its path, its kind (whiteout for a 0/0 device),
mode, size, link count for files, and every xattr.
*/
function describeLayer(directory: string): string[] {
	const attributes = new Map<string, string[]>();
	const dump = spawnSync('getfattr', ['-R', '-P', '-d', '-m', '-', '--absolute-names', directory], {
		encoding: 'utf8',
	});
	let current = '';
	for (const line of dump.stdout.split('\n')) {
		if (line.startsWith('# file: ')) {
			current = path.relative(directory, line.slice(8));
		} else if (line !== '') {
			attributes.set(current, [...(attributes.get(current) ?? []), line]);
		}
	}

	const lines: string[] = [];
	const visit = (relative: string) => {
		for (const name of readdirSync(path.join(directory, relative)).sort()) {
			const entry = path.join(relative, name);
			const info = lstatSync(path.join(directory, entry));
			const kind = info.isCharacterDevice()
				? info.rdev === 0
					? 'whiteout'
					: 'device'
				: info.isDirectory()
					? 'dir'
					: info.isSymbolicLink()
						? 'symlink'
						: 'file';
			const detail = info.isFile() ? ` ${info.size}B ${info.nlink}x` : '';
			const mode = kind === 'whiteout' ? '' : ` ${(info.mode & 0o7777).toString(8)}`;
			lines.push(
				`${entry} ${kind}${mode}${detail}${(attributes.get(entry) ?? []).map((a) => ` ${a}`).join('')}`,
			);
			if (info.isDirectory()) {
				visit(entry);
			}
		}
	};

	visit('');
	return lines;
}

/**
A layer's description without overlayfs's own bookkeeping xattrs (copy-up origins, impure dirs), which
kernel overlayfs records and fuse-overlayfs does not: they say nothing about the view.
*/
function meaningOf(lines: string[]): string[] {
	return lines.map((line) => line.replaceAll(/ user\.overlay\.(origin|impure)=\S+/g, ''));
}

function layerDirectory(sandbox: Sandbox, stderr: string, name: string): string {
	const id = new RegExp(`promoted the run's writes as ${name} \\(layer ([a-z\\d]{6})\\)`).exec(stderr)?.[1];
	return path.join(sandbox.store, 'layers', id ?? 'missing');
}

// Deletes source files and a dir, replaces a dir (opaque), copies files up (modified, chmodded), makes
// new files with xattrs, a symlink and a hardlink.
const writesScript = `set -e
rm README.md
rm -r lib/deep
mkdir lib/deep && echo fresh > lib/deep/new.txt
echo more >> lib/code.c
chmod 600 lib/code.c
mkdir -p out/a && echo built > out/a/app
setfattr -n user.mark -v yes out/a/app
ln -s a/app out/link
ln out/a/app out/hard`;

// What a view holds: every path with type, mode, content and user xattrs.
const viewScript =
	'find . -mindepth 1 | sort | while read -r p; do printf "%s %s\\n" "$p" "$(stat -c %F:%a "$p")"; [ -f "$p" ] && [ ! -L "$p" ] && cat "$p"; getfattr -h -d -m "^user\\." "$p" 2>/dev/null | grep -v "^#" || :; done';

for (const user of users) {
	test(`the fuse backend shows the command its writes and leaves the source, mounts and processes as they were (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const before = fingerprintTree(sandbox.src);
		const sleep = uniqueSleep();
		const result = await run(sandbox, [
			'--backend',
			'fuse',
			'--',
			'sh',
			'-c',
			`${writesScript}\nsleep ${sleep} &\ngrep -c fuse-overlayfs /proc/self/mountinfo; test ! -e README.md; cat out/hard lib/deep/new.txt`,
		]);
		t.is(result.exitCode, 0, String(result.stderr));
		t.is(String(result.stdout), '1\nbuilt\nfresh');
		t.is(String(result.stderr), '', 'an explicit --backend fuse prints no notice');
		t.deepEqual(fingerprintTree(sandbox.src), before);
		t.deepEqual(hostMountsUnder(sandbox.root), []);
		t.true(await eventually(() => fuseDaemonsIn(sandbox).length === 0), 'the daemon died with the run');
		t.deepEqual(processesWith(sleep), []);
		t.true(await eventually(() => storeLeftovers(sandbox.store).length === 0));
	});

	test(`a fuse run's promoted writes are a layer in the same format as a kernel run's, and every backend shows it alike (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const layers: Record<string, string[]> = {};
		for (const backend of backendsOf(user)) {
			const result = await run(sandbox, [
				'--backend',
				backend,
				'--promote',
				`by-${backend}`,
				'--',
				'sh',
				'-c',
				writesScript,
			]);
			t.is(result.exitCode, 0, String(result.stderr));
			layers[backend] = describeLayer(layerDirectory(sandbox, String(result.stderr), `by-${backend}`));
		}

		const fuseLayer = layers['fuse'] ?? [];
		t.true(fuseLayer.includes('README.md whiteout'), fuseLayer.join('\n'));
		t.true(fuseLayer.includes('lib/deep dir 755 user.overlay.opaque="y"'), fuseLayer.join('\n'));
		t.true(fuseLayer.includes('out dir 755'), 'a new dir hides nothing, so it is not opaque');
		t.false(
			fuseLayer.some((line) => /fuseoverlayfs|trusted\.overlay|\.wh\./.test(line)),
			'no trace of fuse-overlayfs own marks',
		);
		for (const backend of backendsOf(user)) {
			t.deepEqual(
				meaningOf(layers[backend] ?? []),
				meaningOf(fuseLayer),
				`the ${backend} layer means what the fuse layer means`,
			);
		}

		// Each layer, seen through each backend, gives one and the same view.
		let firstView: string | undefined;
		for (const layerBackend of backendsOf(user)) {
			for (const viewBackend of backendsOf(user)) {
				const view = await run(sandbox, [
					'--backend',
					viewBackend,
					'--base',
					`by-${layerBackend}`,
					'--',
					'sh',
					'-c',
					viewScript,
				]);
				t.is(view.exitCode, 0, String(view.stderr));
				firstView ??= String(view.stdout);
				t.is(String(view.stdout), firstView, `layer by ${layerBackend} seen by ${viewBackend}`);
			}
		}

		t.regex(firstView ?? '', /\.\/lib\/deep\/new\.txt regular file:644\nfresh/);
		t.notRegex(firstView ?? '', /README\.md|x\.txt/);
		t.deepEqual(hostMountsUnder(sandbox.root), []);
	});

	test(`a kept fuse run can be diffed and promoted later, and its teardown stops what the command left running (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const sleep = uniqueSleep();
		// A background process holds a file of the view open: the clean unmount must not wait for it.
		const result = await run(sandbox, [
			'--backend',
			'fuse',
			'--keep',
			'--',
			'sh',
			'-c',
			`${writesScript}\nsleep ${sleep} < lib/code.c > out/held &\nwhile [ ! -e out/held ]; do :; done`,
		]);
		t.is(result.exitCode, 0, String(result.stderr));
		const runId = /kept run ([a-z\d]{12})/.exec(String(result.stderr))?.[1] ?? '';
		t.truthy(runId, String(result.stderr));
		t.deepEqual(processesWith(sleep), []);
		t.deepEqual(fuseDaemonsIn(sandbox), []);
		const upper = describeLayer(path.join(sandbox.store, 'kept', runId, 'upper'));
		t.true(upper.includes('lib/deep dir 755 user.overlay.opaque="y"'), upper.join('\n'));
		t.true(upper.includes('out/held file 644 0B 1x'), upper.join('\n'));

		const diff = await cli(sandbox, ['diff', runId]);
		t.is(diff.exitCode, 0, String(diff.stderr));
		t.regex(String(diff.stdout), /^D README\.md$/m);
		t.regex(String(diff.stdout), /^M lib\/deep\/ \(replaced\)$/m);
		t.regex(String(diff.stdout), /^A out\/a\/app$/m);

		const promoted = await cli(sandbox, ['promote', runId, 'later']);
		t.is(promoted.exitCode, 0, String(promoted.stderr));
		const view = await run(sandbox, ['--base', 'later', '--', 'cat', 'out/hard', 'lib/deep/new.txt']);
		t.is(String(view.stdout), 'built\nfresh');
	});

	test(`--tmpfs, --touch and --in-place work with the fuse backend, and a promotion unmounts the tmpfs with the view (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const result = await run(sandbox, [
			'--backend',
			'fuse',
			'--in-place',
			'--tmpfs',
			'scratch-cache',
			'--touch',
			'lib/*',
			'--promote',
			'touched',
			'--',
			'sh',
			'-c',
			`test "$(pwd)" = "${sandbox.src}" && echo temp > scratch-cache/x && echo kept > kept.txt && grep -c scratch-tmpfs /proc/self/mountinfo`,
		]);
		t.is(result.exitCode, 0, String(result.stderr));
		t.is(String(result.stdout), '1');
		const layer = describeLayer(layerDirectory(sandbox, String(result.stderr), 'touched'));
		t.true(layer.includes('kept.txt file 644 5B 1x'), layer.join('\n'));
		t.true(layer.includes('lib/code.c file 644 29B 1x'), 'the touched file was copied up whole');
		t.false(
			layer.some((line) => line.startsWith('scratch-cache/')),
			'the tmpfs content is not in the layer',
		);
		t.deepEqual(hostMountsUnder(sandbox.root), []);
	});

	test(`SIGKILL of scratch during a fuse run, even while promoting, leaves no daemon, mount or process, and gc reclaims the run (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		for (const promote of [[], ['--promote', 'never']]) {
			const sleep = uniqueSleep();
			const subprocess = run(
				sandbox,
				[
					'--backend',
					'fuse',
					...promote,
					'--',
					'sh',
					'-c',
					`echo x > written; sleep ${sleep} & echo ready; wait`,
				],
				{
					buffer: false,
				},
			) as unknown as ResultPromise;
			await waitForLine(subprocess, 'ready');
			t.is(fuseDaemonsIn(sandbox).length, 1, 'one daemon serves the run');
			subprocess.kill('SIGKILL');
			await subprocess.catch(() => undefined);
			t.true(await eventually(() => processesWith(sleep).length === 0), 'the command died with scratch');
			t.true(await eventually(() => fuseDaemonsIn(sandbox).length === 0), 'the daemon died with scratch');
			t.deepEqual(hostMountsUnder(sandbox.root), []);
		}

		const gc = await cli(sandbox, ['gc']);
		t.is(gc.exitCode, 0, String(gc.stderr));
		t.deepEqual(storeLeftovers(sandbox.store), []);
		t.false(existsSync(path.join(sandbox.store, 'refs', 'never')));
	});

	test(`SIGTERM reaches the command of a fuse run, which then exits 143 with nothing left (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const marker = path.join(sandbox.root, 'marker');
		const subprocess = run(
			sandbox,
			[
				'--backend',
				'fuse',
				'--',
				'sh',
				'-c',
				`trap 'echo got > ${marker}; exit 7' TERM; echo ready; while :; do sleep 0.05; done`,
			],
			{
				buffer: false,
			},
		) as unknown as ResultPromise;
		await waitForLine(subprocess, 'ready');
		subprocess.kill('SIGTERM');
		const result = await subprocess;
		t.is(result.exitCode, 143);
		t.is(readFileSync(marker, 'utf8'), 'got\n');
		t.true(await eventually(() => fuseDaemonsIn(sandbox).length === 0));
		t.deepEqual(hostMountsUnder(sandbox.root), []);
	});

	test(`a workspace runs with the fuse backend, its writes persist and its snapshots are layers every backend reads (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const wsCli = (subcommand: string, args: string[]) =>
			scratch(sandbox, ['ws', subcommand, 'dev', '--store', sandbox.store, ...args], {
				setup: fuseSetup(sandbox),
			});
		const init = await wsCli('init', [
			'--src',
			sandbox.src,
			'--backend',
			'fuse',
			'--',
			'sh',
			'-c',
			'rm -r lib/deep; echo init > init.txt',
		]);
		t.is(init.exitCode, 0, String(init.stderr));
		const first = await wsCli('run', [
			'--backend',
			'fuse',
			'--',
			'sh',
			'-c',
			'mkdir lib/deep && echo one > lib/deep/one',
		]);
		t.is(first.exitCode, 0, String(first.stderr));
		const second = await wsCli('run', [
			'--backend',
			'fuse',
			'--',
			'sh',
			'-c',
			'cat lib/deep/one init.txt; echo two >> lib/deep/one',
		]);
		t.is(String(second.stdout), 'one\ninit', String(second.stderr));
		const snapshot = await wsCli('snapshot', ['built']);
		t.is(snapshot.exitCode, 0, String(snapshot.stderr));
		for (const backend of backendsOf(user)) {
			const view = await run(sandbox, [
				'--backend',
				backend,
				'--base',
				'dev/built',
				'--',
				'sh',
				'-c',
				'cat lib/deep/one; ls lib',
			]);
			t.is(String(view.stdout), 'one\ntwo\ncode.c\ndeep', `${backend}: ${String(view.stderr)}`);
		}

		// A kernel-backend run of the same workspace reads what fuse runs wrote, and the other way round.
		const kernelRun = await wsCli('run', [
			'--backend',
			user === 'root' ? 'kernel' : 'userns',
			'--',
			'sh',
			'-c',
			'echo three >> lib/deep/one',
		]);
		t.is(kernelRun.exitCode, 0, String(kernelRun.stderr));
		const fuseRun = await wsCli('run', ['--backend', 'fuse', '--', 'cat', 'lib/deep/one']);
		t.is(String(fuseRun.stdout), 'one\ntwo\nthree', String(fuseRun.stderr));
		const rollback = await wsCli('rollback', ['postinit']);
		t.is(rollback.exitCode, 0, String(rollback.stderr));
		const after = await wsCli('run', ['--backend', 'fuse', '--', 'sh', '-c', 'ls lib; cat init.txt']);
		t.is(String(after.stdout), 'code.c\ninit', String(after.stderr));
		t.deepEqual(hostMountsUnder(sandbox.root), []);
		t.deepEqual(fuseDaemonsIn(sandbox), []);
	});

	test(`with its store on overlayfs (as inside a container) auto takes fuse, says so once, and runs, promotes, stacks and keeps workspaces (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const container = overlayfsStore(sandbox);
		const inContainer = {...sandbox, store: container.store};
		const before = fingerprintTree(sandbox.src);
		const notice =
			/^scratch: using the fuse backend \(fuse-overlayfs, slower than kernel overlayfs\) because the store \S+ is on overlayfs \(as inside a container\), which the kernel refuses as an upper dir$/m;

		const promoted = await scratchRun(inContainer, ['--promote', 'deps', '--', 'sh', '-c', writesScript], {
			setup: container.setup,
		});
		t.is(promoted.exitCode, 0, String(promoted.stderr));
		t.regex(String(promoted.stderr), notice);
		t.is(String(promoted.stderr).match(/using the fuse backend/g)?.length, 1);
		t.is(
			JSON.parse(readFileSync(path.join(container.backing, 'scratch-store.json'), 'utf8')).layerFormat,
			'whiteout-files-1',
		);
		const layer = describeLayer(
			layerDirectory({...sandbox, store: container.backing}, String(promoted.stderr), 'deps'),
		);
		t.true(layer.includes('.wh.README.md file 700 0B 1x'), layer.join('\n'));
		t.true(layer.includes('lib/deep/.wh..wh..opq file 700 0B 1x'), layer.join('\n'));
		t.false(
			layer.some((line) => /whiteout|overlay\.opaque|fuseoverlayfs/.test(line)),
			layer.join('\n'),
		);

		const view = await scratchRun(inContainer, ['--base', 'deps', '--', 'sh', '-c', viewScript], {
			setup: container.setup,
		});
		t.is(view.exitCode, 0, String(view.stderr));
		const reference = await run(sandbox, ['--', 'sh', '-c', `${writesScript}\n${viewScript}`]);
		t.is(String(view.stdout), String(reference.stdout), 'the stacked layer shows what the writes made');

		const kernel = await scratchRun(
			inContainer,
			['--backend', user === 'root' ? 'kernel' : 'userns', '--', 'true'],
			{setup: container.setup},
		);
		t.is(kernel.exitCode, 125);
		t.regex(
			String(kernel.stderr),
			/^scratch: backend (kernel|userns) cannot run here: the store \S+ is on overlayfs .*; try --backend fuse$/,
		);

		const init = await scratch(
			inContainer,
			[
				'ws',
				'init',
				'dev',
				'--store',
				container.store,
				'--src',
				sandbox.src,
				'--base',
				'deps',
				'--',
				'sh',
				'-c',
				'echo ws > ws.txt',
			],
			{setup: container.setup},
		);
		t.is(init.exitCode, 0, String(init.stderr));
		const wsRun = await scratch(
			inContainer,
			['ws', 'run', 'dev', '--store', container.store, '--', 'sh', '-c', 'cat ws.txt out/a/app; rm ws.txt'],
			{setup: container.setup},
		);
		t.is(String(wsRun.stdout), 'ws\nbuilt', String(wsRun.stderr));
		const snapshot = await scratch(
			inContainer,
			['ws', 'snapshot', 'dev', 'clean', '--store', container.store],
			{setup: container.setup},
		);
		t.is(snapshot.exitCode, 0, String(snapshot.stderr));
		const last = await scratchRun(
			inContainer,
			['--base', 'dev/clean', '--', 'sh', '-c', 'ls; cat out/a/app'],
			{setup: container.setup},
		);
		t.is(String(last.stdout), 'lib\nout\nbuilt', String(last.stderr));
		t.deepEqual(fingerprintTree(sandbox.src), before);
		t.deepEqual(hostMountsUnder(sandbox.root), []);
	});
}

test('as nobody, --backend fuse without a usable /dev/fuse fails in one line that says what to do, and creates nothing', async (t) => {
	const sandbox = makeSandbox(t, 'nobody');
	const result = await scratchRun(sandbox, ['--backend', 'fuse', '--', 'true']);
	t.is(result.exitCode, 125);
	t.regex(
		String(result.stderr),
		/^scratch: backend fuse cannot run here: \/dev\/fuse cannot be opened by uid 65534 \(it is usually mode 0666; make it so with chmod 0666 \/dev\/fuse, or run as root\); try --backend userns$/,
	);
	t.false(existsSync(sandbox.store));
});

test('as nobody, auto never takes fuse while userns works, and prints no notice', async (t) => {
	const sandbox = makeSandbox(t, 'nobody');
	const result = await run(sandbox, ['--json-file', path.join(sandbox.root, 'summary.json'), '--', 'true']);
	t.is(result.exitCode, 0, String(result.stderr));
	t.is(String(result.stderr), '');
	t.is(JSON.parse(readFileSync(path.join(sandbox.root, 'summary.json'), 'utf8')).backend, 'userns');
});

async function assertNoFuseLeft(t: ExecutionContext, sandbox: Sandbox): Promise<void> {
	t.true(await eventually(() => fuseDaemonsIn(sandbox).length === 0));
	t.deepEqual(hostMountsUnder(sandbox.root), []);
}

test('a fuse run whose command fails is not promoted, and nothing is left (root)', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	const result = await run(sandbox, [
		'--backend',
		'fuse',
		'--promote',
		'bad',
		'--',
		'sh',
		'-c',
		'echo x > y; exit 3',
	]);
	t.is(result.exitCode, 3);
	t.regex(
		String(result.stderr),
		/^scratch: not promoted to bad: the command exited with status 3; bad is unchanged$/m,
	);
	t.false(existsSync(path.join(sandbox.store, 'refs', 'bad')));
	await assertNoFuseLeft(t, sandbox);
});

/**
The sandbox's source seen through an overlay over an overlay, in a mount namespace the test holds (with
a usable /dev/fuse): the kernel stacks no third overlay on it, though nothing in the facts says so.
*/
async function nestedOverlaySource(t: ExecutionContext, sandbox: Sandbox) {
	const nest = path.join(sandbox.root, 'nest');
	for (const directory of ['u1', 'w1', 'm1', 'u2', 'w2', 'm2']) {
		mkdirSync(path.join(nest, directory), {recursive: true});
	}

	if (sandbox.user === 'nobody') {
		chownTree(nest, nobodyId);
	}

	const held = await holdMountNamespace(
		t,
		[
			`cd '${nest}'`,
			`mount -t overlay -o lowerdir='${sandbox.src}',upperdir=u1,workdir=w1 nest-1 m1`,
			'mount -t overlay -o lowerdir=m1,upperdir=u2,workdir=w2 nest-2 m2',
			'device=$(mktemp -d); mknod -m 666 "$device/fuse" c 10 229; mount --bind "$device/fuse" /dev/fuse; rm -rf "$device"',
		].join('\n'),
	);
	// `outerUpper` holds what reached the nested source itself.
	return {held, nested: {...sandbox, src: path.join(nest, 'm2')}, outerUpper: path.join(nest, 'u2')};
}

for (const user of users) {
	test(`when the kernel refuses the overlay where the facts looked fine (a source on overlays nested too deep), auto falls back to fuse and says why (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const {held, nested, outerUpper} = await nestedOverlaySource(t, sandbox);
		const result = await scratchRun(
			nested,
			['--', 'sh', '-c', 'cat lib/deep/x.txt; echo new > new.txt; cat new.txt'],
			{
				setup: held.setup,
			},
		);
		t.is(result.exitCode, 0, String(result.stderr));
		t.is(String(result.stdout), 'x\nnew');
		t.regex(
			String(result.stderr),
			user === 'root'
				? /^scratch: using the fuse backend \(fuse-overlayfs, slower than kernel overlayfs\) because the kernel refused the overlay: overlays nest too deep \(kernel: overlayfs: maximum fs stacking depth exceeded\): .*$/
				: /^scratch: using the fuse backend \(fuse-overlayfs, slower than kernel overlayfs\) because the kernel refused the overlay: mounting the overlay failed \(mount: .*\): the source tree is itself on overlayfs, and the kernel stacks overlays at most two deep; run on a source outside such mounts, or use --backend fuse$/,
		);
		const kernel = await scratchRun(
			nested,
			['--backend', user === 'root' ? 'kernel' : 'userns', '--', 'true'],
			{
				setup: held.setup,
			},
		);
		t.is(kernel.exitCode, 125);
		if (user === 'root') {
			t.regex(
				String(kernel.stderr),
				/^scratch: overlays nest too deep \(kernel: overlayfs: maximum fs stacking depth exceeded\): the source tree or the store is on an overlay that is itself on an overlay, and the kernel stacks at most two; run on a source and store outside such mounts, or use --backend fuse$/,
			);
		}

		t.deepEqual(readdirSync(outerUpper), [], 'the source saw no write');
		await eventually(() => fuseDaemonsIn(sandbox).length === 0);
		t.deepEqual(hostMountsUnder(sandbox.root), []);
	});
}

for (const user of users) {
	test(`a signal after auto fell back to fuse reaches the command of the retried run (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const {held, nested} = await nestedOverlaySource(t, sandbox);
		const marker = path.join(sandbox.root, 'marker');
		const subprocess = scratchRun(
			nested,
			[
				'--',
				'sh',
				'-c',
				`trap 'echo got > ${marker}; exit 7' TERM; echo ready; while :; do sleep 0.05; done`,
			],
			{setup: held.setup, buffer: false},
		) as unknown as ResultPromise;
		await waitForLine(subprocess, 'ready');
		subprocess.kill('SIGTERM');
		const result = await subprocess;
		t.is(result.exitCode, 143);
		t.is(readFileSync(marker, 'utf8'), 'got\n', 'the command of the fuse run got the signal');
		t.true(await eventually(() => fuseDaemonsIn(sandbox).length === 0));
	});

	test(`a fuse run whose daemon dies while the command runs is not promoted, and says so (${user})`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const result = await run(sandbox, [
			'--backend',
			'fuse',
			'--promote',
			'lost',
			'--',
			'sh',
			'-c',
			'echo x > written; for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = fuse-overlayfs ] && kill -9 "$(basename "$p")"; done; exit 0',
		]);
		t.is(result.exitCode, 0, "the status is the command's own");
		t.regex(
			String(result.stderr),
			/^scratch: not promoted to lost: the fuse-overlayfs daemon died while the command ran \(writes after that failed\), so its writes cannot be trusted; lost is unchanged$/m,
		);
		t.false(existsSync(path.join(sandbox.store, 'refs', 'lost')));
		await assertNoFuseLeft(t, sandbox);
	});
}

test('the fuse backend refuses an outside --tmpfs that covers the store or the source, which it reaches by path', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	const elsewhere = mkdtempSync(path.join(os.tmpdir(), 'scratch-test-store-'));
	t.teardown(() => {
		rmSync(elsewhere, {recursive: true, force: true});
	});
	for (const [covered, path_, store] of [
		['store', sandbox.root, sandbox.store],
		['source tree', sandbox.root, path.join(elsewhere, 'store')],
	] as const) {
		const result = await run({...sandbox, store}, ['--backend', 'fuse', '--tmpfs', path_, '--', 'true']);
		t.is(result.exitCode, 125);
		t.regex(
			String(result.stderr),
			new RegExp(
				`^scratch: --tmpfs ${path_} covers the ${covered}, which the fuse backend reaches by path once the tmpfs is there; give a tmpfs elsewhere, or put the store \\(or the source\\) outside it$`,
			),
		);
	}

	t.false(existsSync(sandbox.store));
	t.deepEqual(readdirSync(elsewhere), []);
});
