import type {Writable} from 'node:stream';

/** How long background work waits for this process to exit before it starts anyway. */
export const releaseDelayMilliseconds = 500;

/*
Background work (the kernel's teardown of a discarded overlay, the deletion of its upper) would compete
with this process's own exit for the CPU. Such work waits for EOF on a pipe we hold: it starts when this
process exits, or after a short delay in a long-lived process using the library. The pipe never keeps
this process alive.
*/
export function releaseLater(stream: Writable & {unref?: () => void}): void {
	stream.on('error', () => {});
	stream.unref?.();
	setTimeout(() => stream.destroy(), releaseDelayMilliseconds).unref();
}
