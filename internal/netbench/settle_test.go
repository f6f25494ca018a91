package netbench

import (
	"context"
	"testing"
	"time"
)

// fakeCPU is CPU time used at busy cores until quietAt, then at quiet cores.
func fakeCPU(start time.Time, quietAt time.Duration, busy, quiet float64) func() time.Duration {
	return func() time.Duration {
		el := time.Since(start)
		if el <= quietAt {
			return time.Duration(busy * float64(el))
		}
		return time.Duration(busy*float64(quietAt) + quiet*float64(el-quietAt))
	}
}

func TestSettleWaitsForTheQuiet(t *testing.T) {
	start := time.Now()
	waited, rate, ok := settle(context.Background(), fakeCPU(start, 150*time.Millisecond, 2, 0.05), 0.5, 20*time.Millisecond, 10*time.Second)
	if !ok || rate > 0.5 {
		t.Fatalf("settle = %v, %.2f cores, %v; want settled below 0.5 cores", waited, rate, ok)
	}
	if waited < 150*time.Millisecond {
		t.Fatalf("settled after %v, while the processes were busy for 150ms", waited)
	}
}

func TestSettleGivesUp(t *testing.T) {
	waited, rate, ok := settle(context.Background(), fakeCPU(time.Now(), time.Hour, 2, 0), 0.5, 10*time.Millisecond, 100*time.Millisecond)
	if ok {
		t.Fatalf("settled at %.2f cores while always busy", rate)
	}
	if waited < 100*time.Millisecond || waited > 5*time.Second {
		t.Fatalf("gave up after %v, want about the 100ms maximum", waited)
	}
}

func TestSettleOff(t *testing.T) {
	calls := 0
	cpu := func() time.Duration { calls++; return 0 }
	if waited, _, ok := settle(context.Background(), cpu, 0, time.Hour, time.Hour); !ok || waited != 0 || calls != 0 {
		t.Fatalf("settle with 0 cores: waited %v, ok %v, %d reads of the CPU; want an immediate return", waited, ok, calls)
	}
}

func TestSettleEndsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, ok := settle(ctx, fakeCPU(time.Now(), time.Hour, 2, 0), 0.5, time.Hour, time.Hour); ok {
		t.Fatal("settled with a cancelled context")
	}
}
