package sim_test

import (
	"context"
	"fmt"
	"time"

	"github.com/cellnode/cellnode/sim"
)

func ExampleRun() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sc, err := sim.LoadScenario("testdata/tiny.json")
	if err != nil {
		fmt.Println(err)
		return
	}
	rep, err := sim.Run(ctx, sc)
	if err != nil {
		fmt.Println(err)
		return
	}
	st := rep.Staleness
	fmt.Printf("%s on %d nodes: %d finds, %.0f%% found everything; dead instance gone in time: %v\n",
		rep.Design, rep.Nodes, rep.Finds, 100*rep.Success, st.Killed == 1 && st.MaxMS <= st.BoundMS && st.Violations == 0)
	// Output: set-store on 8 nodes: 5 finds, 100% found everything; dead instance gone in time: true
}

func ExampleScenario_WithDefaults() {
	sc := sim.Scenario{Nodes: 200, Latency: 20 * time.Millisecond}.WithDefaults()
	fmt.Printf("%d nodes, k=%d, %d cells x %d instances, %d finds, RTT %v, %s\n",
		sc.Nodes, sc.BucketSize, sc.Cells, sc.InstancesPerCell, sc.Finds, sc.RTT(), sc.Design)
	// Output: 200 nodes, k=20, 4 cells x 3 instances, 100 finds, RTT 40ms, set-store
}
