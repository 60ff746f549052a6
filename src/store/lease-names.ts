import {isProcessAlive, type ProcessIdentity, readBootId} from '../system/process-identity.js';

/*
Entries that belong to a process for as long as it lives (a run being prepared, a lock holder) carry
their owner's identity in their name: `PREFIX.BOOT8.PID.START[.SUFFIX]`. Whoever finds one can tell
from the name alone whether its owner is alive; a dead owner's entry is debris, never an obstacle.
*/

/** A name that dies with `owner`. */
export function leaseName(prefix: string, owner: ProcessIdentity, suffix?: string): string {
	const name = `${prefix}.${owner.bootId.slice(0, 8)}.${owner.pid}.${owner.startTime}`;
	return suffix === undefined ? name : `${name}.${suffix}`;
}

/** Whether the owner named in a lease name still runs (false for anything that is not a lease name). */
export function isLeaseNameAlive(name: string): boolean {
	const [, bootPrefix, pid, startTime] = name.split('.');
	if (!bootPrefix || !pid || !startTime || !/^\d+$/.test(pid) || !/^\d+$/.test(startTime)) {
		return false;
	}

	const bootId = readBootId();
	return (
		bootId.startsWith(bootPrefix) && isProcessAlive({pid: Number(pid), startTime: Number(startTime), bootId})
	);
}
