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
	fmt.Printf("%s on %d nodes: %d announces, %d finds, %.0f%% found everything\n",
		rep.Design, rep.Scenario.Nodes, rep.Announces, rep.Finds, 100*rep.Success)
	// Output: set-store on 8 nodes: 4 announces, 5 finds, 100% found everything
}

func ExampleScenario_WithDefaults() {
	sc := sim.Scenario{Nodes: 200, Latency: 20 * time.Millisecond}.WithDefaults()
	fmt.Printf("%d nodes, k=%d, %d cells x %d instances, %d finds, RTT %v, %s\n",
		sc.Nodes, sc.BucketSize, sc.Cells, sc.InstancesPerCell, sc.Finds, sc.RTT(), sc.Design)
	// Output: 200 nodes, k=20, 4 cells x 3 instances, 100 finds, RTT 40ms, set-store
}
