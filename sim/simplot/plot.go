// Package simplot draws the simulator's reports: find latency in round
// trips against network size, as a PNG, with gonum.org/v1/plot. It is kept
// out of the cellnode binary (cmd/cellnode-plot uses it), because the
// plotting libraries' package inits cost every cellnode process about
// 3 ms at its start (docs/performance.md, session 15).
package simplot

import (
	"errors"
	"fmt"
	"image/color"
	"io"
	"math"
	"slices"

	"github.com/cellnode/cellnode/sim"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Write draws find latency in RTTs against network size, one point per
// report (reports of the same scenario at different sizes, as a sweep
// makes them), and writes it as a 720×440 PNG: the full set's p50 and p95,
// the first instance's p50 and, where the reports have one, the baseline's
// p50. The x axis is logarithmic. It draws with gonum.org/v1/plot.
func Write(w io.Writer, reps []*sim.Report) error {
	if len(reps) == 0 {
		return errors.New("simplot: no reports")
	}
	reps = slices.Clone(reps)
	slices.SortFunc(reps, func(a, b *sim.Report) int { return a.Nodes - b.Nodes })
	series := []plotSeries{
		{"full set p50", color.RGBA{0x1f, 0x77, 0xb4, 0xff}, func(r *sim.Report) float64 { return r.Find.P50RTT }},
		{"full set p95", color.RGBA{0xae, 0xc7, 0xe8, 0xff}, func(r *sim.Report) float64 { return r.Find.P95RTT }},
		{"first instance p50", color.RGBA{0x2c, 0xa0, 0x2c, 0xff}, func(r *sim.Report) float64 { return r.FindFirst.P50RTT }},
	}
	if reps[0].Baseline != nil {
		series = append(series, plotSeries{"kad-dht value records p50", color.RGBA{0xd6, 0x27, 0x28, 0xff},
			func(r *sim.Report) float64 {
				if r.Baseline == nil {
					return math.NaN()
				}
				return r.Baseline.Find.P50RTT
			}})
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("find latency in RTT (RTT %.0f ms)", reps[0].RTTMS)
	p.X.Label.Text = "nodes (log scale)"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = nodeTicks(reps)
	p.Y.Min = 0
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	ymax := 1.0
	for _, s := range series {
		var pts plotter.XYs
		for _, r := range reps {
			if v := s.y(r); !math.IsNaN(v) && v != 0 {
				pts = append(pts, plotter.XY{X: float64(r.Nodes), Y: v})
				ymax = max(ymax, v)
			}
		}
		if len(pts) == 0 {
			continue
		}
		l, sc, err := plotter.NewLinePoints(pts)
		if err != nil {
			return fmt.Errorf("simplot: %w", err)
		}
		l.Color, l.Width = s.c, vg.Points(1.5)
		sc.Color, sc.Shape, sc.Radius = s.c, draw.CircleGlyph{}, vg.Points(2.5)
		p.Add(l, sc)
		p.Legend.Add(s.name, l)
	}
	p.Y.Max = math.Ceil(ymax/0.78 + 0.2) // room for the legend above the lines
	if p.X.Min == p.X.Max {
		p.X.Min, p.X.Max = p.X.Min/3, p.X.Max*3
	}
	// 720×440 pixels at vgimg's 96 dpi.
	c := vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(720*vg.Inch/96, 440*vg.Inch/96), vgimg.UseDPI(96))}
	p.Draw(draw.New(c))
	_, err := c.WriteTo(w)
	return err
}

// nodeTicks labels the x axis at the reports' sizes.
func nodeTicks(reps []*sim.Report) plot.ConstantTicks {
	var t plot.ConstantTicks
	for _, r := range reps {
		t = append(t, plot.Tick{Value: float64(r.Nodes), Label: fmt.Sprint(r.Nodes)})
	}
	return t
}

type plotSeries struct {
	name string
	c    color.RGBA
	y    func(*sim.Report) float64
}
