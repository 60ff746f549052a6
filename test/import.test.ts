import {createHash} from 'node:crypto';
import {
	existsSync,
	lstatSync,
	readdirSync,
	readFileSync,
	readlinkSync,
	statSync,
	writeFileSync,
} from 'node:fs';
import path from 'node:path';
import {Readable} from 'node:stream';
import {gzipSync} from 'node:zlib';
import test, {type ExecutionContext} from 'ava';
import {execa} from 'execa';
import {ArchiveError} from '../src/errors.js';
import {importTarIntoStore} from '../src/oci/import.js';
import {endOfArchive, entryHeader, padding, type TarEntry} from '../src/oci/tar.js';
import {TarReader} from '../src/oci/tar-reader.js';
import {findLayerByChainId} from '../src/store/layers.js';
import {openStore} from '../src/store/store.js';
import {holdStoreUse} from '../src/store/use-lock.js';
import {unquoteGetfattrPath} from '../src/system/getfattr.js';
import {promoteLayer} from './helpers/layers.js';
import {
	eventually,
	makeSandbox,
	nobodyId,
	type Sandbox,
	scratch,
	scratchRun,
	storeLeftovers,
	type User,
	users,
} from './helpers/scratch.js';
import {assertStoreAtRest, checkStoreConsistency, completeLayers, refTarget} from './helpers/store-check.js';

type ImportSummary = {
	layer: string;
	name: string;
	diffId: string;
	chainId: string;
	entries: number;
	bytes: number;
	reused: boolean;
	ownersMapped: number;
};

type LayerRecordOnDisk = {
	id: string;
	parent: string | null;
	lowers: string[];
	origin: string;
	diffId?: string;
	chainId?: string;
	files?: number;
	deletions?: number;
};

/** One entry of a crafted archive; files get `content`. */
type CraftedEntry = Partial<TarEntry> & {path: string; content?: string | Buffer};

/** An archive written with the export's own tar writer, from entries with defaults filled in. */
function craftTar(entries: CraftedEntry[], {end = true}: {end?: boolean} = {}): Buffer {
	const parts: Buffer[] = [];
	for (const {content, ...entry} of entries) {
		const type = entry.type ?? 'file';
		const data = Buffer.from(content ?? '');
		parts.push(
			entryHeader({
				mode: type === 'directory' ? 0o755 : 0o644,
				uid: 0,
				gid: 0,
				mtime: 1_700_000_000,
				...entry,
				type,
				size: type === 'file' ? data.length : 0,
			}),
		);
		if (type === 'file') {
			parts.push(data, padding(data.length));
		}
	}

	if (end) {
		parts.push(endOfArchive());
	}

	return Buffer.concat(parts);
}

function sha256(data: Buffer): string {
	return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

function layerRecord(store: string, id: string): LayerRecordOnDisk {
	return JSON.parse(readFileSync(path.join(store, 'layers', `${id}.json`), 'utf8')) as LayerRecordOnDisk;
}

/** Write a file into the sandbox, readable by its user. */
function writeArchive(sandbox: Sandbox, name: string, data: Buffer): string {
	const file = path.join(sandbox.root, name);
	writeFileSync(file, data, {mode: 0o644});
	return file;
}

function importArgs(sandbox: Sandbox, file: string, name: string, extra: string[] = []): string[] {
	return ['import', file, '--name', name, '--store', sandbox.store, ...extra];
}

async function importOk(
	t: ExecutionContext,
	sandbox: Sandbox,
	file: string,
	name: string,
	extra: string[] = [],
): Promise<ImportSummary> {
	const result = await scratch(sandbox, importArgs(sandbox, file, name, [...extra, '--json']));
	t.is(result.exitCode, 0, String(result.stderr));
	return JSON.parse(String(result.stdout)) as ImportSummary;
}

async function exportTo(t: ExecutionContext, sandbox: Sandbox, store: string, name: string, file: string) {
	const result = await scratch(sandbox, ['export', name, '--store', store, '-o', file, '--json']);
	t.is(result.exitCode, 0, String(result.stderr));
	return JSON.parse(String(result.stdout)) as {layer: string; diffId: string; chainId: string};
}

/** Every path in the store, with its type and its content or size: what a refused import must not change. */
function storeListing(store: string): string[] {
	if (!existsSync(store)) {
		return [];
	}

	return readdirSync(store, {recursive: true})
		.map(String)
		.sort()
		.map((relative) => {
			const full = path.join(store, relative);
			const info = lstatSync(full);
			if (info.isDirectory()) {
				return `${relative}/`;
			}

			return info.isFile() && !relative.startsWith('layers/') && !relative.includes('/layers/')
				? `${relative}=${readFileSync(full, 'utf8')}`
				: `${relative} ${info.mode.toString(8)} ${info.size}`;
		});
}

// What a run's view holds, mtimes in whole seconds (an archive keeps no more): types, modes, owners,
// link counts and sizes of non-directories, link targets, content and user xattrs.
const viewScript = `set -e
find . -mindepth 1 \\( -type d -printf '%T@ %p d %m %U:%G\\n' \\) -o -printf '%T@ %p %y %m %U:%G %n %s %l\\n' | sed -E 's/^([0-9]+)[.][0-9]+ /\\1 /' | LC_ALL=C sort -k 2
find . -type f -exec sha256sum {} + | LC_ALL=C sort -k 2
find . -mindepth 1 | LC_ALL=C sort | while IFS= read -r entry; do getfattr -h --absolute-names -d -m '^user\\.' -- "$entry"; done`;

async function viewOf(t: ExecutionContext, sandbox: Sandbox, base: string): Promise<string> {
	const result = await scratchRun(sandbox, ['--base', base, '--', 'sh', '-c', viewScript]);
	t.is(result.exitCode, 0, String(result.stderr));
	return String(result.stdout);
}

/** A layer tree as the store holds it, mtimes in whole seconds, with user xattrs (the opaque mark too). */
async function layerTreeFingerprint(tree: string): Promise<Record<string, string>> {
	const fingerprint: Record<string, string> = {};
	const visit = (directory: string) => {
		for (const name of readdirSync(directory).sort()) {
			const full = path.join(directory, name);
			const info = lstatSync(full, {bigint: true});
			let detail = `${info.mode.toString(8)} ${info.uid}:${info.gid} ${info.mtimeNs / 1_000_000_000n}`;
			if (info.isSymbolicLink()) {
				detail += ` -> ${readlinkSync(full)}`;
			} else if (info.isFile()) {
				detail += ` ${info.nlink} ${createHash('sha256').update(readFileSync(full)).digest('hex')}`;
			} else if (info.isCharacterDevice()) {
				detail += ` rdev ${info.rdev}`;
			}

			fingerprint[path.relative(tree, full)] = detail;
			if (info.isDirectory()) {
				visit(full);
			}
		}
	};

	visit(tree);
	const dump = await execa(
		'getfattr',
		['-R', '-P', '-d', '-m', '^user\\.', '-e', 'hex', '--absolute-names', tree],
		{
			env: {LC_ALL: 'C'},
			encoding: 'latin1',
		},
	);
	let current = '';
	for (const line of String(dump.stdout).split('\n')) {
		if (line.startsWith('# file: ')) {
			current = path.relative(tree, unquoteGetfattrPath(line.slice('# file: '.length)));
		} else if (
			line !== '' &&
			(!line.startsWith('user.overlay.') || line.startsWith('user.overlay.opaque=')) &&
			current !== ''
		) {
			fingerprint[current] += ` ${line}`;
		}
	}

	return fingerprint;
}

const longDirectory = 'x'.repeat(120);
const layerScripts = [
	[
		'rm del.txt',
		'mkdir -p d/e && echo deep > d/e/deep && echo old > d/old',
		'echo f > f && ln f h && ln -s f s && ln -s ../f d/up',
		'setfattr -n user.test -v blue f',
		'mkdir ro && echo r > ro/r && chmod 0555 ro',
		'echo secret > secret && chmod 0400 secret',
		': > empty',
		`mkdir -p p/${longDirectory} && echo l > p/${longDirectory}/file`,
		'echo u > ünïcode.txt',
		'mkfifo pipe',
	].join(' && '),
	[
		'rm f',
		'rm -rf gone && mkdir gone && echo new > gone/n',
		'rm -rf d && mkdir d && echo again > d/again',
		'setfattr -n user.test -v green d',
		'echo two > two',
	].join(' && '),
	['rm keep.txt', 'echo three > d/three', 'chmod 0600 two'].join(' && '),
];

for (const user of users) {
	test(`as ${user}: layers exported from one store and imported into another give the same trees, views and DiffIDs`, async (t) => {
		const sandbox = makeSandbox(t, user, {'del.txt': 'gone soon\n', 'gone/old': 'old\n', 'keep.txt': 'k\n'});
		const names = ['L1', 'L2', 'L3'];
		const originals: string[] = [];
		for (const [index, script] of layerScripts.entries()) {
			originals.push(
				await promoteLayer(
					t,
					sandbox,
					names[index] as string,
					script,
					index === 0 ? [] : [names[index - 1] as string],
				),
			);
		}

		const second: Sandbox = {...sandbox, store: path.join(sandbox.root, 'second')};
		const imported: ImportSummary[] = [];
		const exported: Array<{diffId: string; chainId: string}> = [];
		for (const [index, name] of names.entries()) {
			const file = path.join(sandbox.root, `${name}.tar`);
			const exportedLayer = await exportTo(t, sandbox, sandbox.store, name, file);
			exported.push(exportedLayer);
			const base = index === 0 ? [] : ['--base', `I${index}`];
			const summary = await importOk(t, second, file, `I${index + 1}`, base);
			imported.push(summary);
			t.is(summary.diffId, exportedLayer.diffId, `${name}: the DiffID is the exported tar's`);
			t.is(summary.bytes, statSync(file).size);
			t.false(summary.reused);
			t.is(summary.ownersMapped, 0);
		}

		t.is(await viewOf(t, second, 'I3'), await viewOf(t, sandbox, 'L3'), 'runs see the same merged tree');

		for (const [index, summary] of imported.entries()) {
			const original = originals[index] as string;
			const {diffId, chainId} = exported[index] as {diffId: string; chainId: string};
			t.deepEqual(
				await layerTreeFingerprint(path.join(second.store, 'layers', summary.layer)),
				await layerTreeFingerprint(path.join(sandbox.store, 'layers', original)),
				`layer ${index + 1}: the imported tree is the original's`,
			);
			const record = layerRecord(second.store, summary.layer);
			t.like(record, {
				origin: 'import',
				parent: index === 0 ? null : (imported[index - 1]?.layer ?? ''),
				lowers: imported.slice(0, index).map(({layer}) => layer),
				diffId,
				chainId,
			});
			t.is(summary.chainId, chainId, 'the ChainID is the same in both stores');

			const again = path.join(sandbox.root, `again-${index}.tar`);
			const reexport = await exportTo(t, second, second.store, `I${index + 1}`, again);
			t.is(reexport.diffId, diffId, 'a re-export of the imported layer has the same DiffID');
		}

		const top = path.join(second.store, 'layers', imported[1]?.layer ?? '');
		const whiteout = lstatSync(path.join(top, 'f'));
		t.true(whiteout.isCharacterDevice() && whiteout.rdev === 0, 'a deletion is a 0/0 character device');
		const opaque = await execa('getfattr', [
			'--only-values',
			'-n',
			'user.overlay.opaque',
			path.join(top, 'gone'),
		]);
		t.is(opaque.stdout, 'y', 'an opaque directory carries user.overlay.opaque=y');
		t.is(lstatSync(path.join(second.store, 'layers', imported[0]?.layer ?? '', 'ro')).mode & 0o7777, 0o555);
		t.deepEqual(checkStoreConsistency(second.store), []);
		t.deepEqual(storeLeftovers(second.store), []);
	});
}

/** A store with one imported name, `victim`, that refused imports must leave alone. */
async function storeWithVictim(t: ExecutionContext, user: User): Promise<Sandbox> {
	const sandbox = makeSandbox(t, user);
	const good = writeArchive(sandbox, 'good.tar', craftTar([{path: 'kept', content: 'kept\n'}]));
	await importOk(t, sandbox, good, 'victim');
	return sandbox;
}

type HostileCase = {
	title: string;
	archive: () => Buffer;
	problem: RegExp;
	extra?: string[];
	only?: User;
};

const goodTar = () =>
	craftTar([
		{path: 'a/', type: 'directory'},
		{path: 'a/file', content: 'x'.repeat(700)},
	]);

const hostileCases: HostileCase[] = [
	{
		title: "a path with '..'",
		archive: () => craftTar([{path: '../escape', content: 'x'}]),
		problem: /"\.\.\/escape" has a '\.\.' component/,
	},
	{
		title: "a '..' in the middle of a path",
		archive: () =>
			craftTar([
				{path: 'a/', type: 'directory'},
				{path: 'a/../../escape', content: 'x'},
			]),
		problem: /"a\/\.\.\/\.\.\/escape" has a '\.\.' component/,
	},
	{
		title: 'an absolute path',
		archive: () => craftTar([{path: '/etc/evil', content: 'x'}]),
		problem: /"\/etc\/evil" has an absolute path/,
	},
	{
		title: 'a path through a symlink, even one allowed to point outside',
		archive: () =>
			craftTar([
				{path: 'a', type: 'symlink', linkname: '/etc'},
				{path: 'a/passwd', content: 'root::0:0::/:/bin/sh\n'},
			]),
		extra: ['--allow-outside-symlinks'],
		problem: /"a\/passwd" goes through "a", which is a symlink in this archive/,
	},
	{
		title: 'a path through a symlink inside the layer',
		archive: () =>
			craftTar([
				{path: 'd/', type: 'directory'},
				{path: 'a', type: 'symlink', linkname: 'd'},
				{path: 'a/x', content: 'x'},
			]),
		problem: /"a\/x" goes through "a", which is a symlink/,
	},
	{
		title: 'a path through a regular file',
		archive: () =>
			craftTar([
				{path: 'f', content: 'x'},
				{path: 'f/x', content: 'x'},
			]),
		problem: /"f\/x" goes through "f", which is a regular file/,
	},
	{
		title: 'a path through a deleted one',
		archive: () =>
			craftTar([
				{path: '.wh.d', content: ''},
				{path: 'd/x', content: 'x'},
			]),
		problem: /"d\/x" goes through "d", which is deleted by a \.wh\. entry/,
	},
	{
		title: 'a path through a whiteout name',
		archive: () => craftTar([{path: 'd/.wh.x/y', content: 'x'}]),
		problem: /"d\/\.wh\.x\/y" goes through "\.wh\.x", a whiteout's name/,
	},
	{
		title: 'a hardlink to an absolute path',
		archive: () => craftTar([{path: 'h', type: 'hardlink', linkname: '/etc/passwd'}]),
		problem: /"h" is a hardlink to "\/etc\/passwd", which is not an earlier regular file of this archive/,
	},
	{
		title: 'a hardlink climbing out',
		archive: () => craftTar([{path: 'h', type: 'hardlink', linkname: '../outside'}]),
		problem: /"h" is a hardlink to "\.\.\/outside", which is not an earlier regular file/,
	},
	{
		title: 'a hardlink to a directory',
		archive: () =>
			craftTar([
				{path: 'd/', type: 'directory'},
				{path: 'h', type: 'hardlink', linkname: 'd'},
			]),
		problem: /"h" is a hardlink to "d", which is not an earlier regular file/,
	},
	{
		title: 'a hardlink to a symlink',
		archive: () =>
			craftTar([
				{path: 'f', content: 'x'},
				{path: 's', type: 'symlink', linkname: 'f'},
				{path: 'h', type: 'hardlink', linkname: 's'},
			]),
		problem: /"h" is a hardlink to "s", which is not an earlier regular file/,
	},
	{
		title: 'a hardlink to a later entry',
		archive: () =>
			craftTar([
				{path: 'h', type: 'hardlink', linkname: 'f'},
				{path: 'f', content: 'x'},
			]),
		problem: /"h" is a hardlink to "f", which is not an earlier regular file/,
	},
	{
		title: 'an absolute symlink',
		archive: () => craftTar([{path: 's', type: 'symlink', linkname: '/etc/shadow'}]),
		problem:
			/"s" is a symlink pointing outside the layer \(to "\/etc\/shadow"\); pass --allow-outside-symlinks/,
	},
	{
		title: 'a symlink that climbs out only through another symlink of the archive',
		archive: () =>
			craftTar([
				{path: 'esc', type: 'symlink', linkname: 'a/up/../etc/passwd'},
				{path: 'a/', type: 'directory'},
				{path: 'a/up', type: 'symlink', linkname: '..'},
			]),
		problem:
			/"esc" is a symlink pointing outside the layer through the archive's other symlinks \(to "a\/up\/\.\.\/etc\/passwd"\); pass --allow-outside-symlinks/,
	},
	{
		title: 'a loop of symlinks',
		archive: () =>
			craftTar([
				{path: 'x', type: 'symlink', linkname: 'y/z'},
				{path: 'y', type: 'symlink', linkname: 'x/z'},
			]),
		problem: /"x" is a symlink pointing outside the layer through the archive's other symlinks/,
	},
	{
		title: 'an extended attribute name with a NUL (security.capability cut short by setfattr)',
		archive: () =>
			craftTar([
				{
					path: 'bin',
					content: 'x',
					mode: 0o755,
					xattrs: new Map([['security.capability\u0000x', Buffer.alloc(20, 1)]]),
				},
			]),
		extra: ['--keep-setid'],
		problem:
			/"bin" carries an extended attribute whose name "security\.capability\\u0000x" is empty or has control characters/,
	},
	{
		title: 'pax headers piled up in front of one entry',
		archive: () => {
			// Each header alone is under the limit; together they are not.
			const paxOnly = (index: number) => {
				const whole = entryHeader({
					path: 'f',
					type: 'file',
					mode: 0o644,
					uid: 0,
					gid: 0,
					mtime: 0,
					size: 0,
					xattrs: new Map([[`user.pile${index}`, Buffer.alloc(400_000, 97)]]),
				});
				return whole.subarray(0, whole.length - 512);
			};
			return Buffer.concat([paxOnly(1), paxOnly(2), paxOnly(3), craftTar([{path: 'f', content: 'x'}])]);
		},
		problem:
			/is a pax header that brings one entry's metadata to \d+ bytes, more than the 1048576 scratch reads/,
	},
	{
		title: 'a symlink climbing out of the layer',
		archive: () =>
			craftTar([
				{path: 'd/', type: 'directory'},
				{path: 'd/s', type: 'symlink', linkname: '../../outside'},
			]),
		problem:
			/"d\/s" is a symlink pointing outside the layer \(to "\.\.\/\.\.\/outside"\); pass --allow-outside-symlinks/,
	},
	{
		title: 'a character device',
		archive: () => craftTar([{path: 'null', type: 'character', devmajor: 1, devminor: 3}]),
		problem: /"null" is a character device; a layer may not hold device nodes/,
	},
	{
		title: 'a character device 0/0 (whiteouts are .wh. files in an archive)',
		archive: () => craftTar([{path: 'w', type: 'character', devmajor: 0, devminor: 0}]),
		problem: /"w" is a character device/,
	},
	{
		title: 'a block device',
		archive: () => craftTar([{path: 'disk', type: 'block', devmajor: 8, devminor: 0}]),
		problem: /"disk" is a block device/,
	},
	{
		title: 'a setuid file',
		archive: () => craftTar([{path: 'su', content: '#!/bin/sh\n', mode: 0o4755}]),
		problem: /"su" has the setuid bit \(mode 4755\); pass --keep-setid/,
	},
	{
		title: 'a setgid file',
		archive: () => craftTar([{path: 'sg', content: '#!/bin/sh\n', mode: 0o2755}]),
		problem: /"sg" has the setgid bit \(mode 2755\); pass --keep-setid/,
	},
	{
		title: 'the same path twice',
		archive: () =>
			craftTar([
				{path: 'f', content: 'one'},
				{path: 'f', content: 'two'},
			]),
		problem: /"f" names a path an earlier entry made \(a regular file\)/,
	},
	{
		title: 'a file where a directory was',
		archive: () =>
			craftTar([
				{path: 'd/', type: 'directory'},
				{path: 'd', content: 'x'},
			]),
		problem: /"d" names a path an earlier entry made \(a directory\)/,
	},
	{
		title: 'a directory twice',
		archive: () =>
			craftTar([
				{path: 'd/', type: 'directory'},
				{path: 'd/', type: 'directory'},
			]),
		problem: /"d\/" names a path an earlier entry made \(a directory\)/,
	},
	{
		title: 'a path and its whiteout',
		archive: () =>
			craftTar([
				{path: 'x', content: 'x'},
				{path: '.wh.x', content: ''},
			]),
		problem: /"\.wh\.x" deletes "x", which this archive also makes/,
	},
	{
		title: 'a whiteout and then its path',
		archive: () =>
			craftTar([
				{path: 'd/.wh.x', content: ''},
				{path: 'd/x/', type: 'directory'},
			]),
		problem: /"d\/x\/" is also deleted by "d\/\.wh\.x" in the same archive/,
	},
	{
		title: 'an opaque marker for the root',
		archive: () => craftTar([{path: '.wh..wh..opq', content: ''}]),
		problem: /"\.wh\.\.wh\.\.opq" marks the layer's root opaque/,
	},
	{
		title: 'a NUL byte in a name',
		archive: () => craftTar([{path: 'a\0b', content: 'x'}]),
		problem: /has a NUL byte in its name/,
	},
	{
		title: 'a user.overlay xattr',
		archive: () =>
			craftTar([
				{path: 'd/', type: 'directory', xattrs: new Map([['user.overlay.redirect', Buffer.from('/etc')]])},
			]),
		problem:
			/"d\/" carries the extended attribute "user\.overlay\.redirect", which overlayfs reads as its own metadata/,
	},
	{
		title: 'a trusted.overlay xattr',
		archive: () =>
			craftTar([
				{path: 'f', content: 'x', xattrs: new Map([['trusted.overlay.origin', Buffer.from([0, 1])]])},
			]),
		problem: /"f" carries the extended attribute "trusted\.overlay\.origin"/,
	},
	{
		title: 'a truncated archive',
		archive: () => goodTar().subarray(0, 1024 + 300),
		problem: /the archive is truncated: it ends inside entry "a\/file"/,
	},
	{
		title: 'an archive cut inside a header',
		archive: () => goodTar().subarray(0, 512 + 100),
		problem: /the archive is truncated: it ends inside a tar header/,
	},
	{
		title: 'an archive without its end-of-archive blocks',
		archive: () => craftTar([{path: 'f', content: 'x'}], {end: false}),
		problem: /the archive ends at byte 1024 without its end-of-archive blocks/,
	},
	{
		title: 'a bad header checksum',
		archive: () => {
			const archive = goodTar();
			archive[512 + 4] = 0x5a;
			return archive;
		},
		problem: /the tar header at byte 512 \(entry "a\/fiZe"\) has a bad checksum/,
	},
	{
		title: 'not a tar at all',
		archive: () => Buffer.from('this is not an archive\n'.repeat(100)),
		problem: /the tar header at byte 0 .* (has a bad checksum|is not an octal number)/,
	},
	{
		title: 'a bad pax record',
		archive: () => {
			const archive = craftTar([{path: 'f', content: 'x', xattrs: new Map([['user.a', Buffer.from('b')]])}]);
			// The pax header's records follow its header block: make the first length wrong.
			archive.write('99', 512, 'latin1');
			return archive;
		},
		problem: /has a malformed pax record at byte 0 of its records: its length 99 runs past the end/,
	},
	{
		title: 'a damaged gzip',
		archive: () => {
			const archive = gzipSync(goodTar());
			archive.fill(0x55, 20, 40);
			return archive;
		},
		problem: /the gzip stream is damaged/,
	},
	{
		title: 'a truncated gzip',
		archive: () => {
			const archive = gzipSync(Buffer.concat([goodTar(), Buffer.alloc(100_000, 'z')]));
			return archive.subarray(0, archive.length - 30);
		},
		problem: /the gzip stream is damaged: unexpected end of file/,
	},
	{
		title: 'file capabilities',
		archive: () =>
			craftTar([
				{path: 'ping', content: 'x', xattrs: new Map([['security.capability', Buffer.alloc(20, 1)]])},
			]),
		problem: /"ping" carries file capabilities \(security\.capability\).*pass --keep-setid/,
	},
	{
		title: 'a trusted xattr in a rootless store',
		archive: () =>
			craftTar([{path: 'f', content: 'x', xattrs: new Map([['trusted.mine', Buffer.from('1')]])}]),
		problem: /"f" carries the extended attribute "trusted\.mine", which only root can set/,
		only: 'nobody',
	},
	{
		title: 'a user xattr on a symlink',
		archive: () =>
			craftTar([
				{path: 's', type: 'symlink', linkname: 'x', xattrs: new Map([['user.a', Buffer.from('1')]])},
			]),
		problem:
			/"s" is a symlink with the extended attribute "user\.a"; user\.\* attributes exist only on regular files and directories/,
	},
];

for (const user of users) {
	for (const hostile of hostileCases) {
		if (hostile.only && hostile.only !== user) {
			continue;
		}

		test(`as ${user}: an archive with ${hostile.title} is refused with one line, and the store is left as it was`, async (t) => {
			const sandbox = await storeWithVictim(t, user);
			const victim = refTarget(sandbox.store, 'victim');
			const before = storeListing(sandbox.store);
			const file = writeArchive(sandbox, 'hostile.tar', hostile.archive());
			const result = await scratch(sandbox, importArgs(sandbox, file, 'victim', hostile.extra));
			t.is(result.exitCode, 1, String(result.stderr));
			const lines = String(result.stderr).trim().split('\n');
			t.is(lines.length, 1, String(result.stderr));
			t.regex(lines[0] as string, new RegExp(`^scratch: cannot import ${file}: `));
			t.regex(lines[0] as string, hostile.problem);
			t.regex(lines[0] as string, /; nothing was imported$/);
			t.deepEqual(storeListing(sandbox.store), before, 'nothing in the store changed');
			t.deepEqual(storeLeftovers(sandbox.store), []);
			t.is(refTarget(sandbox.store, 'victim'), victim);
		});
	}
}

for (const user of users) {
	test(`as ${user}: --keep-setid keeps setuid bits and --allow-outside-symlinks keeps links out of the layer`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const file = writeArchive(
			sandbox,
			'special.tar',
			craftTar([
				{path: 'bin/', type: 'directory'},
				{path: 'bin/su', content: '#!/bin/sh\n', mode: 0o4755},
				{path: 'bin/sg', content: '#!/bin/sh\n', mode: 0o2711},
				{path: 'etc/', type: 'directory'},
				{path: 'etc/localtime', type: 'symlink', linkname: '/usr/share/zoneinfo/UTC'},
				{path: 'etc/mtab', type: 'symlink', linkname: '../../proc/self/mounts'},
				{path: 'etc/inside', type: 'symlink', linkname: '../bin/./su'},
				{path: 'run/', type: 'directory', mode: 0o1777},
				{path: 'run/fifo', type: 'fifo', mode: 0o620},
			]),
		);
		const refused = await scratch(sandbox, importArgs(sandbox, file, 'special', ['--keep-setid']));
		t.is(refused.exitCode, 1);
		t.regex(String(refused.stderr), /"etc\/localtime" is a symlink pointing outside the layer/);
		const summary = await importOk(t, sandbox, file, 'special', ['--keep-setid', '--allow-outside-symlinks']);
		const tree = path.join(sandbox.store, 'layers', summary.layer);
		t.is(lstatSync(path.join(tree, 'bin/su')).mode & 0o7777, 0o4755);
		t.is(lstatSync(path.join(tree, 'bin/sg')).mode & 0o7777, 0o2711);
		t.is(readlinkSync(path.join(tree, 'etc/localtime')), '/usr/share/zoneinfo/UTC');
		t.is(readlinkSync(path.join(tree, 'etc/mtab')), '../../proc/self/mounts');
		t.is(lstatSync(path.join(tree, 'run')).mode & 0o7777, 0o1777);
		const fifo = lstatSync(path.join(tree, 'run/fifo'));
		t.true(fifo.isFIFO());
		t.is(fifo.mode & 0o7777, 0o620);
		t.is(summary.entries, 9);

		const view = await scratchRun(sandbox, [
			'--base',
			'special',
			'--',
			'sh',
			'-c',
			'stat -c "%A %n" bin/su run/fifo',
		]);
		t.is(view.exitCode, 0, String(view.stderr));
		t.is(String(view.stdout), '-rwsr-xr-x bin/su\nprw--w---- run/fifo');
	});
}

for (const user of users) {
	test(`as ${user}: gzip and stdin archives import; the same archive twice reuses the layer`, async (t) => {
		const sandbox = makeSandbox(t, user);
		const tar = craftTar([
			{path: './', type: 'directory'},
			{path: './a/', type: 'directory', mode: 0o750},
			{path: './a/file', content: 'hello\n', uid: 1000, gid: 1000},
			{path: './a/.wh.gone', content: ''},
			{path: './b/.wh..wh..opq', content: ''},
			{path: './b/new', content: 'new\n'},
		]);
		const plain = writeArchive(sandbox, 'layer.tar', tar);
		const gzipped = writeArchive(sandbox, 'layer.tar.gz', gzipSync(tar));

		const first = await importOk(t, sandbox, gzipped, 'zipped');
		t.is(first.diffId, sha256(tar), 'the DiffID is the uncompressed tar');
		t.is(first.bytes, tar.length);
		t.is(first.entries, 6);
		t.false(first.reused);
		t.is(first.ownersMapped, user === 'root' ? 0 : 1);
		const tree = path.join(sandbox.store, 'layers', first.layer);
		const owned = lstatSync(path.join(tree, 'a/file'));
		t.deepEqual([owned.uid, owned.gid], user === 'root' ? [1000, 1000] : [nobodyId, nobodyId]);
		t.is(lstatSync(path.join(tree, 'b')).mode & 0o7777, 0o755, 'a directory made for an entry below it');

		const piped = await scratch(
			sandbox,
			['import', '-', '--name', 'piped', '--store', sandbox.store, '--json'],
			{
				input: tar,
			},
		);
		t.is(piped.exitCode, 0, String(piped.stderr));
		const second = JSON.parse(String(piped.stdout)) as ImportSummary;
		t.true(second.reused, 'the store has this layer already');
		t.is(second.layer, first.layer);

		const again = await scratch(sandbox, importArgs(sandbox, plain, 'again'));
		t.is(again.exitCode, 0, String(again.stderr));
		const lines = String(again.stderr).trim().split('\n');
		if (user === 'nobody') {
			t.regex(
				lines.shift() as string,
				/^scratch: warning: 1 entry of .*layer\.tar belonged to owners other than uid and gid 0; in this rootless store they belong to you/,
			);
		}

		t.deepEqual(lines, [
			`scratch: imported again (layer ${first.layer}, which the store had already): 6 entries, ${tar.length} bytes of tar; DiffID ${first.diffId}`,
		]);
		t.deepEqual(completeLayers(sandbox.store), [first.layer], 'one layer on disk');
		for (const name of ['zipped', 'piped', 'again']) {
			t.is(refTarget(sandbox.store, name), first.layer);
		}

		const stacked = await importOk(t, sandbox, plain, 'stacked', ['--base', 'zipped']);
		t.false(stacked.reused, 'on another stack it is another layer');
		t.deepEqual(layerRecord(sandbox.store, stacked.layer).lowers, [first.layer]);
		t.deepEqual(checkStoreConsistency(sandbox.store), []);
	});
}

test('GNU tar archives import: long names and link targets, pax xattrs, ./ prefixes', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	const source = path.join(sandbox.root, 'gnu');
	const longName = `${'n'.repeat(150)}/${'m'.repeat(120)}`;
	await execa('sh', [
		'-c',
		`set -e; mkdir -p "${source}/${longName}"; echo deep > "${source}/${longName}/f"; ln -s "${longName}/f" "${source}/long-link"; ln "${source}/${longName}/f" "${source}/hard"; echo x > "${source}/x"; setfattr -n user.k -v v "${source}/x"`,
	]);
	const results: Record<string, ImportSummary> = {};
	for (const format of ['gnu', 'pax']) {
		const file = path.join(sandbox.root, `${format}.tar`);
		await execa('tar', [`--format=${format}`, '--xattrs', '--numeric-owner', '-cf', file, '-C', source, '.']);
		results[format] = await importOk(t, sandbox, file, format);
		const tree = path.join(sandbox.store, 'layers', results[format]?.layer ?? '');
		t.is(readFileSync(path.join(tree, longName, 'f'), 'utf8'), 'deep\n', format);
		t.is(readlinkSync(path.join(tree, 'long-link')), `${longName}/f`, format);
		t.is(lstatSync(path.join(tree, 'hard')).ino, lstatSync(path.join(tree, longName, 'f')).ino, format);
		if (format === 'pax') {
			const value = await execa('getfattr', ['--only-values', '-n', 'user.k', path.join(tree, 'x')]);
			t.is(value.stdout, 'v');
		}
	}
});

for (const user of users) {
	test(`as ${user}: an import killed midway names nothing, gc removes what it left, and it can be run again`, async (t) => {
		const sandbox = await storeWithVictim(t, user);
		const layersBefore = completeLayers(sandbox.store);
		const entries: CraftedEntry[] = [];
		for (let directory = 0; directory < 50; directory++) {
			entries.push({path: `d${directory}/`, type: 'directory', mode: 0o555});
			for (let file = 0; file < 40; file++) {
				entries.push({path: `d${directory}/f${file}`, content: `file ${directory} ${file}\n`, mode: 0o400});
			}
		}

		const tar = craftTar(entries);
		const child = scratch(sandbox, ['import', '-', '--name', 'big', '--store', sandbox.store], {
			stdin: 'pipe',
		});
		child.stdin?.write(tar.subarray(0, Math.floor(tar.length / 2)));
		const tmp = path.join(sandbox.store, 'tmp');
		const started = await eventually(() => {
			const work = existsSync(tmp) ? readdirSync(tmp).find((name) => name.startsWith('import.')) : undefined;
			return work !== undefined && existsSync(path.join(tmp, work, 'tree', 'd1'));
		}, 20_000);
		t.true(started, 'the import got halfway');
		child.kill('SIGKILL');
		const killed = await child;
		t.is(killed.signal, 'SIGKILL');
		t.is(refTarget(sandbox.store, 'big'), undefined);
		t.deepEqual(completeLayers(sandbox.store), layersBefore);
		t.true(storeLeftovers(sandbox.store).some((entry) => entry.startsWith('tmp/import.')));

		const gc = await scratch(sandbox, ['gc', '--store', sandbox.store]);
		t.is(gc.exitCode, 0, String(gc.stderr));
		await assertStoreAtRest(t, sandbox);

		const file = writeArchive(sandbox, 'big.tar', tar);
		const summary = await importOk(t, sandbox, file, 'big');
		t.is(summary.entries, entries.length);
		t.is(readFileSync(path.join(sandbox.store, 'layers', summary.layer, 'd49/f39'), 'utf8'), 'file 49 39\n');
		await assertStoreAtRest(t, sandbox);
	});
}

for (const user of users) {
	test(`as ${user}: bad import arguments get one line, the usage status or 1, and change nothing`, async (t) => {
		const sandbox = await storeWithVictim(t, user);
		const before = storeListing(sandbox.store);
		const good = path.join(sandbox.root, 'good.tar');
		const cases: Array<{args: string[]; status: number; problem: RegExp}> = [
			{
				args: ['import', good, '--store', sandbox.store],
				status: 2,
				problem: /missing required argument: name/i,
			},
			{
				args: ['import', '--name', 'x', '--store', sandbox.store],
				status: 2,
				problem: /not enough non-option arguments/i,
			},
			{
				args: importArgs(sandbox, good, '../x'),
				status: 2,
				problem: /invalid --name "\.\.\/x": segment '\.\.' must start with a letter or digit/,
			},
			{
				args: importArgs(sandbox, good, 'x', ['--base', 'missing']),
				status: 1,
				problem: /no snapshot named missing in store/,
			},
			{
				args: importArgs(sandbox, path.join(sandbox.root, 'nope.tar'), 'x'),
				status: 1,
				problem: /cannot import .*nope\.tar: no such file/,
			},
			{
				args: importArgs(sandbox, sandbox.root, 'x'),
				status: 1,
				problem: /cannot import .*: it is a directory/,
			},
			{
				args: importArgs(sandbox, good, 'x', ['--base', 'victim', '--base', 'victim']),
				status: 2,
				problem: /--base was given more than once/,
			},
		];
		for (const {args, status, problem} of cases) {
			const result = await scratch(sandbox, args);
			t.is(result.exitCode, status, `${args.join(' ')}: ${String(result.stderr)}`);
			const lines = String(result.stderr).trim().split('\n');
			t.is(lines.length, 1, String(result.stderr));
			t.regex(lines[0] as string, problem);
			t.deepEqual(storeListing(sandbox.store), before);
		}

		const fresh = path.join(sandbox.root, 'fresh-store');
		const missingBase = await scratch(sandbox, [
			'import',
			good,
			'--name',
			'x',
			'--base',
			'b',
			'--store',
			fresh,
		]);
		t.is(missingBase.exitCode, 1);
		t.false(existsSync(fresh), 'no store is made for an import that cannot stack');
	});
}

test('the tar reader gives the same entries and content whatever sizes the chunks come in', (t) => {
	const sizes = [0, 1, 511, 512, 513, 2000];
	const tar = craftTar([
		{path: 'dir/', type: 'directory', mode: 0o700},
		...sizes.map((size) => ({path: `dir/f${size}`, content: Buffer.alloc(size, size % 251), uid: size})),
		{
			path: `${'long/'.repeat(40)}name`,
			content: 'long\n',
			xattrs: new Map([['user.bin', Buffer.from([0, 255, 10])]]),
		},
		{path: 'link', type: 'symlink', linkname: `${'target/'.repeat(30)}end`},
		{path: 'ünï', type: 'hardlink', linkname: 'dir/f1'},
	]);
	const read = (chunkSize: number) => {
		const events: string[] = [];
		let content: Buffer[] = [];
		const reader = new TarReader({
			entry(entry) {
				events.push(
					JSON.stringify({
						...entry,
						xattrs: [...entry.xattrs].map(([name, value]) => [name, value.toString('hex')]),
					}),
				);
				content = [];
			},
			content(chunk) {
				content.push(Buffer.from(chunk));
			},
			entryEnd() {
				events.push(Buffer.concat(content).toString('hex'));
			},
		});
		for (let start = 0; start < tar.length; start += chunkSize) {
			reader.write(tar.subarray(start, start + chunkSize));
		}

		reader.end();
		t.true(reader.ended);
		t.is(reader.entries, sizes.length + 4);
		return events;
	};

	const whole = read(tar.length);
	t.deepEqual(read(1), whole);
	t.deepEqual(read(7), whole);
	t.deepEqual(read(512), whole);
	const entries = whole
		.filter((_, index) => index % 2 === 0)
		.map((event) => JSON.parse(event) as {path: string; xattrs: string[][]});
	t.deepEqual(
		entries.map(({path: entryPath}) => entryPath),
		[
			'dir/',
			...sizes.map((size) => `dir/f${size}`),
			`${'long/'.repeat(40)}name`,
			'link',
			Buffer.from('ünï', 'utf8').toString('latin1'),
		],
	);
	t.deepEqual(entries[sizes.length + 1]?.xattrs, [['user.bin', '00ff0a']]);
	t.is(whole[2 * (sizes.length + 1) + 1], Buffer.from('long\n').toString('hex'));
});

test('importTarIntoStore refuses an archive without the expected DiffID, and keeps what the caller adds to the record', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	const store = await openStore(sandbox.store);
	const tar = craftTar([{path: 'f', content: 'pulled\n'}]);
	const hold = await holdStoreUse(store);
	try {
		const wrong = `sha256:${'0'.repeat(64)}`;
		const error = await t.throwsAsync(
			importTarIntoStore(store, Readable.from([tar]), {lowers: [], expectedDiffId: wrong}),
			{instanceOf: ArchiveError},
		);
		t.is(error?.message, `the archive's DiffID is ${sha256(tar)}, not ${wrong} as expected`);
		t.deepEqual(completeLayers(sandbox.store), []);
		t.deepEqual(storeLeftovers(sandbox.store), []);

		const imported = await importTarIntoStore(store, Readable.from([tar]), {
			lowers: [],
			expectedDiffId: sha256(tar),
			record: {pulled: 'registry.example/team/app@sha256:1234'},
		});
		t.like(imported.layer, {
			origin: 'import',
			parent: null,
			lowers: [],
			pulled: 'registry.example/team/app@sha256:1234',
			diffId: sha256(tar),
			chainId: sha256(tar),
			files: 1,
			size: 7,
		});
		t.false(imported.reused);
		t.is(findLayerByChainId(store, imported.chainId)?.id, imported.layer.id);
		t.is(findLayerByChainId(store, imported.chainId, ['aaaaaa']), undefined, 'another stack is no match');
		const again = await importTarIntoStore(store, Readable.from([tar]), {lowers: []});
		t.true(again.reused);
		t.is(again.layer.id, imported.layer.id);
		t.deepEqual(completeLayers(sandbox.store), [imported.layer.id]);
	} finally {
		hold.release();
	}
});

test('attributes of a symlink go on the link, never on what it points at', async (t) => {
	const sandbox = makeSandbox(t, 'root');
	const outside = path.join(sandbox.root, 'outside.txt');
	writeFileSync(outside, 'host file\n');
	const file = writeArchive(
		sandbox,
		'links.tar',
		craftTar([
			{path: 'inside', content: 'x'},
			{
				path: 'out',
				type: 'symlink',
				linkname: outside,
				xattrs: new Map([['trusted.mark', Buffer.from('1')]]),
			},
			{
				path: 'in',
				type: 'symlink',
				linkname: 'inside',
				xattrs: new Map([['trusted.mark', Buffer.from('2')]]),
			},
		]),
	);
	const summary = await importOk(t, sandbox, file, 'links', ['--allow-outside-symlinks']);
	const tree = path.join(sandbox.store, 'layers', summary.layer);
	const read = async (target: string) =>
		(await execa('getfattr', ['-h', '--only-values', '-n', 'trusted.mark', target], {reject: false})).stdout;
	t.is(await read(path.join(tree, 'out')), '1');
	t.is(await read(path.join(tree, 'in')), '2');
	t.is(await read(outside), '', 'the file outside the layer is untouched');
	t.is(await read(path.join(tree, 'inside')), '');
});
