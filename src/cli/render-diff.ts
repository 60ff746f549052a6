import type {LayerChange, LayerDiff} from '../layer/diff.js';

const colorOf: Record<LayerChange['change'], string> = {
	A: '\u001B[32m',
	M: '\u001B[33m',
	D: '\u001B[31m',
};
const resetColor = '\u001B[39m';

/** Control characters, quotes and backslashes would make a line ambiguous (or break it in two). */
function needsQuoting(text: string): boolean {
	return [...text].some((character) => {
		const code = character.codePointAt(0) as number;
		return code < 0x20 || code === 0x7f || character === '"' || character === '\\';
	});
}

function displayPath(change: LayerChange): string {
	const shown = change.type === 'directory' ? `${change.path}/` : change.path;
	// Quoted as a JSON string, as git quotes odd paths, so each change stays on one line.
	return needsQuoting(shown) ? JSON.stringify(shown) : shown;
}

/**
Text for `scratch diff`: one line per change, `A path`, `M path` or `D path`; directories end in `/`
and a replaced (opaque) directory is noted. With `color`, added lines are green, modified yellow and
deleted red. An empty diff renders as an empty string.
*/
export function renderDiff(diff: LayerDiff, {color}: {color: boolean}): string {
	return diff.changes
		.map((change) => {
			const line = `${change.change} ${displayPath(change)}${change.opaque ? ' (replaced)' : ''}`;
			return `${color ? `${colorOf[change.change]}${line}${resetColor}` : line}\n`;
		})
		.join('');
}
