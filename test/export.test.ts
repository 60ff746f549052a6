import {createHash} from 'node:crypto';
import {
	existsSync,
	lstatSync,
	mkdirSync,
	readdirSync,
	readFileSync,
	readlinkSync,
	writeFileSync,
} from 'node:fs';
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import {gunzipSync} from 'node:zlib';
import test, {type ExecutionContext} from 'ava';
import {execa} from 'execa';
import {chainIdOf, exportLayer} from '../src/oci/export.js';
import {entryHeader, padding} from '../src/oci/tar.js';
import {promoteLayer} from './helpers/layers.js';
import {
	chownTree,
	makeSandbox,
	nobodyId,
	type Sandbox,
	scratch,
	scratchRun,
	users,
} from './helpers/scratch.js';

const longDirectory = 'x'.repeat(120);
const layerScript = [
	'rm del.txt',
	'rm -rf gone && mkdir gone && echo new > gone/n',
	'echo f > f && ln f h && ln -s f s',
	'mkdir -p d/e && echo deep > d/e/deep',
	'setfattr -n user.color -v blue f',
	'chmod 4755 f',
	`mkdir -p p/${longDirectory} && echo l > p/${longDirectory}/file`,
	'echo u > ünïcode.txt',
].join(' && ');

function layerRecord(sandbox: Sandbox, id: string): {diffId?: string; chainId?: string} {
	return JSON.parse(readFileSync(path.join(sandbox.store, 'layers', `${id}.json`), 'utf8')) as {
		diffId?: string;
		chainId?: string;
	};
}

async function exportTo(sandbox: Sandbox, name: string, file: string, extra: string[] = [], env = {}) {
	const result = await scratch(sandbox, ['export', name, '--store', sandbox.store, '-o', file, ...extra], {
		env,
	});
	return result;
}

function sha256(file: string): string {
	return `sha256:${createHash('sha256').update(readFileSync(file)).digest('hex')}`;
}

for (const user of users) {
	test(`as ${user}: export writes an OCI layer tar that GNU tar reads back, byte-identical every time`, async (t) => {
		const sandbox = makeSandbox(t, user, {'del.txt': 'gone soon\n', 'gone/old': 'old\n', 'keep.txt': 'k\n'});
		const layer = await promoteLayer(t, sandbox, 'L', layerScript);
		const first = path.join(sandbox.root, 'first.tar');
		const second = path.join(sandbox.root, 'second.tar');
		const exported = await exportTo(sandbox, 'L', first, ['--json']);
		t.is(exported.exitCode, 0, String(exported.stderr));
		t.is((await exportTo(sandbox, 'L', second)).exitCode, 0);
		t.deepEqual(readFileSync(first), readFileSync(second), 'two exports are byte-identical');
		const summary = JSON.parse(String(exported.stdout)) as {
			diffId: string;
			chainId: string;
			layer: string;
			entries: number;
		};
		t.is(summary.layer, layer);
		t.is(summary.diffId, sha256(first), 'the DiffID is the sha256 of the tar');
		t.is(summary.chainId, summary.diffId, 'a layer on the source alone: ChainID = DiffID');
		t.like(layerRecord(sandbox, layer), {diffId: summary.diffId, chainId: summary.chainId});

		const listing = await execa('tar', ['-tvf', first, '--numeric-owner'], {env: {LC_ALL: 'C.UTF-8'}});
		const lines = listing.stdout.split('\n');
		const names = lines.map((line) => line.replace(/^.* \d\d:\d\d /, ''));
		t.deepEqual(names, [
			'.wh.del.txt',
			'd/',
			'd/e/',
			'd/e/deep',
			'f',
			'gone/',
			'gone/.wh..wh..opq',
			'gone/n',
			'h link to f',
			'p/',
			`p/${longDirectory}/`,
			`p/${longDirectory}/file`,
			's -> f',
			'ünïcode.txt',
		]);
		t.true(
			lines.every((line) => / 0\/0 /.test(line)),
			'numeric owners; a rootless store exports its owner as 0',
		);
		t.regex(lines[4] as string, /^-rwsr-xr-x /, 'setuid kept');

		const extracted = path.join(sandbox.root, 'extracted');
		mkdirSync(extracted);
		const unpack = await execa(
			'tar',
			['--xattrs', '--xattrs-include=user.*', '-xpf', first, '-C', extracted],
			{
				reject: false,
			},
		);
		t.is(unpack.exitCode, 0, unpack.stderr);
		t.is(readFileSync(path.join(extracted, 'f'), 'utf8'), 'f\n');
		t.is(
			lstatSync(path.join(extracted, 'h')).ino,
			lstatSync(path.join(extracted, 'f')).ino,
			'h is a hardlink of f',
		);
		t.is(readlinkSync(path.join(extracted, 's')), 'f');
		t.is(readFileSync(path.join(extracted, `p/${longDirectory}/file`), 'utf8'), 'l\n');
		t.is(readFileSync(path.join(extracted, 'ünïcode.txt'), 'utf8'), 'u\n');
		t.deepEqual(readdirSync(path.join(extracted, 'gone')).sort(), ['.wh..wh..opq', 'n']);
		const color = await execa('getfattr', ['--only-values', '-n', 'user.color', path.join(extracted, 'f')]);
		t.is(color.stdout, 'blue');
		const overlay = await execa('getfattr', ['-d', '-m', 'overlay', path.join(extracted, 'gone')], {
			reject: false,
		});
		t.is(overlay.stdout, '', "the overlay's own attributes are not exported");
	});
}

test('export to stdout, with --gzip, and with SOURCE_DATE_EPOCH', async (t) => {
	const sandbox = makeSandbox(t, 'root', {'del.txt': 'x\n'});
	const layer = await promoteLayer(t, sandbox, 'L', 'rm del.txt; echo a > a');
	const file = path.join(sandbox.root, 'l.tar');
	t.is((await exportTo(sandbox, 'L', file)).exitCode, 0);
	const piped = await scratch(sandbox, ['export', 'L', '--store', sandbox.store], {encoding: 'buffer'});
	t.is(piped.exitCode, 0);
	t.deepEqual(Buffer.from(piped.stdout as Uint8Array), readFileSync(file));
	t.regex(
		Buffer.from(piped.stderr as Uint8Array).toString(),
		/^scratch: exported L \(layer [a-z\d]{6}\): 2 entries, \d+ bytes of tar; DiffID sha256:[\da-f]{64}$/,
	);

	const gzipped = path.join(sandbox.root, 'l.tar.gz');
	t.is((await exportTo(sandbox, 'L', gzipped, ['--gzip'])).exitCode, 0);
	t.deepEqual(gunzipSync(readFileSync(gzipped)), readFileSync(file), 'the gzip holds the same tar');

	const clamped = path.join(sandbox.root, 'clamped.tar');
	t.is((await exportTo(sandbox, 'L', clamped, [], {SOURCE_DATE_EPOCH: '1000'})).exitCode, 0);
	const listing = await execa('tar', ['--full-time', '--utc', '-tvf', clamped]);
	t.true(
		listing.stdout.split('\n').every((line) => line.includes('1970-01-01 00:16:40')),
		listing.stdout,
	);
	t.is(layerRecord(sandbox, layer).diffId, sha256(file), 'the recorded DiffID stays the unclamped one');
});

test('a chain gets a ChainID from its lowers’ DiffIDs', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	const bottom = await promoteLayer(t, sandbox, 'bottom', 'echo 1 > one');
	const top = await promoteLayer(t, sandbox, 'top', 'echo 2 > two', ['bottom']);
	const topFile = path.join(sandbox.root, 'top.tar');
	const bottomFile = path.join(sandbox.root, 'bottom.tar');
	t.is((await exportTo(sandbox, 'top', topFile)).exitCode, 0);
	const hashed = layerRecord(sandbox, bottom).diffId;
	t.truthy(hashed, "exporting top hashed bottom's tar for the ChainID");
	t.is((await exportTo(sandbox, 'bottom', bottomFile)).exitCode, 0);
	t.is(hashed, sha256(bottomFile), 'the hash-only pass gives the DiffID of the real tar');
	const expected = `sha256:${createHash('sha256')
		.update(`${sha256(bottomFile)} ${sha256(topFile)}`)
		.digest('hex')}`;
	t.is(layerRecord(sandbox, top).chainId, expected);
	t.is(chainIdOf([sha256(bottomFile), sha256(topFile)]), expected);
});

test('bad input: unknown name, unwritable -o, --json without -o; nothing is written', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	await promoteLayer(t, sandbox, 'L', 'echo a > a');
	const unknown = await exportTo(sandbox, 'nope', path.join(sandbox.root, 'x.tar'));
	t.is(unknown.exitCode, 1);
	t.regex(String(unknown.stderr), /^scratch: no snapshot named nope in store /);
	t.false(existsSync(path.join(sandbox.root, 'x.tar')));
	const missing = await exportTo(sandbox, 'L', path.join(sandbox.root, 'no/such/dir/x.tar'));
	t.is(missing.exitCode, 1);
	t.regex(
		String(missing.stderr),
		/^scratch: cannot write .*no\/such\/dir\/x\.tar: .*; give a file in an existing, writable directory with -o FILE$/,
	);
	const json = await scratch(sandbox, ['export', 'L', '--store', sandbox.store, '--json']);
	t.is(json.exitCode, 2);
	t.regex(
		String(json.stderr),
		/^scratch: --json prints the summary on stdout, where the tar would go; give -o FILE too/,
	);
	const epoch = await exportTo(sandbox, 'L', path.join(sandbox.root, 'y.tar'), [], {
		SOURCE_DATE_EPOCH: 'soon',
	});
	t.is(epoch.exitCode, 2);
	t.false(existsSync(path.join(sandbox.root, 'y.tar')));
	t.deepEqual(
		readdirSync(sandbox.root).filter((name) => name.endsWith('.tmp')),
		[],
	);
});

test('tar headers: pax records for long paths and xattrs have exact lengths, and blocks are whole', (t) => {
	const header = entryHeader({
		path: `${'a'.repeat(200)}/file`,
		type: 'file',
		mode: 0o644,
		uid: 0,
		gid: 0,
		mtime: 0,
		size: 3,
		xattrs: new Map([['user.bin', Buffer.from([0, 0xff, 0x0a])]]),
	});
	t.is(header.length % 512, 0);
	const paxSize = Number.parseInt(header.subarray(124, 135).toString('latin1'), 8);
	const pax = header.subarray(512, 512 + paxSize);
	let offset = 0;
	const records: string[] = [];
	while (offset < pax.length) {
		const space = pax.indexOf(0x20, offset);
		const length = Number(pax.subarray(offset, space).toString('latin1'));
		t.is(pax[offset + length - 1], 0x0a, 'each record ends where its length says');
		records.push(pax.subarray(space + 1, pax.indexOf(0x3d, space)).toString('latin1'));
		offset += length;
	}

	t.deepEqual(records, ['path', 'SCHILY.xattr.user.bin']);
	t.deepEqual(
		pax.subarray(pax.length - 4),
		Buffer.from([0, 0xff, 0x0a, 0x0a]),
		'binary values kept byte for byte',
	);
	t.is(padding(3).length, 509);
	t.is(padding(512).length, 0);
});

test('attributes of a file whose name getfattr quotes (a backslash, a space) are exported', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	await promoteLayer(
		t,
		sandbox,
		'L',
		String.raw`echo b > 'back\slash x' && setfattr -n user.k -v v 'back\slash x'`,
	);
	const file = path.join(sandbox.root, 'l.tar');
	t.is((await exportTo(sandbox, 'L', file)).exitCode, 0);
	const extracted = path.join(sandbox.root, 'extracted');
	mkdirSync(extracted);
	await execa('tar', ['--xattrs', '--xattrs-include=user.*', '-xpf', file, '-C', extracted]);
	const value = await execa('getfattr', [
		'--only-values',
		'-n',
		'user.k',
		path.join(extracted, String.raw`back\slash x`),
	]);
	t.is(value.stdout, 'v');
});

/*
A three-layer stack for --flatten, over a source with README.md, lib/code.c, lib/deep/x.txt and del.txt:
deletions of a source file (del.txt, lib/deep/x.txt) and of a lower file (doomed), a directory made
opaque (opq: `rm -rf` and `mkdir`) that the top layer adds to, a file replaced by a directory (f, in the
middle) and a directory by a file (d; and f again at the top), symlinks (s, retargeted at the top),
hardlinks (keep/k and keep/k2, made in the middle), xattrs, a setuid file, a fifo and modes.
*/
const stackLayers: Array<[string, string]> = [
	[
		'bottom',
		[
			'rm del.txt',
			'mkdir -p d/e && echo deep > d/e/deep && chmod 750 d',
			'echo f > f && ln -s f s',
			'mkdir keep && echo k > keep/k && setfattr -n user.color -v blue keep/k',
			'echo doomed > doomed && mkfifo fifo',
			'mkdir opq && echo old > opq/old',
			'echo x > setuid && chmod 4755 setuid',
		].join(' && '),
	],
	[
		'middle',
		[
			'rm doomed',
			'rm f && mkdir f && echo inside > f/x',
			'rm -rf d && echo now-a-file > d',
			'rm -rf opq && mkdir opq && echo new > opq/new',
			'echo m > keep/m && ln keep/k keep/k2 && setfattr -n user.m -v 1 keep',
		].join(' && '),
	],
	[
		'top',
		[
			'rm -rf f && echo back > f',
			'rm s && ln -s keep/k s',
			'rm lib/deep/x.txt',
			'chmod 600 keep/m && echo t2 > opq/t2',
			'echo top > top.txt',
		].join(' && '),
	],
];

/** What the flattened tar of stackLayers lists, in order (GNU tar's names, links shown). */
const flattenedListing = [
	'.wh.del.txt',
	'.wh.doomed',
	'd',
	'f',
	'fifo',
	'keep/',
	'keep/k',
	'keep/k2 link to keep/k',
	'keep/m',
	'lib/',
	'lib/deep/',
	'lib/deep/.wh.x.txt',
	'opq/',
	'opq/.wh..wh..opq',
	'opq/new',
	'opq/t2',
	's -> keep/k',
	'setuid',
	'top.txt',
];

const cliPath = fileURLToPath(new URL('../dist/cli.cjs', import.meta.url));

/** Run a program as the sandbox's user (root, or uid 65534 through setpriv); it must succeed. */
async function runAs(t: ExecutionContext, sandbox: Sandbox, file: string, args: string[]): Promise<void> {
	const result =
		sandbox.user === 'root'
			? await execa(file, args, {reject: false})
			: await execa(
					'setpriv',
					['--reuid', String(nobodyId), '--regid', String(nobodyId), '--clear-groups', file, ...args],
					{reject: false, env: {HOME: '/nonexistent'}},
				);
	t.is(result.exitCode, 0, `${file} ${args.join(' ')}: ${result.stderr}`);
}

/** An OCI image layout (image-spec image-layout.md) at `layout` whose image `tag` has `tars` as layers, bottom first. */
function writeOciLayout(layout: string, tag: string, tars: string[]): void {
	mkdirSync(path.join(layout, 'blobs', 'sha256'), {recursive: true});
	const blob = (bytes: Buffer) => {
		const hex = createHash('sha256').update(bytes).digest('hex');
		writeFileSync(path.join(layout, 'blobs', 'sha256', hex), bytes);
		return {digest: `sha256:${hex}`, size: bytes.length};
	};

	const layers = tars.map((tar) => blob(readFileSync(tar)));
	const config = blob(
		Buffer.from(
			JSON.stringify({
				architecture: 'amd64',
				os: 'linux',
				rootfs: {type: 'layers', diff_ids: layers.map((layer) => layer.digest)},
				config: {},
			}),
		),
	);
	const manifest = blob(
		Buffer.from(
			JSON.stringify({
				schemaVersion: 2,
				mediaType: 'application/vnd.oci.image.manifest.v1+json',
				config: {mediaType: 'application/vnd.oci.image.config.v1+json', ...config},
				layers: layers.map((layer) => ({mediaType: 'application/vnd.oci.image.layer.v1.tar', ...layer})),
			}),
		),
	);
	writeFileSync(path.join(layout, 'oci-layout'), JSON.stringify({imageLayoutVersion: '1.0.0'}));
	writeFileSync(
		path.join(layout, 'index.json'),
		JSON.stringify({
			schemaVersion: 2,
			manifests: [
				{
					mediaType: 'application/vnd.oci.image.manifest.v1+json',
					...manifest,
					annotations: {'org.opencontainers.image.ref.name': tag},
				},
			],
		}),
	);
}

/**
Every entry under `root` but the root itself: type and mode, owner, mtime in whole seconds (a tar keeps
no more), content hash or link target, user xattrs, and for a file with several links the first path
(by name) of its inode.
*/
async function describeTree(root: string): Promise<Record<string, string>> {
	const dump = await execa(
		'getfattr',
		['--recursive', '--physical', '--no-dereference', '--dump', '--match=^user\\.', '--encoding=hex', '.'],
		{
			cwd: root,
		},
	);
	const xattrs = new Map<string, string[]>();
	let current: string[] | undefined;
	for (const line of dump.stdout.split('\n')) {
		if (line.startsWith('# file: ')) {
			current = [];
			xattrs.set(path.normalize(line.slice('# file: '.length)), current);
		} else if (current && line !== '') {
			current.push(line);
		}
	}

	const described: Record<string, string> = {};
	const firstOfInode = new Map<number, string>();
	const visit = (directory: string) => {
		for (const name of readdirSync(path.join(root, directory)).sort()) {
			const relative = directory ? `${directory}/${name}` : name;
			const full = path.join(root, relative);
			const info = lstatSync(full);
			let detail = `${info.mode.toString(8)} ${info.uid}:${info.gid} ${Math.floor(info.mtimeMs / 1000)}`;
			if (info.isSymbolicLink()) {
				detail += ` -> ${readlinkSync(full)}`;
			} else if (info.isFile()) {
				detail += ` ${createHash('sha256').update(readFileSync(full)).digest('hex')}`;
				if (info.nlink > 1) {
					const first = firstOfInode.get(info.ino) ?? relative;
					firstOfInode.set(info.ino, first);
					detail += ` inode of ${first}`;
				}
			}

			described[relative] = `${detail} ${(xattrs.get(relative) ?? []).sort().join(',')}`.trim();
			if (info.isDirectory()) {
				visit(relative);
			}
		}
	};

	visit('');
	return described;
}

for (const user of users) {
	test(`as ${user}: export --flatten writes the stack as one layer that unpacks (umoci) to the 3 layers' tree and the run's view`, async (t) => {
		const sandbox = makeSandbox(t, user, {'del.txt': 'deleted at the bottom\n'});
		const ids: string[] = [];
		for (const [index, [name, script]] of stackLayers.entries()) {
			ids.push(
				await promoteLayer(
					t,
					sandbox,
					name,
					script,
					index === 0 ? [] : [stackLayers[index - 1]?.[0] as string],
				),
			);
		}

		const work = path.join(sandbox.root, 'work');
		mkdirSync(path.join(work, 'empty'), {recursive: true});
		if (user === 'nobody') {
			chownTree(work, nobodyId);
		}

		const file = (name: string) => path.join(work, name);
		const flattened = await scratch(sandbox, [
			'export',
			'top',
			'--store',
			sandbox.store,
			'--flatten',
			'-o',
			file('flat.tar'),
			'--json',
		]);
		t.is(flattened.exitCode, 0, String(flattened.stderr));
		const summary = JSON.parse(String(flattened.stdout)) as {
			diffId: string;
			chainId: string;
			flattened: boolean;
			layers: number;
		};
		t.like(summary, {
			flattened: true,
			layers: 3,
			diffId: sha256(file('flat.tar')),
			chainId: sha256(file('flat.tar')),
		});
		const record = layerRecord(sandbox, ids[2] as string);
		t.true(record.diffId === undefined && record.chainId === undefined, 'a flattened export records nothing');

		const again = await scratch(sandbox, [
			'export',
			'top',
			'--store',
			sandbox.store,
			'--flatten',
			'-o',
			file('flat2.tar'),
		]);
		t.is(again.exitCode, 0, String(again.stderr));
		t.regex(
			String(again.stderr),
			/^scratch: exported top \(layer [a-z\d]{6}, flattened: 3 layers\): 19 entries, \d+ bytes of tar; DiffID sha256:[\da-f]{64}$/,
		);
		t.deepEqual(
			readFileSync(file('flat2.tar')),
			readFileSync(file('flat.tar')),
			'flattening twice gives the same bytes',
		);

		for (const [name] of stackLayers) {
			const exported = await scratch(sandbox, [
				'export',
				name,
				'--store',
				sandbox.store,
				'-o',
				file(`${name}.tar`),
			]);
			t.is(exported.exitCode, 0, String(exported.stderr));
		}

		t.is(
			layerRecord(sandbox, ids[2] as string).diffId,
			sha256(file('top.tar')),
			'the unflattened export records its own',
		);
		t.not(sha256(file('top.tar')), sha256(file('flat.tar')));

		const listing = await execa('tar', ['-tvf', file('flat.tar'), '--numeric-owner'], {
			env: {LC_ALL: 'C.UTF-8'},
		});
		const lines = listing.stdout.split('\n');
		t.deepEqual(
			lines.map((line) => line.replace(/^.* \d\d:\d\d /, '')),
			flattenedListing,
		);
		t.regex(lines[flattenedListing.indexOf('setuid')] as string, /^-rwsr-xr-x 0\/0 /, 'setuid kept, owner 0');
		t.regex(lines[flattenedListing.indexOf('keep/m')] as string, /^-rw------- /, "the top layer's mode");
		t.regex(lines[flattenedListing.indexOf('fifo')] as string, /^p/);
		const extracted = file('extracted');
		mkdirSync(extracted);
		const unpacked = await execa(
			'tar',
			['--xattrs', '--xattrs-include=user.*', '-xpf', file('flat.tar'), '-C', extracted],
			{
				reject: false,
			},
		);
		t.is(unpacked.exitCode, 0, unpacked.stderr);
		t.is(readFileSync(path.join(extracted, 'f'), 'utf8'), 'back\n');
		t.is(lstatSync(path.join(extracted, 'keep/k2')).ino, lstatSync(path.join(extracted, 'keep/k')).ino);
		const color = await execa('getfattr', [
			'--only-values',
			'-n',
			'user.color',
			path.join(extracted, 'keep/k'),
		]);
		t.is(color.stdout, 'blue');

		writeOciLayout(
			file('three'),
			'three',
			stackLayers.map(([name]) => file(`${name}.tar`)),
		);
		writeOciLayout(file('one'), 'one', [file('flat.tar')]);
		if (user === 'nobody') {
			chownTree(work, nobodyId);
		}

		const rootless = user === 'root' ? [] : ['--rootless'];
		await runAs(t, sandbox, 'umoci', [
			'raw',
			'unpack',
			...rootless,
			'--image',
			`${file('three')}:three`,
			file('rootfs-three'),
		]);
		await runAs(t, sandbox, 'umoci', [
			'raw',
			'unpack',
			...rootless,
			'--image',
			`${file('one')}:one`,
			file('rootfs-one'),
		]);
		const view = await scratchRun({...sandbox, src: file('empty')}, [
			'--base',
			'top',
			'--',
			'cp',
			'-a',
			'.',
			file('view'),
		]);
		t.is(view.exitCode, 0, String(view.stderr));

		const viewTree = await describeTree(file('view'));
		t.deepEqual(Object.keys(viewTree), [
			'd',
			'f',
			'fifo',
			'keep',
			'keep/k',
			'keep/k2',
			'keep/m',
			'lib',
			'lib/deep',
			'opq',
			'opq/new',
			'opq/t2',
			's',
			'setuid',
			'top.txt',
		]);
		t.is(viewTree['keep/k2']?.endsWith('inode of keep/k user.color=0x626c7565'), true, viewTree['keep/k2']);
		t.deepEqual(await describeTree(file('rootfs-three')), viewTree, 'the three layers unpack to the view');
		t.deepEqual(await describeTree(file('rootfs-one')), viewTree, 'the flattened layer unpacks to the view');
	});
}

test('export reports its progress in uncompressed bytes, ending at the size of the tar', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	await promoteLayer(t, sandbox, 'L', 'head -c 3000000 /dev/urandom > big && echo s > small');
	const calls: Array<[number, number | undefined]> = [];
	const exported = await exportLayer({
		store: sandbox.store,
		reference: 'L',
		file: path.join(sandbox.root, 'l.tar'),
		onProgress(done, total) {
			calls.push([done, total]);
		},
	});
	t.true(calls.length > 3, `${calls.length} calls for ${exported.bytes} bytes`);
	t.deepEqual(
		calls.map(([done]) => done),
		calls.map(([done]) => done).toSorted((a, b) => a - b),
		'never backwards',
	);
	t.is(calls.at(-1)?.[0], exported.bytes);
	const total = calls[0]?.[1] ?? 0;
	t.true(
		total > exported.bytes * 0.9 && total < exported.bytes * 1.1,
		`the total, ${total}, is an estimate of the ${exported.bytes} bytes`,
	);
	t.is(exported.bytes, readFileSync(path.join(sandbox.root, 'l.tar')).length);
});

test('export -o to a fifo writes into it and leaves it a fifo, where a temp file renamed over it would replace it', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	await promoteLayer(t, sandbox, 'L', 'echo a > a && head -c 300000 /dev/urandom > b');
	const file = path.join(sandbox.root, 'l.tar');
	const fifo = path.join(sandbox.root, 'fifo');
	t.is((await exportTo(sandbox, 'L', file)).exitCode, 0);
	await execa('mkfifo', [fifo]);
	const reader = execa('cat', [fifo], {encoding: 'buffer'});
	const exported = await exportTo(sandbox, 'L', fifo, ['--json']);
	t.is(exported.exitCode, 0, String(exported.stderr));
	t.deepEqual(Buffer.from((await reader).stdout), readFileSync(file));
	t.true(lstatSync(fifo).isFIFO());
	t.like(JSON.parse(String(exported.stdout)), {file: fifo, flattened: false, layers: 1});
});

test('as nobody: a layer file its owner cannot read (mode 000) fails the export with one line and leaves no file', async (t) => {
	const sandbox = makeSandbox(t, 'nobody');
	await promoteLayer(
		t,
		sandbox,
		'L',
		'for i in $(seq 100); do head -c 50000 /dev/urandom > f$i; done && echo s > zz && chmod 000 zz',
	);
	for (const extra of [[], ['--gzip'], ['--flatten']]) {
		const result = await exportTo(sandbox, 'L', path.join(sandbox.root, 'l.tar'), extra);
		t.is(result.exitCode, 1);
		t.regex(
			String(result.stderr),
			/^scratch: cannot read the layers to export: EACCES: permission denied, open '.*\/zz'$/,
		);
		t.deepEqual(
			readdirSync(sandbox.root).filter((name) => name.includes('l.tar')),
			[],
			`nothing written with ${extra.join(' ') || 'no options'}`,
		);
	}
});

test('export to a pipe that closes early fails with one line and status 1', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	await promoteLayer(t, sandbox, 'L', 'head -c 8000000 /dev/urandom > big');
	for (const extra of [[], ['--gzip']]) {
		const result = await execa(
			'bash',
			[
				'-c',
				'set -o pipefail; "$@" | head -c 100 > /dev/null',
				'bash',
				process.execPath,
				cliPath,
				'export',
				'L',
				'--store',
				sandbox.store,
				...extra,
			],
			{reject: false},
		);
		t.is(result.exitCode, 1, result.stderr);
		t.regex(
			result.stderr,
			/^scratch: cannot write the tar: .*EPIPE.*$/,
			`with ${extra.join(' ') || 'no options'}`,
		);
	}
});
