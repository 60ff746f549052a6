import {InvalidNameError} from '../errors.js';

/** Longest snapshot name, all segments and slashes included. */
export const maxNameLength = 128;

const segmentPattern = /^[A-Za-z\d][A-Za-z\d._-]*$/;

/**
Why `name` is not a valid snapshot name, or undefined when it is. A name is one or more `/`-separated
segments, each `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 128 characters in all.
*/
export function nameProblem(name: string): string | undefined {
	if (name === '') {
		return 'it is empty';
	}

	if (name.length > maxNameLength) {
		return `it is ${name.length} characters long, the limit is ${maxNameLength}`;
	}

	for (const segment of name.split('/')) {
		if (segment === '') {
			return 'it has an empty segment (a leading, trailing or doubled /)';
		}

		if (!segmentPattern.test(segment)) {
			return /^[A-Za-z\d]/.test(segment)
				? `segment '${segment}' holds a character other than letters, digits, '.', '_' and '-'`
				: `segment '${segment}' must start with a letter or digit`;
		}
	}

	return undefined;
}

/** Check a snapshot name; `role` says where it came from in the message (`--promote`, `NEW-NAME`, ...). */
export function checkName(name: string, role = 'name'): string {
	const problem = nameProblem(name);
	if (problem) {
		throw new InvalidNameError(
			`invalid ${role} ${JSON.stringify(name)}: ${problem}; use segments of letters, digits, '.', '_' and '-' separated by /`,
		);
	}

	return name;
}

/** The file a name is stored in: `/` cannot appear in a file name and `+` cannot appear in a name. */
export function refFileName(name: string): string {
	return name.replaceAll('/', '+');
}

/** The name stored in a ref file, or undefined for files that are not refs (temporary files). */
export function nameFromRefFile(fileName: string): string | undefined {
	const name = fileName.replaceAll('+', '/');
	return nameProblem(name) ? undefined : name;
}
