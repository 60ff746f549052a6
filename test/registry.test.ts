import {mkdirSync, readdirSync, readFileSync, writeFileSync} from 'node:fs';
import path from 'node:path';
import test, {type ExecutionContext} from 'ava';
import {execa} from 'execa';
import {promoteLayer} from './helpers/layers.js';
import {startRegistry} from './helpers/registry.js';
import {
	eventually,
	makeSandbox,
	type Sandbox,
	scratch,
	scratchRun,
	storeLeftovers,
	type User,
	users,
} from './helpers/scratch.js';
import {assertStoreAtRest} from './helpers/store-check.js';

/*
push and pull against a real registry (Debian's docker-registry, distribution 2.8) on loopback, checked
with clients that did not come from this project (skopeo, umoci) and by using what was pulled as
`--base` from a second store over the same source tree.
*/

const sourceFiles = {'del.txt': 'deleted in layer 1\n', 'gone/old': 'old\n', 'keep.txt': 'k\n'};

/** Three layers: deletions of source and lower files, an opaque dir, links, modes, xattrs. */
const chain: Array<[string, string]> = [
	[
		'one',
		[
			'rm del.txt',
			'mkdir -p tools/bin && echo tool > tools/bin/t && chmod 0755 tools/bin/t',
			'echo f > f && ln f hard && ln -s f soft',
			'setfattr -n user.color -v blue f',
			'echo doomed > doomed',
		].join(' && '),
	],
	[
		'two',
		[
			'rm -rf gone && mkdir gone && echo new > gone/n',
			'rm doomed',
			'mkdir ro && echo r > ro/r && chmod 0400 ro/r && chmod 0555 ro',
			'echo ü > ünïcode',
		].join(' && '),
	],
	[
		'three',
		['echo 3 > tools/bin/t', 'rm -rf f hard', 'mkdir f && echo dir > f/inside', ': > empty'].join(' && '),
	],
];

/** What a command sees of the merged tree (no mtimes: the two stores' sources were written apart). */
const viewScript = [
	"find . -printf '%y %m %U:%G %s %l %P\\n' | LC_ALL=C sort",
	'find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum',
	"find . | LC_ALL=C sort | xargs -d '\\n' getfattr -h -d -m '^user\\.' 2>/dev/null || true",
].join('; ');

async function viewOf(t: ExecutionContext, sandbox: Sandbox, base: string): Promise<string> {
	const result = await scratchRun(sandbox, ['--base', base, '--', 'sh', '-c', viewScript]);
	t.is(result.exitCode, 0, String(result.stderr));
	return String(result.stdout);
}

async function buildChain(t: ExecutionContext, sandbox: Sandbox): Promise<string[]> {
	const ids: string[] = [];
	for (const [index, [name, script]] of chain.entries()) {
		ids.push(
			await promoteLayer(t, sandbox, name, script, index === 0 ? [] : [chain[index - 1]?.[0] as string]),
		);
	}

	return ids;
}

function layerCount(sandbox: Sandbox): number {
	return readdirSync(path.join(sandbox.store, 'layers')).filter((name) => /^[\da-z]{6}$/.test(name)).length;
}

function hasRef(sandbox: Sandbox, name: string): boolean {
	return readdirSync(path.join(sandbox.store, 'refs')).some((file) => file.startsWith(name));
}

type PushJson = {
	digest: string;
	layers: Array<{layer: string; digest: string; uploaded: boolean}>;
	uploadedBytes: number;
};
type PullJson = {
	layer: string;
	layers: Array<{layer: string; diffId: string; reused: boolean}>;
	downloadedBytes: number;
};

async function push(sandbox: Sandbox, name: string, destination: string, extra: string[] = [], env = {}) {
	return scratch(sandbox, ['push', name, destination, '--store', sandbox.store, '--insecure', ...extra], {
		env,
	});
}

async function pull(sandbox: Sandbox, source: string, name: string, extra: string[] = [], env = {}) {
	return scratch(
		sandbox,
		['pull', source, '--name', name, '--store', sandbox.store, '--insecure', ...extra],
		{env},
	);
}

for (const user of users) {
	test(`as ${user}: a 3-layer chain pushed to a registry and pulled into a second store works as --base there`, async (t) => {
		const registry = await startRegistry(t);
		const here = makeSandbox(t, user, sourceFiles);
		const there = makeSandbox(t, user, sourceFiles);
		const ids = await buildChain(t, here);
		const destination = `${registry.address}/team/chain:v1`;

		const pushed = await push(here, 'three', destination, ['--json']);
		t.is(pushed.exitCode, 0, String(pushed.stderr));
		const pushJson = JSON.parse(String(pushed.stdout)) as PushJson;
		t.deepEqual(
			pushJson.layers.map(({layer}) => layer),
			ids,
			'one image layer per scratch layer, bottom first',
		);
		t.true(pushJson.layers.every(({uploaded}) => uploaded));

		// An independent client reads what was pushed: three layers whose digests are the layers' DiffIDs.
		const inspected = await execa('skopeo', ['inspect', '--tls-verify=false', `docker://${destination}`]);
		const image = JSON.parse(inspected.stdout) as {Layers: string[]; Digest: string; Os: string};
		t.deepEqual(
			image.Layers,
			pushJson.layers.map(({digest}) => digest),
		);
		t.is(image.Digest, pushJson.digest);
		t.is(image.Os, 'linux');
		for (const [index, id] of ids.entries()) {
			const record = JSON.parse(readFileSync(path.join(here.store, 'layers', `${id}.json`), 'utf8')) as {
				diffId: string;
			};
			t.is<string | undefined, string | undefined>(
				record.diffId,
				image.Layers[index],
				`layer ${index + 1}: blob digest = recorded DiffID`,
			);
		}

		const pulled = await pull(there, destination, 'deps', ['--json']);
		t.is(pulled.exitCode, 0, String(pulled.stderr));
		const pullJson = JSON.parse(String(pulled.stdout)) as PullJson;
		t.is(pullJson.layers.length, 3);
		t.true(pullJson.layers.every(({reused}) => !reused));
		t.deepEqual(
			pullJson.layers.map(({diffId}) => diffId),
			image.Layers,
		);

		const original = await viewOf(t, here, 'three');
		t.regex(original, /^d \d+ \S+ \d+ {2}gone$/m);
		t.notRegex(original, / del\.txt$/m, 'layer 1 deleted a source file');
		t.notRegex(original, / gone\/old$/m, 'layer 2 made gone/ opaque');
		t.notRegex(original, / doomed$/m, 'layer 2 deleted a file of layer 1');
		t.is(
			await viewOf(t, there, 'deps'),
			original,
			'the pulled stack shows the same tree over the same source',
		);

		// Pulling the same tag again stores nothing new; pushing again sends no layer.
		const before = layerCount(there);
		const again = await pull(there, destination, 'deps-again', ['--json']);
		t.is(again.exitCode, 0, String(again.stderr));
		const againJson = JSON.parse(String(again.stdout)) as PullJson;
		t.true(againJson.layers.every(({reused}) => reused));
		t.is(againJson.downloadedBytes, 0);
		t.is(againJson.layer, pullJson.layer, 'the same top layer: content-addressed');
		t.is(layerCount(there), before);

		const pushedAgain = await push(here, 'three', `${registry.address}/team/chain:v2`, ['--json']);
		t.is(pushedAgain.exitCode, 0, String(pushedAgain.stderr));
		const pushAgainJson = JSON.parse(String(pushedAgain.stdout)) as PushJson;
		t.true(
			pushAgainJson.layers.every(({uploaded}) => !uploaded),
			'the registry had every layer',
		);
		t.is(pushAgainJson.uploadedBytes, 0);
		t.is(pushAgainJson.digest, pushJson.digest, 'the same stack gives the same manifest');

		// What was pulled pushes back unchanged: its DiffIDs were recorded on import.
		const roundTrip = await push(there, 'deps', `${registry.address}/team/chain:v3`, ['--json']);
		t.is(roundTrip.exitCode, 0, String(roundTrip.stderr));
		t.is((JSON.parse(String(roundTrip.stdout)) as PushJson).digest, pushJson.digest);

		await assertStoreAtRest(t, here);
		await assertStoreAtRest(t, there);
	});

	test(`as ${user}: push --flatten sends one layer that pulls to the same view`, async (t) => {
		const registry = await startRegistry(t);
		const here = makeSandbox(t, user, sourceFiles);
		const there = makeSandbox(t, user, sourceFiles);
		await buildChain(t, here);
		const destination = `${registry.address}/team/flat:v1`;
		const pushed = await push(here, 'three', destination, ['--flatten', '--json']);
		t.is(pushed.exitCode, 0, String(pushed.stderr));
		t.is((JSON.parse(String(pushed.stdout)) as PushJson).layers.length, 1);
		const pulled = await pull(there, destination, 'flat', ['--json']);
		t.is(pulled.exitCode, 0, String(pulled.stderr));
		t.is((JSON.parse(String(pulled.stdout)) as PullJson).layers.length, 1);
		t.is(await viewOf(t, there, 'flat'), await viewOf(t, here, 'three'));
		await assertStoreAtRest(t, there);
	});

	test(`as ${user}: a pull killed midway names nothing and the next pull finishes it`, async (t) => {
		const registry = await startRegistry(t);
		const here = makeSandbox(t, user, sourceFiles);
		const there = makeSandbox(t, user, sourceFiles);
		await buildChain(t, here);
		const destination = `${registry.address}/team/chain:v1`;
		t.is((await push(here, 'three', destination)).exitCode, 0);

		const killed = await pull(there, destination, 'deps', [], {SCRATCH_CRASH_AT: 'pull-layer-imported'});
		t.is(killed.signal, 'SIGKILL', String(killed.stderr));
		t.false(hasRef(there, 'deps'), 'nothing is named');

		const resumed = await pull(there, destination, 'deps', ['--json']);
		t.is(resumed.exitCode, 0, String(resumed.stderr));
		const json = JSON.parse(String(resumed.stdout)) as PullJson;
		t.deepEqual(
			json.layers.map(({reused}) => reused),
			[true, false, false],
			'the layer finished before the kill is used, not fetched again',
		);
		t.is(layerCount(there), 3);
		t.is(await viewOf(t, there, 'deps'), await viewOf(t, here, 'three'));
		const gc = await scratch(there, ['gc', '--store', there.store]);
		t.is(gc.exitCode, 0, String(gc.stderr));
		t.is(layerCount(there), 3, 'gc keeps the named stack');
		await assertStoreAtRest(t, there);
	});
}

test('as root: skopeo and umoci unpack what push sent to the same tree a run shows over an empty source', async (t) => {
	const registry = await startRegistry(t);
	const here = makeSandbox(t, 'root', sourceFiles);
	await buildChain(t, here);
	const destination = `${registry.address}/team/chain:v1`;
	t.is((await push(here, 'three', destination)).exitCode, 0);
	const layout = path.join(here.root, 'layout');
	await execa('skopeo', [
		'copy',
		'--src-tls-verify=false',
		'--dest-oci-accept-uncompressed-layers',
		`docker://${destination}`,
		`oci:${layout}:v1`,
	]);
	const rootfs = path.join(here.root, 'rootfs');
	await execa('umoci', ['raw', 'unpack', '--image', `${layout}:v1`, rootfs]);
	const unpacked = await execa('sh', ['-c', viewScript], {cwd: rootfs});

	const empty = path.join(here.root, 'empty');
	mkdirSync(empty);
	const view = await scratch(here, [
		'run',
		'--store',
		here.store,
		'--src',
		empty,
		'--base',
		'three',
		'--',
		'sh',
		'-c',
		viewScript,
	]);
	t.is(view.exitCode, 0, String(view.stderr));
	// The root directory itself differs (the empty source's mode against umoci's); the rest must not.
	const withoutRoot = (text: string) =>
		text
			.split('\n')
			.filter((line) => !/^d \d+ \S+ \d+ {2}$/.test(line))
			.join('\n');
	t.is(withoutRoot(unpacked.stdout), withoutRoot(String(view.stdout)));
});

test('Basic auth: credentials from the environment and from a Docker config file; refused without them', async (t) => {
	const registry = await startRegistry(t, {auth: 'htpasswd'});
	const sandbox = makeSandbox(t, 'root', sourceFiles);
	await promoteLayer(t, sandbox, 'one', 'echo 1 > one');
	const destination = `${registry.address}/team/auth:v1`;

	const refused = await push(sandbox, 'one', destination, [], {HOME: sandbox.root});
	t.is(refused.exitCode, 1);
	t.regex(
		String(refused.stderr),
		/^scratch: registry 127\.0\.0\.1:\d+ refused .* anonymously; set SCRATCH_REGISTRY_USERNAME/,
	);
	t.is(String(refused.stderr).split('\n').filter(Boolean).length, 1);

	const wrong = await push(sandbox, 'one', destination, [], {
		SCRATCH_REGISTRY_USERNAME: 'alice',
		SCRATCH_REGISTRY_PASSWORD: 'wrong',
	});
	t.is(wrong.exitCode, 1);
	t.regex(
		String(wrong.stderr),
		/refused .* as alice \(credentials from SCRATCH_REGISTRY_USERNAME\/PASSWORD\)/,
	);

	const pushed = await push(sandbox, 'one', destination, [], {
		SCRATCH_REGISTRY_USERNAME: 'alice',
		SCRATCH_REGISTRY_PASSWORD: 'secret',
	});
	t.is(pushed.exitCode, 0, String(pushed.stderr));

	const dockerConfig = path.join(sandbox.root, 'docker');
	await execa('mkdir', ['-p', dockerConfig]);
	writeFileSync(
		path.join(dockerConfig, 'config.json'),
		JSON.stringify({auths: {[registry.address]: {auth: Buffer.from('alice:secret').toString('base64')}}}),
	);
	const other = makeSandbox(t, 'root', sourceFiles);
	const pulled = await pull(other, destination, 'one', [], {DOCKER_CONFIG: dockerConfig});
	t.is(pulled.exitCode, 0, String(pulled.stderr));

	writeFileSync(path.join(dockerConfig, 'config.json'), JSON.stringify({credsStore: 'secretservice'}));
	const helper = await pull(other, destination, 'two', [], {DOCKER_CONFIG: dockerConfig});
	t.is(helper.exitCode, 1);
	t.regex(
		String(helper.stderr),
		/credential helper \(docker-credential-secretservice\).*set SCRATCH_REGISTRY_USERNAME/,
	);
});

test('a blob changed in the registry is refused on pull, and nothing is named', async (t) => {
	const registry = await startRegistry(t);
	const here = makeSandbox(t, 'root', sourceFiles);
	const there = makeSandbox(t, 'root', sourceFiles);
	await promoteLayer(t, here, 'one', 'echo original > data');
	const destination = `${registry.address}/team/tamper:v1`;
	const pushed = await push(here, 'one', destination, ['--json']);
	t.is(pushed.exitCode, 0, String(pushed.stderr));
	const [layer] = (JSON.parse(String(pushed.stdout)) as PushJson).layers;
	const hex = (layer?.digest ?? '').slice('sha256:'.length);
	const blob = path.join(registry.data, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
	const tar = readFileSync(blob);
	const at = tar.indexOf('original');
	t.true(at > 0);
	tar.write('tampered', at);
	writeFileSync(blob, tar);

	const pulled = await pull(there, destination, 'one');
	t.is(pulled.exitCode, 1);
	t.regex(String(pulled.stderr), /DiffID|damaged or was tampered with/);
	t.is(String(pulled.stderr).split('\n').filter(Boolean).length, 1);
	t.false(hasRef(there, 'one'));
	t.is(layerCount(there), 0, 'nothing half-imported');
	await assertStoreAtRest(t, there);
});

const badInput: Array<{args: (address: string) => string[]; status: number; message: RegExp}> = [
	{args: () => ['push', 'one', 'x:v1'], status: 2, message: /names no registry/},
	{args: () => ['push', 'one', 'team/x:v1'], status: 2, message: /starts with "team", which is not a host/},
	{args: (a) => ['push', 'one', `${a}/team/x`], status: 2, message: /has no :TAG/},
	{args: (a) => ['push', 'one', `${a}/Team/x:v1`], status: 2, message: /has repository "Team\/x"/},
	{
		args: (a) => ['push', 'one', `${a}/team/x@sha256:${'0'.repeat(64)}`],
		status: 2,
		message: /a push needs a tag/,
	},
	{args: (a) => ['push', 'missing', `${a}/team/x:v1`], status: 1, message: /no snapshot named missing/},
	{
		args: () => ['push', 'one', '127.0.0.1:1/team/x:v1', '--insecure'],
		status: 1,
		message: /cannot reach registry 127\.0\.0\.1:1/,
	},
	{
		args: (a) => ['push', 'one', `${a}/team/x:v1`],
		status: 1,
		message: /cannot reach registry .*add --insecure/,
	},
	{args: (a) => ['pull', `${a}/team/x:v1`, '--name', '../x', '--insecure'], status: 2, message: /--name/},
	{
		args: (a) => ['pull', `${a}/team/nothing:v1`, '--name', 'x', '--insecure'],
		status: 1,
		message: /HTTP 404.*check the repository and tag/,
	},
	{args: (a) => ['pull', `${a}/team/x:v1`], status: 2, message: /missing required argument: name/},
];

for (const user of ['root', 'nobody'] as User[]) {
	test(`as ${user}: bad push and pull input gets one line, its exit status, and changes nothing`, async (t) => {
		const registry = await startRegistry(t);
		const sandbox = makeSandbox(t, user);
		await promoteLayer(t, sandbox, 'one', 'echo 1 > one');
		const listing = () => readdirSync(sandbox.store, {recursive: true}).map(String).sort();
		t.true(await eventually(() => storeLeftovers(sandbox.store).length === 0, 20_000));
		const before = listing();
		for (const {args, status, message} of badInput) {
			const argv = args(registry.address);
			const result = await scratch(sandbox, [...argv, '--store', sandbox.store]);
			const lines = String(result.stderr).split('\n').filter(Boolean);
			t.is(result.exitCode, status, `${argv.join(' ')}: ${String(result.stderr)}`);
			t.is(lines.length, 1, `${argv.join(' ')}: ${String(result.stderr)}`);
			t.regex(lines[0] ?? '', message, argv.join(' '));
			t.deepEqual(listing(), before, `${argv.join(' ')} changed nothing`);
		}
	});
}

test('Bearer auth: a token from the token service of the registry, with the credentials; refused without them', async (t) => {
	const registry = await startRegistry(t, {auth: 'token'});
	const here = makeSandbox(t, 'nobody', sourceFiles);
	const there = makeSandbox(t, 'nobody', sourceFiles);
	await promoteLayer(t, here, 'one', 'echo 1 > one');
	const destination = `${registry.address}/team/token:v1`;
	const credentials = {SCRATCH_REGISTRY_USERNAME: 'alice', SCRATCH_REGISTRY_PASSWORD: 'secret'};

	const refused = await push(here, 'one', destination);
	t.is(refused.exitCode, 1);
	t.regex(
		String(refused.stderr),
		/^scratch: the token service of registry 127\.0\.0\.1:\d+ refused repository:team\/token:pull,push anonymously \(HTTP 401\)/,
	);

	const pushed = await push(here, 'one', destination, ['--json'], credentials);
	t.is(pushed.exitCode, 0, String(pushed.stderr));
	const pulled = await pull(there, destination, 'one', [], credentials);
	t.is(pulled.exitCode, 0, String(pulled.stderr));
	t.is(await viewOf(t, there, 'one'), await viewOf(t, here, 'one'));
});

/** Carriage returns and escapes spelled out, so patterns can name them. */
function visible(text: string): string {
	return text.replaceAll('\r', '<CR>').replaceAll('\u001B', '<ESC>');
}

test('on a terminal, push and pull draw a progress line on stderr and erase it; elsewhere they do not', async (t) => {
	const registry = await startRegistry(t);
	const here = makeSandbox(t, 'root', sourceFiles);
	const there = makeSandbox(t, 'root', sourceFiles);
	await promoteLayer(t, here, 'big', 'head -c 8000000 /dev/urandom > big.bin');
	const destination = `${registry.address}/team/progress:v1`;
	const cli = path.resolve('dist/cli.cjs');
	// script(1) gives the command a terminal and copies what it writes there to its own stdout.
	const onTerminal = async (args: string[]) =>
		execa(
			'script',
			['-qec', [process.execPath, cli, ...args].map((word) => `'${word}'`).join(' '), '/dev/null'],
			{
				reject: false,
			},
		);
	const pushed = await onTerminal(['push', 'big', destination, '--store', here.store, '--insecure']);
	t.is(pushed.exitCode, 0, pushed.stdout);
	t.regex(visible(pushed.stdout), /<CR>push [\da-z]{6} \[[#.]{24}\] \d+% .*?<ESC>\[K/);
	t.regex(visible(pushed.stdout), /<CR><ESC>\[Kpushed big to /, 'the line is erased before the summary');

	const pulled = await onTerminal([
		'pull',
		destination,
		'--name',
		'big',
		'--store',
		there.store,
		'--insecure',
	]);
	t.is(pulled.exitCode, 0, pulled.stdout);
	t.regex(visible(pulled.stdout), /<CR>pull [\da-f]{12} \(1\/1\) \[[#.]{24}\] \d+% /);

	const piped = await pull(there, destination, 'again');
	t.is(piped.exitCode, 0);
	t.notRegex(visible(String(piped.stderr)), /<CR>|<ESC>/, 'no progress line when stderr is not a terminal');
});

test('pull reads what another tool wrote: Docker v2 manifests with gzip layers (skopeo copy --format v2s2 --dest-compress)', async (t) => {
	const registry = await startRegistry(t);
	const here = makeSandbox(t, 'root', sourceFiles);
	const there = makeSandbox(t, 'root', sourceFiles);
	await buildChain(t, here);
	const ours = `${registry.address}/team/chain:v1`;
	const theirs = `${registry.address}/other/chain:gz`;
	t.is((await push(here, 'three', ours)).exitCode, 0);
	await execa('skopeo', [
		'copy',
		'--src-tls-verify=false',
		'--dest-tls-verify=false',
		'--format',
		'v2s2',
		'--dest-compress',
		`docker://${ours}`,
		`docker://${theirs}`,
	]);
	const raw = await execa('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${theirs}`]);
	const manifest = JSON.parse(raw.stdout) as {mediaType: string; layers: Array<{mediaType: string}>};
	t.is(manifest.mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
	t.true(
		manifest.layers.every(({mediaType}) => mediaType === 'application/vnd.docker.image.rootfs.diff.tar.gzip'),
	);

	const pulled = await pull(there, theirs, 'deps', ['--json']);
	t.is(pulled.exitCode, 0, String(pulled.stderr));
	const json = JSON.parse(String(pulled.stdout)) as PullJson;
	t.is(json.layers.length, 3);
	t.is(await viewOf(t, there, 'deps'), await viewOf(t, here, 'three'));

	// The gzip blobs decompress to the same tars: pulling our own uncompressed image then fetches nothing.
	const again = await pull(there, ours, 'deps-plain', ['--json']);
	t.is(again.exitCode, 0, String(again.stderr));
	t.true((JSON.parse(String(again.stdout)) as PullJson).layers.every(({reused}) => reused));
	await assertStoreAtRest(t, there);
});
