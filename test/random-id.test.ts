import test from 'ava';
import {randomId} from '../src/system/random-id.js';

test('random ids are 12 lowercase letters and digits by default and never look like a flag', (t) => {
	for (let index = 0; index < 1000; index++) {
		t.regex(randomId(), /^[\da-z]{12}$/);
	}
});

test('random ids use the whole 32-symbol alphabet and do not repeat', (t) => {
	const ids = new Set<string>();
	const symbols = new Set<string>();
	for (let index = 0; index < 20_000; index++) {
		const id = randomId();
		ids.add(id);
		for (const symbol of id) {
			symbols.add(symbol);
		}
	}

	t.is(ids.size, 20_000);
	t.is(symbols.size, 32);
	t.is(randomId(5).length, 5);
});
