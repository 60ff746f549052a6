/**
Fault injection for tests: when `SCRATCH_CRASH_AT` names this step, the process SIGKILLs itself there,
as a power cut or the OOM killer would, so tests can check that every step leaves a store `gc` repairs.
The steps are listed in the README.
*/
export function crashPoint(step: string): void {
	if (process.env['SCRATCH_CRASH_AT'] === step) {
		process.kill(process.pid, 'SIGKILL');
	}
}
