import {readFileSync} from 'node:fs';

/**
A process as the kernel knows it: a pid alone can be reused, pid + start time + boot id cannot.
This is what leases record so that a dead holder never blocks anyone.
*/
export type ProcessIdentity = {
	pid: number;
	/** Start time in clock ticks since boot (field 22 of /proc/PID/stat). */
	startTime: number;
	bootId: string;
};

let cachedBootId: string | undefined;

/** The kernel's random id for this boot; leases from an earlier boot are always dead. */
export function readBootId(): string {
	cachedBootId ??= readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
	return cachedBootId;
}

/** Fields of /proc/PID/stat after the command name, which may itself hold spaces and parentheses. */
export function parseProcStat(text: string): {state: string; parentPid: number; startTime: number} {
	const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
	// Field 3 (state) is index 0 here, field 4 (ppid) index 1, field 22 (starttime) index 19.
	return {state: fields[0] ?? '?', parentPid: Number(fields[1]), startTime: Number(fields[19])};
}

/** Start time of a live process, or undefined when it does not exist (or is a zombie). */
export function readStartTime(pid: number): number | undefined {
	try {
		const stat = parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
		return stat.state === 'Z' ? undefined : stat.startTime;
	} catch {
		return undefined;
	}
}

/** The identity of this process. */
export function currentProcessIdentity(): ProcessIdentity {
	const startTime = readStartTime(process.pid);
	if (startTime === undefined) {
		throw new Error('cannot read /proc/self/stat: is /proc mounted?');
	}

	return {pid: process.pid, startTime, bootId: readBootId()};
}

/** Whether the process a lease names is still running (same boot, same pid, same start time). */
export function isProcessAlive(identity: ProcessIdentity): boolean {
	return identity.bootId === readBootId() && readStartTime(identity.pid) === identity.startTime;
}

/** Direct children of a process, from /proc/PID/task/PID/children. */
export function readChildPids(pid: number): number[] {
	try {
		return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean).map(Number);
	} catch {
		return [];
	}
}
