import {InvalidNameError} from '../errors.js';

/** Longest snapshot name, all segments and slashes included. */
export const maxNameLength = 128;

const segmentPattern = /^[A-Za-z\d][A-Za-z\d._-]*$/;

/*
Characters that would break a one-line message or play tricks on a terminal: C0 and C1 controls (a
newline splits the line, ESC starts a terminal sequence) and the Unicode format characters that reorder
or hide text (bidirectional overrides and isolates, zero-width characters, line and paragraph separators).
*/
const unprintablePattern =
	// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
	/[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/g;
const shortEscapes: Record<string, string> = {'\n': '\\n', '\r': '\\r', '\t': '\\t'};

/**
Text as it can be quoted in a one-line message: every character that could end the line or drive a
terminal is shown as an escape (`\n`, `\u001b`). Names, paths and option values that users type may hold
any of them.
*/
export function printable(text: string): string {
	return text.replace(
		unprintablePattern,
		(character) => shortEscapes[character] ?? `\\u${character.charCodeAt(0).toString(16).padStart(4, '0')}`,
	);
}

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
				? `segment '${printable(segment)}' holds a character other than letters, digits, '.', '_' and '-'`
				: `segment '${printable(segment)}' must start with a letter or digit`;
		}
	}

	return undefined;
}

/** Check a snapshot name; `role` says where it came from in the message (`--promote`, `NEW-NAME`, ...). */
export function checkName(name: string, role = 'name'): string {
	const problem = nameProblem(name);
	if (problem) {
		throw new InvalidNameError(
			`invalid ${role} ${printable(JSON.stringify(name))}: ${problem}; use segments of letters, digits, '.', '_' and '-' separated by /`,
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
