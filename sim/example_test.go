package sim_test

import (
	"context"
	"fmt"
	"time"

	"github.com/cellnode/cellnode/sim"
)

// ExampleRun prints what a run's scenario fixes (the design, the nodes,
// the finds); what it measures varies from run to run and is checked by
// TestRunTiny.
func ExampleRun() {
	sc, err := sim.LoadScenario("testdata/tiny.json")
	if err != nil {
		fmt.Println(err)
		return
	}
	rep, err := sim.Run(context.Background(), sc)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s on %d nodes: %d finds, %d instance killed\n", rep.Design, rep.Nodes, rep.Finds, rep.Staleness.Killed)
	// Output: set-store on 8 nodes: 5 finds, 1 instance killed
}

func ExampleScenario_WithDefaults() {
	sc := sim.Scenario{Nodes: 200, Latency: 20 * time.Millisecond}.WithDefaults()
	fmt.Printf("%d nodes, k=%d, %d cells x %d instances, %d finds, RTT %v, %s\n",
		sc.Nodes, sc.BucketSize, sc.Cells, sc.InstancesPerCell, sc.Finds, sc.RTT(), sc.Design)
	// Output: 200 nodes, k=20, 4 cells x 3 instances, 100 finds, RTT 40ms, set-store
}
