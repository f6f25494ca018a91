package sim

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"slices"
	"strings"
)

// WritePlot draws find latency in RTTs against network size, one point per
// report (reports of the same scenario at different sizes, as a sweep
// makes them), and writes it as a PNG: the full set's p50 and p95, the
// first instance's p50 and, where the reports have one, the baseline's
// p50. The x axis is logarithmic.
func WritePlot(w io.Writer, reps []*Report) error {
	if len(reps) == 0 {
		return errors.New("sim: plot: no reports")
	}
	reps = slices.Clone(reps)
	slices.SortFunc(reps, func(a, b *Report) int { return a.Nodes - b.Nodes })
	series := []plotSeries{
		{"full set p50", color.RGBA{0x1f, 0x77, 0xb4, 0xff}, func(r *Report) float64 { return r.Find.P50RTT }},
		{"full set p95", color.RGBA{0xae, 0xc7, 0xe8, 0xff}, func(r *Report) float64 { return r.Find.P95RTT }},
		{"first instance p50", color.RGBA{0x2c, 0xa0, 0x2c, 0xff}, func(r *Report) float64 { return r.FindFirst.P50RTT }},
	}
	if reps[0].Baseline != nil {
		series = append(series, plotSeries{"kad-dht value records p50", color.RGBA{0xd6, 0x27, 0x28, 0xff},
			func(r *Report) float64 {
				if r.Baseline == nil {
					return math.NaN()
				}
				return r.Baseline.Find.P50RTT
			}})
	}
	p := newPlot(720, 440)
	xmin, xmax := math.Log10(float64(reps[0].Nodes)), math.Log10(float64(reps[len(reps)-1].Nodes))
	if xmax-xmin < 0.1 {
		xmin, xmax = xmin-0.5, xmax+0.5
	}
	ymax := 1.0
	for _, r := range reps {
		for _, s := range series {
			if v := s.y(r); !math.IsNaN(v) {
				ymax = max(ymax, v)
			}
		}
	}
	ymax = math.Ceil(ymax/0.78 + 0.2) // room for the legend above the lines
	p.frame(xmin, xmax, 0, ymax)
	for y := 0.0; y <= ymax; y++ {
		p.text(p.left-8-6*len(fmt.Sprint(y)), p.py(y)-3, fmt.Sprint(y), colText)
		p.hline(p.py(y), colGrid)
	}
	for _, r := range reps {
		x := p.px(math.Log10(float64(r.Nodes)))
		s := fmt.Sprint(r.Nodes)
		p.text(x-3*len(s), p.bottom+8, s, colText)
		p.vtick(x)
	}
	p.text((p.left+p.right)/2-42, p.bottom+24, "nodes (log scale)", colText)
	p.text(8, p.top-18, fmt.Sprintf("find latency in RTT (RTT %.0f ms)", reps[0].RTTMS), colText)
	// The legend, on a white box over the lines.
	lx, ly0 := p.right-206, p.top+2
	legend := image.Rect(lx, ly0, p.right-2, ly0+14*len(series)+6)
	for _, s := range series {
		legend.Max.X = max(legend.Max.X, lx+32+6*len(s.name))
	}
	for _, s := range series {
		var prev image.Point
		havePrev := false
		for _, r := range reps {
			v := s.y(r)
			if math.IsNaN(v) || v == 0 {
				havePrev = false
				continue
			}
			pt := image.Pt(p.px(math.Log10(float64(r.Nodes))), p.py(v))
			if havePrev {
				p.line(prev, pt, s.c)
			}
			p.dot(pt, s.c)
			prev, havePrev = pt, true
		}
	}
	p.box(legend)
	for k, s := range series {
		ly := ly0 + 6 + 14*k
		p.line(image.Pt(lx+6, ly+3), image.Pt(lx+26, ly+3), s.c)
		p.text(lx+32, ly, s.name, colText)
	}
	return png.Encode(w, p.img)
}

type plotSeries struct {
	name string
	c    color.RGBA
	y    func(*Report) float64
}

var (
	colText = color.RGBA{0x22, 0x22, 0x22, 0xff}
	colGrid = color.RGBA{0xe4, 0xe4, 0xe4, 0xff}
	colAxis = color.RGBA{0x55, 0x55, 0x55, 0xff}
)

// plot is a canvas with a data rectangle.
type plot struct {
	img                      *image.RGBA
	left, right, top, bottom int
	x0, x1, y0, y1           float64
}

func newPlot(w, h int) *plot {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = 0xff
	}
	return &plot{img: img, left: 56, right: w - 20, top: 36, bottom: h - 44}
}

func (p *plot) frame(x0, x1, y0, y1 float64) {
	p.x0, p.x1, p.y0, p.y1 = x0, x1, y0, y1
	p.line(image.Pt(p.left, p.bottom), image.Pt(p.right, p.bottom), colAxis)
	p.line(image.Pt(p.left, p.top), image.Pt(p.left, p.bottom), colAxis)
}

// px and py map data coordinates to pixels, with a margin inside the frame.
func (p *plot) px(x float64) int {
	m := 24.0
	return p.left + int(m+(x-p.x0)/(p.x1-p.x0)*(float64(p.right-p.left)-2*m))
}

func (p *plot) py(y float64) int {
	return p.bottom - int((y-p.y0)/(p.y1-p.y0)*float64(p.bottom-p.top))
}

func (p *plot) hline(y int, c color.RGBA) {
	for x := p.left + 1; x <= p.right; x++ {
		if p.img.RGBAAt(x, y) == (color.RGBA{0xff, 0xff, 0xff, 0xff}) {
			p.img.SetRGBA(x, y, c)
		}
	}
}

// box fills r with white and draws its border.
func (p *plot) box(r image.Rectangle) {
	for y := r.Min.Y; y <= r.Max.Y; y++ {
		for x := r.Min.X; x <= r.Max.X; x++ {
			c := color.RGBA{0xff, 0xff, 0xff, 0xff}
			if x == r.Min.X || x == r.Max.X || y == r.Min.Y || y == r.Max.Y {
				c = colGrid
			}
			p.img.SetRGBA(x, y, c)
		}
	}
}

func (p *plot) vtick(x int) {
	for y := p.bottom; y < p.bottom+5; y++ {
		p.img.SetRGBA(x, y, colAxis)
	}
}

// line draws a 2-pixel line (Bresenham, thickened).
func (p *plot) line(a, b image.Point, c color.RGBA) {
	dx, dy := abs(b.X-a.X), -abs(b.Y-a.Y)
	sx, sy := sign(b.X-a.X), sign(b.Y-a.Y)
	e := dx + dy
	for {
		p.img.SetRGBA(a.X, a.Y, c)
		p.img.SetRGBA(a.X, a.Y+1, c)
		if a == b {
			return
		}
		if e2 := 2 * e; e2 >= dy {
			e += dy
			a.X += sx
		} else {
			e += dx
			a.Y += sy
		}
	}
}

func (p *plot) dot(at image.Point, c color.RGBA) {
	for y := -3; y <= 3; y++ {
		for x := -3; x <= 3; x++ {
			if x*x+y*y <= 10 {
				p.img.SetRGBA(at.X+x, at.Y+y, c)
			}
		}
	}
}

// text writes s with a 5×7 bitmap font, 6 pixels a character; characters
// it has no glyph for are left blank.
func (p *plot) text(x, y int, s string, c color.RGBA) {
	for _, r := range strings.ToLower(s) {
		if g, ok := glyphs[r]; ok {
			for row, bits := range g {
				for col, b := range bits {
					if b == '#' {
						p.img.SetRGBA(x+col, y+row, c)
					}
				}
			}
		}
		x += 6
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func sign(x int) int {
	switch {
	case x < 0:
		return -1
	case x > 0:
		return 1
	}
	return 0
}

// glyphs is a 5×7 font: digits, lower-case letters and a little
// punctuation.
var glyphs = map[rune][7]string{
	'0': {" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "},
	'1': {"  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "},
	'2': {" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"},
	'3': {"#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "},
	'4': {"   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "},
	'5': {"#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "},
	'6': {"  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "},
	'7': {"#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "},
	'8': {" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "},
	'9': {" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "},
	'a': {"     ", "     ", " ### ", "    #", " ####", "#   #", " ####"},
	'b': {"#    ", "#    ", "# ## ", "##  #", "#   #", "#   #", "#### "},
	'c': {"     ", "     ", " ### ", "#    ", "#    ", "#   #", " ### "},
	'd': {"    #", "    #", " ## #", "#  ##", "#   #", "#   #", " ####"},
	'e': {"     ", "     ", " ### ", "#   #", "#####", "#    ", " ### "},
	'f': {"  ## ", " #  #", " #   ", "###  ", " #   ", " #   ", " #   "},
	'g': {"     ", " ####", "#   #", "#   #", " ####", "    #", " ### "},
	'h': {"#    ", "#    ", "# ## ", "##  #", "#   #", "#   #", "#   #"},
	'i': {"  #  ", "     ", " ##  ", "  #  ", "  #  ", "  #  ", " ### "},
	'j': {"   # ", "     ", "  ## ", "   # ", "   # ", "#  # ", " ##  "},
	'k': {"#    ", "#    ", "#  # ", "# #  ", "##   ", "# #  ", "#  # "},
	'l': {" ##  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "},
	'm': {"     ", "     ", "## # ", "# # #", "# # #", "#   #", "#   #"},
	'n': {"     ", "     ", "# ## ", "##  #", "#   #", "#   #", "#   #"},
	'o': {"     ", "     ", " ### ", "#   #", "#   #", "#   #", " ### "},
	'p': {"     ", "     ", "#### ", "#   #", "#### ", "#    ", "#    "},
	'q': {"     ", "     ", " ## #", "#  ##", " ####", "    #", "    #"},
	'r': {"     ", "     ", "# ## ", "##  #", "#    ", "#    ", "#    "},
	's': {"     ", "     ", " ### ", "#    ", " ### ", "    #", "#### "},
	't': {" #   ", " #   ", "###  ", " #   ", " #   ", " #  #", "  ## "},
	'u': {"     ", "     ", "#   #", "#   #", "#   #", "#  ##", " ## #"},
	'v': {"     ", "     ", "#   #", "#   #", "#   #", " # # ", "  #  "},
	'w': {"     ", "     ", "#   #", "#   #", "# # #", "# # #", " # # "},
	'x': {"     ", "     ", "#   #", " # # ", "  #  ", " # # ", "#   #"},
	'y': {"     ", "     ", "#   #", "#   #", " ####", "    #", " ### "},
	'z': {"     ", "     ", "#####", "   # ", "  #  ", " #   ", "#####"},
	'.': {"     ", "     ", "     ", "     ", "     ", " ##  ", " ##  "},
	',': {"     ", "     ", "     ", "     ", " ##  ", "  #  ", " #   "},
	'-': {"     ", "     ", "     ", "#####", "     ", "     ", "     "},
	'(': {"   # ", "  #  ", " #   ", " #   ", " #   ", "  #  ", "   # "},
	')': {" #   ", "  #  ", "   # ", "   # ", "   # ", "  #  ", " #   "},
	'/': {"     ", "    #", "   # ", "  #  ", " #   ", "#    ", "     "},
	'=': {"     ", "     ", "#####", "     ", "#####", "     ", "     "},
	'%': {"##   ", "##  #", "   # ", "  #  ", " #   ", "#  ##", "   ##"},
}
