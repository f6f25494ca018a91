package sim

import (
	"bytes"
	"image/png"
	"testing"
)

func TestWritePlot(t *testing.T) {
	var reps []*Report
	for _, n := range []int{1000, 50, 200} {
		r := &Report{Nodes: n, RTTMS: 40, Find: Latency{P50RTT: 2, P95RTT: 3}, FindFirst: Latency{P50RTT: 1.5}}
		r.Baseline = &Report{Find: Latency{P50RTT: 6}}
		reps = append(reps, r)
	}
	var b bytes.Buffer
	if err := WritePlot(&b, reps); err != nil {
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
	if err := WritePlot(&b, nil); err == nil {
		t.Fatal("plot of nothing")
	}
}
