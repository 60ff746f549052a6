import {type ChildProcess, spawn} from 'node:child_process';
import {once} from 'node:events';
import {readFileSync} from 'node:fs';
import test from 'ava';
import {
	currentProcessIdentity,
	isProcessAlive,
	parseProcStat,
	readBootId,
	readChildPids,
	readStartTime,
} from '../src/system/process-identity.js';

/** A /proc/PID/stat line: fields 3 onwards are state, ppid, then zeros except starttime (field 22). */
function statLine(pid: number, comm: string, state: string, parentPid: number, startTime: number): string {
	const fields: Array<string | number> = [state, parentPid];
	for (let field = 5; field <= 52; field++) {
		fields.push(field === 22 ? startTime : 0);
	}

	return `${pid} (${comm}) ${fields.join(' ')}\n`;
}

/** Poll without fixed sleeps until `probe` returns a value; fail after a deadline. */
async function waitFor<T>(
	what: string,
	probe: () => T | undefined,
	timeoutMilliseconds = 10_000,
): Promise<T> {
	const deadline = Date.now() + timeoutMilliseconds;
	while (Date.now() < deadline) {
		const value = probe();
		if (value !== undefined) {
			return value;
		}

		await new Promise((resolve) => {
			setImmediate(resolve);
		});
	}

	throw new Error(`timed out waiting for ${what}`);
}

function commandName(pid: number): string | undefined {
	try {
		return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
	} catch {
		return undefined;
	}
}

function killQuietly(pid: number | undefined): void {
	if (pid === undefined) {
		return;
	}

	try {
		process.kill(pid, 'SIGKILL');
	} catch {}
}

/** Spawn a process that stays alive until the test ends, and kill it (by pid) in teardown. */
function spawnForTest(t: {teardown: (fn: () => void) => void}, file: string, args: string[]): ChildProcess {
	const child = spawn(file, args, {stdio: ['pipe', 'ignore', 'ignore']});
	t.teardown(() => {
		killQuietly(child.pid);
	});
	return child;
}

const statCases: Array<{title: string; comm: string}> = [
	{title: 'a plain command name', comm: 'node'},
	{title: 'a command name with spaces', comm: 'my worker 1'},
	{title: 'a command name with closing parentheses', comm: 'a) b) S 9 9'},
	{title: 'a command name that is only parentheses', comm: ')()('},
	{title: 'an empty command name', comm: ''},
];

for (const {title, comm} of statCases) {
	test(`parseProcStat reads state, parent pid and start time after ${title}`, (t) => {
		t.deepEqual(parseProcStat(statLine(4242, comm, 'S', 77, 987_654_321)), {
			state: 'S',
			parentPid: 77,
			startTime: 987_654_321,
		});
	});
}

test('parseProcStat reads the zombie state', (t) => {
	t.is(parseProcStat(statLine(5, 'defunct (x)', 'Z', 1, 12)).state, 'Z');
});

test('parseProcStat agrees with this process: its parent pid is process.ppid', (t) => {
	const stat = parseProcStat(readFileSync('/proc/self/stat', 'utf8'));
	t.is(stat.parentPid, process.ppid);
	t.true(Number.isInteger(stat.startTime) && stat.startTime > 0);
	t.is(stat.state, 'R');
});

test('readBootId returns the kernel boot id, a UUID', (t) => {
	t.is(readBootId(), readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim());
	t.regex(readBootId(), /^[\da-f]{8}-[\da-f]{4}-[\da-f]{4}-[\da-f]{4}-[\da-f]{12}$/);
});

test('currentProcessIdentity names this process: its pid, start time and boot id', (t) => {
	const identity = currentProcessIdentity();
	t.is(identity.pid, process.pid);
	t.is(identity.startTime, parseProcStat(readFileSync('/proc/self/stat', 'utf8')).startTime);
	t.is(identity.bootId, readBootId());
});

test('isProcessAlive is true for this process', (t) => {
	t.true(isProcessAlive(currentProcessIdentity()));
});

test('isProcessAlive is false when the start time differs (a reused pid)', (t) => {
	const identity = currentProcessIdentity();
	t.false(isProcessAlive({...identity, startTime: identity.startTime + 1}));
	t.false(isProcessAlive({...identity, startTime: 0}));
});

test('isProcessAlive is false for a lease from another boot', (t) => {
	const identity = currentProcessIdentity();
	t.false(isProcessAlive({...identity, bootId: '00000000-0000-0000-0000-000000000000'}));
});

test('isProcessAlive is false for a pid that does not exist', (t) => {
	const identity = currentProcessIdentity();
	// Above the largest pid_max Linux allows (2^22), so it never names a process.
	t.false(isProcessAlive({...identity, pid: 2 ** 22 + 1}));
	t.is(readStartTime(2 ** 22 + 1), undefined);
});

test('isProcessAlive turns false once a child process has exited', async (t) => {
	// `cat` waits on its stdin, so the identity is read while it surely runs.
	const child = spawnForTest(t, 'cat', []);
	const pid = child.pid as number;
	const exited = once(child, 'exit');
	const startTime = readStartTime(pid);
	t.not(startTime, undefined);
	const identity = {pid, startTime: startTime as number, bootId: readBootId()};
	t.true(isProcessAlive(identity));

	child.stdin?.end();
	await exited;

	t.false(isProcessAlive(identity));
});

test('readStartTime treats a zombie as dead', async (t) => {
	// `sleep` never reaps the `true` started before it, so `true` stays a zombie child of it.
	const parent = spawnForTest(t, 'sh', ['-c', 'true & exec sleep 30']);
	const parentPid = parent.pid as number;
	const zombiePid = await waitFor('the zombie child', () => {
		const [pid] = readChildPids(parentPid);
		if (pid === undefined) {
			return undefined;
		}

		try {
			return parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8')).state === 'Z' ? pid : undefined;
		} catch {
			return undefined;
		}
	});

	t.is(readStartTime(zombiePid), undefined);
	t.true(readStartTime(parentPid) !== undefined);
});

test('readChildPids lists the direct children of a process', async (t) => {
	const shell = spawnForTest(t, 'sh', ['-c', 'sleep 30 & wait']);
	const shellPid = shell.pid as number;
	// The child exists from the fork on, but is `sleep` only once it has exec'd.
	const children = await waitFor('the sleep child', () => {
		const pids = readChildPids(shellPid);
		return pids.length > 0 && pids.every((pid) => commandName(pid) === 'sleep') ? pids : undefined;
	});
	t.teardown(() => {
		for (const pid of children) {
			killQuietly(pid);
		}
	});

	t.is(children.length, 1);
	const sleepPid = children[0] as number;
	t.is(parseProcStat(readFileSync(`/proc/${sleepPid}/stat`, 'utf8')).parentPid, shellPid);
	// Only direct children: the sleep has none, and this process lists the shell among its own.
	t.deepEqual(readChildPids(sleepPid), []);
	t.true(readChildPids(process.pid).includes(shellPid));
});

test('readChildPids returns an empty list for a pid that does not exist', (t) => {
	t.deepEqual(readChildPids(2 ** 22 + 1), []);
});
