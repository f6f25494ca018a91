// Package attack is the attack suite beside the simulator: each Attack
// builds a sim.Network of real nodes, adds adversary hosts and nodes on its
// mocknet (forgers, replayers, flooders, Sybils with ground peer IDs,
// skewed clocks, a partition) and reports, in an AttackReport, how many of
// the adversary's messages got past a defence and what finders lost. An
// AttackScenario is data (LoadAttack reads one from JSON; the suite's are
// in testdata/attack-*.json); docs/security.md gives the figures.
//
// The adversary speaks the instances protocol with messages of its own
// (internal/wire), so that it can send what an honest node never would.
package attack
