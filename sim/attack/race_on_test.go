//go:build race

package attack

// raceEnabled is true when the tests run under the race detector, which
// makes them several times slower: the heaviest scenarios run smaller.
const raceEnabled = true
