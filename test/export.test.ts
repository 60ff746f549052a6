import {createHash} from 'node:crypto';
import {existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync} from 'node:fs';
import path from 'node:path';
import {gunzipSync} from 'node:zlib';
import test from 'ava';
import {execa} from 'execa';
import {chainIdOf} from '../src/oci/export.js';
import {entryHeader, padding} from '../src/oci/tar.js';
import {promoteLayer} from './helpers/layers.js';
import {makeSandbox, type Sandbox, scratch, users} from './helpers/scratch.js';

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
