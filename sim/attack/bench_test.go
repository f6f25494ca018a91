package attack

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cellnode/cellnode/sim"
)

// benchAttack runs as once per iteration and reports, besides the time,
// the real instances that finds pinning the publisher and finds pinning
// nothing lost, summed over the report's rows.
func benchAttack(b *testing.B, as AttackScenario) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	for range b.N {
		rep, err := RunAttack(ctx, as)
		if rep != nil {
			fmt.Print(rep) // b.Log truncates long reports
		}
		if err != nil {
			b.Fatal(err)
		}
		var pinnedLost, openLost, through int
		for _, r := range rep.Rows {
			through += r.Through
			switch {
			case strings.Contains(r.Case, "pinning the"):
				pinnedLost += r.Lost
			case strings.Contains(r.Case, "pinning nothing"):
				openLost += r.Lost
			}
		}
		b.ReportMetric(float64(pinnedLost), "pinned-lost")
		b.ReportMetric(float64(openLost), "unpinned-lost")
		b.ReportMetric(float64(through), "through")
	}
}

// BenchmarkFlood is the full-size flood: 1000 adversary peers put
// 10,000 records under one name (from one publisher key, from 10,000 node
// keys, from 200 publisher keys), with k = 20 storers on 40 honest nodes.
// It takes minutes:
//
//	go test ./sim -run '^$' -bench Flood -benchtime 1x -timeout 30m
func BenchmarkFlood(b *testing.B) {
	benchAttack(b, AttackScenario{Name: "flood-full", Attack: AttackFlood,
		Network:    sim.Scenario{Nodes: 40, BucketSize: 20, Latency: time.Millisecond, Seed: 14},
		FloodPeers: 1000, FloodRecords: 10000, Finds: 10})
}

// BenchmarkAttackReplayLarge is the replay scenario on 120 nodes, where a
// finder's first answers come from the storers less often than on 60:
//
//	go test ./sim -run '^$' -bench AttackReplayLarge -benchtime 1x
func BenchmarkAttackReplayLarge(b *testing.B) {
	as, err := LoadAttack("testdata/attack-replay.json")
	if err != nil {
		b.Fatal(err)
	}
	as.Name, as.Network.Nodes = "replay-120", 120
	benchAttack(b, as)
}
