//go:build !race

package attack

// raceEnabled is true when the tests run under the race detector.
const raceEnabled = false
