// Bundles. `scratch run` is on the hot path of every CI step: its entry is one CommonJS file (Node's
// CommonJS loader starts ~13 ms faster than its ESM loader here) with no yargs; the other commands
// load an ESM bundle with yargs on demand. The library is a separate ESM bundle.
import {readFileSync, rmSync} from 'node:fs';
import {build} from 'esbuild';

rmSync(new URL('dist', import.meta.url), {recursive: true, force: true});

const {version} = JSON.parse(readFileSync(new URL('package.json', import.meta.url), 'utf8'));
const common = {
	bundle: true,
	platform: 'node',
	target: 'node20',
	define: {SCRATCH_VERSION: JSON.stringify(version)},
	logLevel: 'warning',
};
// Bundled CommonJS dependencies of the ESM bundles may call require().
const requireBanner = {
	js: "import {createRequire as __scratchCreateRequire} from 'node:module'; const require = __scratchCreateRequire(import.meta.url);",
};

await Promise.all([
	build({...common, entryPoints: ['src/cli.ts'], outfile: 'dist/cli.cjs', format: 'cjs', external: ['./cli/commands.js', './cli/ws-cli.js']}),
	build({...common, entryPoints: ['src/cli/ws-cli.ts'], outfile: 'dist/cli/ws-cli.js', format: 'esm', banner: requireBanner}),
	build({...common, entryPoints: ['src/cli/commands.ts'], outfile: 'dist/cli/commands.js', format: 'esm', banner: requireBanner}),
	build({...common, entryPoints: ['src/index.ts'], outfile: 'dist/index.js', format: 'esm', banner: requireBanner}),
]);
