/*
Rows 16-18: the fuse backend (fuse-overlayfs) next to the kernel backend, on the same machine in the
same run: start-up of a run that does nothing, a command that writes 20,000 files (every write goes
through the FUSE daemon), and a promotion of those writes (which under fuse also unmounts the view
cleanly and normalises the upper into the store's layer format).
*/
import path from 'node:path';
import {
	integerFromEnvironment,
	interleave,
	progress,
	type Row,
	ratioRow,
	scratchCommand,
	syncAll,
	timeScratch,
	type Workspace,
	waitForQuietStore,
} from './harness.js';

// Each write sample creates 20,000 files, so it gets fewer samples than the start-up row.
export const fuseWriteIterations = integerFromEnvironment('BENCH_FUSE_ITERATIONS', 8, 1);

const fileCount = 20_000;
// 20 dirs of 1,000 files, made by one xargs: the command's own work is the same under both backends.
const writeScript = 'for d in $(seq 1 20); do mkdir d$d; (cd d$d && seq 1 1000 | xargs touch); done';

export async function fuseStartupRow(workspace: Workspace, id: number): Promise<Row> {
	progress(`row ${id}: scratch run -- true, fuse vs kernel`);
	const measured = await interleave(`row ${id}`, [
		{
			name: 'scratch run --backend fuse -- true',
			sample: () => timeScratch(workspace, workspace.smallTree, ['true'], ['--backend', 'fuse']),
			settle: () => waitForQuietStore(workspace.store),
		},
		{
			name: 'scratch run --backend kernel -- true',
			sample: () => timeScratch(workspace, workspace.smallTree, ['true'], ['--backend', 'kernel']),
			settle: () => waitForQuietStore(workspace.store),
		},
	]);
	return ratioRow(id, '`scratch run -- true`: `--backend fuse` vs `--backend kernel`', measured, {
		label: 'report',
	});
}

// After a sample that wrote and deleted 20,000 files: the deletion done and flushed (this disk discards
// freed blocks at each journal commit, which otherwise stalls the next sample's file creations).
async function settleWrites(store: string): Promise<void> {
	await waitForQuietStore(store);
	syncAll();
}

export async function fuseWriteRow(workspace: Workspace, id: number): Promise<Row> {
	progress(`row ${id}: a command writing ${fileCount} files, fuse vs kernel`);
	const measured = await interleave(`row ${id}`, [
		{
			name: `scratch run --backend fuse -- (write ${fileCount} files)`,
			sample: () =>
				timeScratch(workspace, workspace.smallTree, ['sh', '-c', writeScript], ['--backend', 'fuse']),
			settle: () => waitForQuietStore(workspace.store),
			iterations: fuseWriteIterations,
		},
		{
			name: `scratch run --backend kernel -- (write ${fileCount} files)`,
			sample: () =>
				timeScratch(workspace, workspace.smallTree, ['sh', '-c', writeScript], ['--backend', 'kernel']),
			settle: () => settleWrites(workspace.store),
			iterations: fuseWriteIterations,
		},
	]);
	return ratioRow(
		id,
		`a command writing ${fileCount.toLocaleString('en-US')} files (20 dirs): \`--backend fuse\` vs \`--backend kernel\`, whole run`,
		measured,
		{label: 'report'},
		'file creation on this disk gets faster as a run of samples goes on (fresh ext4 block groups are initialised as they are first used), so only the two sides of one run compare; every write goes through the FUSE daemon, without its writeback cache (writeback=0, for ENOSPC)',
	);
}

export async function fusePromoteRow(workspace: Workspace, id: number): Promise<Row> {
	progress(`row ${id}: run --promote of ${fileCount} files, fuse vs kernel`);
	const store = path.join(workspace.root, 'store-fuse-promote');
	const settle = async () => {
		// The replaced layer is unreachable: free it (untimed) so the store does not grow.
		await scratchCommand(workspace, ['gc', '--store', store]);
		await settleWrites(store);
	};

	const measured = await interleave(`row ${id}`, [
		{
			name: `scratch run --backend fuse --promote -- (write ${fileCount} files)`,
			sample: () =>
				timeScratch(
					workspace,
					workspace.smallTree,
					['sh', '-c', writeScript],
					['--backend', 'fuse', '--promote', 'fuse'],
					store,
				),
			settle,
			iterations: fuseWriteIterations,
		},
		{
			name: `scratch run --backend kernel --promote -- (write ${fileCount} files)`,
			sample: () =>
				timeScratch(
					workspace,
					workspace.smallTree,
					['sh', '-c', writeScript],
					['--backend', 'kernel', '--promote', 'kernel'],
					store,
				),
			settle,
			iterations: fuseWriteIterations,
		},
	]);
	return ratioRow(
		id,
		`\`run --promote\` of a command writing ${fileCount.toLocaleString('en-US')} files: \`--backend fuse\` vs \`--backend kernel\`, whole run`,
		measured,
		{label: 'report'},
		'the fuse side includes its clean unmount and the normalisation of the upper (opaque marks, fuse-overlayfs xattrs) into the layer format',
	);
}
