// Bundle the CLI and the library: one small entry chunk for `scratch run`, yargs only in the chunk the
// other commands load. Bundling keeps start-up low (no node_modules resolution at run time).
import {readFileSync, rmSync} from 'node:fs';
import {build} from 'esbuild';

rmSync(new URL('dist', import.meta.url), {recursive: true, force: true});

const {version} = JSON.parse(readFileSync(new URL('package.json', import.meta.url), 'utf8'));

await build({
	entryPoints: ['src/cli.ts', 'src/index.ts'],
	outdir: 'dist',
	bundle: true,
	splitting: true,
	format: 'esm',
	platform: 'node',
	target: 'node20',
	chunkNames: 'chunks/[name]-[hash]',
	define: {SCRATCH_VERSION: JSON.stringify(version)},
	banner: {js: "import {createRequire as __scratchCreateRequire} from 'node:module'; const require = __scratchCreateRequire(import.meta.url);"},
	logLevel: 'warning',
});
