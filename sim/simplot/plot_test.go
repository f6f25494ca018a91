package simplot

import (
	"bytes"
	"image/png"
	"testing"

	"github.com/cellnode/cellnode/sim"
)

func TestWrite(t *testing.T) {
	var reps []*sim.Report
	for _, n := range []int{1000, 50, 200} {
		r := &sim.Report{Nodes: n, RTTMS: 40, Find: sim.Latency{P50RTT: 2, P95RTT: 3}, FindFirst: sim.Latency{P50RTT: 1.5}}
		r.Baseline = &sim.Report{Find: sim.Latency{P50RTT: 6}}
		reps = append(reps, r)
	}
	var b bytes.Buffer
	if err := Write(&b, reps); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&b)
	if err != nil {
		t.Fatal(err)
	}
	if sz := img.Bounds().Size(); sz.X != 720 || sz.Y != 440 {
		t.Fatalf("size %v", sz)
	}
	// Some pixels carry the series' colours.
	blue := 0
	for y := range 440 {
		for x := range 720 {
			if r, g, bl, _ := img.At(x, y).RGBA(); r>>8 == 0x1f && g>>8 == 0x77 && bl>>8 == 0xb4 {
				blue++
			}
		}
	}
	if blue < 50 {
		t.Fatalf("%d pixels of the p50 line", blue)
	}
	if err := Write(&b, nil); err == nil {
		t.Fatal("plot of nothing")
	}
}
