// Package chart writes line charts as SVG, by hand, for the benchmark's
// results: no service and no plotting library, one file a chart that a
// browser or a markdown viewer shows as it is.
package chart

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Series is one line: its points, in the order they are drawn.
type Series struct {
	Name string
	X, Y []float64
}

// Chart is a line chart of one or more series on shared axes.
type Chart struct {
	Title  string
	XLabel string
	YLabel string
	// LogX draws the x axis in powers of ten (every x must be positive),
	// for client counts from 1,000 to 100,000.
	LogX bool
	// XTime labels the x axis as durations: x is in seconds.
	XTime  bool
	Series []Series
}

// The size of the drawing and its margins, in pixels.
const (
	width, height            = 760, 440
	left, right, top, bottom = 80, 200, 40, 60
)

// palette is the series' colours, in turn.
var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"}

// WriteSVG writes c as an SVG document. A chart with no points is drawn
// as empty axes, saying so.
func (c *Chart) WriteSVG(w io.Writer) error {
	bw := bufio.NewWriter(w)
	xmin, xmax, ymin, ymax, n := c.bounds()
	if n == 0 {
		xmin, xmax, ymin, ymax = 0, 1, 0, 1
	}
	ymin = math.Min(ymin, 0) // values are counts and times: show the zero
	xt := ticks(xmin, xmax, c.LogX)
	yt := ticks(ymin, ymax, false)
	xmin, xmax = math.Min(xmin, xt[0]), math.Max(xmax, xt[len(xt)-1])
	ymin, ymax = math.Min(ymin, yt[0]), math.Max(ymax, yt[len(yt)-1])
	px := func(x float64) float64 {
		if c.LogX {
			x, xmin, xmax := math.Log10(x), math.Log10(xmin), math.Log10(xmax)
			return left + (x-xmin)/(xmax-xmin)*(width-left-right)
		}
		return left + (x-xmin)/span(xmin, xmax)*(width-left-right)
	}
	py := func(y float64) float64 {
		return height - bottom - (y-ymin)/span(ymin, ymax)*(height-top-bottom)
	}

	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(bw, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(bw, `<text x="%d" y="24" font-size="15" font-weight="bold">%s</text>`+"\n", left, esc(c.Title))
	// Grid and ticks.
	for _, t := range xt {
		x := px(t)
		fmt.Fprintf(bw, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x, top, x, height-bottom)
		fmt.Fprintf(bw, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, height-bottom+16, esc(c.xTickLabel(t)))
	}
	for _, t := range yt {
		y := py(t)
		fmt.Fprintf(bw, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", left, y, width-right, y)
		fmt.Fprintf(bw, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, y+4, esc(number(t)))
	}
	fmt.Fprintf(bw, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", left, top, width-left-right, height-top-bottom)
	fmt.Fprintf(bw, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", left+(width-left-right)/2, height-bottom+40, esc(c.XLabel))
	fmt.Fprintf(bw, `<text transform="translate(18 %d) rotate(-90)" text-anchor="middle">%s</text>`+"\n", top+(height-top-bottom)/2, esc(c.YLabel))
	if n == 0 {
		fmt.Fprintf(bw, `<text x="%d" y="%d" text-anchor="middle" fill="#999">no data</text>`+"\n", left+(width-left-right)/2, top+(height-top-bottom)/2)
	}
	// Lines, points, legend.
	for i, s := range c.Series {
		color := palette[i%len(palette)]
		var pts []string
		for j := range s.X {
			if j < len(s.Y) && c.drawable(s.X[j], s.Y[j]) {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(s.X[j]), py(s.Y[j])))
			}
		}
		fmt.Fprintf(bw, `<g class="series" data-series="%s" data-points="%d">`+"\n", esc(s.Name), len(pts))
		fmt.Fprintf(bw, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", color, strings.Join(pts, " "))
		if len(pts) <= 50 {
			for _, p := range pts {
				x, y, _ := strings.Cut(p, ",")
				fmt.Fprintf(bw, `<circle cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", x, y, color)
			}
		}
		ly := top + 10 + i*18
		fmt.Fprintf(bw, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>`+"\n", width-right+12, ly, width-right+32, ly, color)
		fmt.Fprintf(bw, `<text x="%d" y="%d">%s</text>`+"\n", width-right+38, ly+4, esc(s.Name))
		fmt.Fprintln(bw, `</g>`)
	}
	fmt.Fprintln(bw, `</svg>`)
	return bw.Flush()
}

// drawable reports whether a point can be drawn on c's axes.
func (c *Chart) drawable(x, y float64) bool {
	ok := !math.IsNaN(x) && !math.IsInf(x, 0) && !math.IsNaN(y) && !math.IsInf(y, 0)
	return ok && (!c.LogX || x > 0)
}

// bounds is the range of the drawable points, and how many there are.
func (c *Chart) bounds() (xmin, xmax, ymin, ymax float64, n int) {
	xmin, ymin = math.Inf(1), math.Inf(1)
	xmax, ymax = math.Inf(-1), math.Inf(-1)
	for _, s := range c.Series {
		for j := range s.X {
			if j >= len(s.Y) || !c.drawable(s.X[j], s.Y[j]) {
				continue
			}
			n++
			xmin, xmax = math.Min(xmin, s.X[j]), math.Max(xmax, s.X[j])
			ymin, ymax = math.Min(ymin, s.Y[j]), math.Max(ymax, s.Y[j])
		}
	}
	return
}

func span(lo, hi float64) float64 {
	if hi > lo {
		return hi - lo
	}
	return 1
}

// ticks is about five round values covering lo to hi; powers of ten if
// logarithmic.
func ticks(lo, hi float64, log bool) []float64 {
	if log {
		var out []float64
		for p := math.Floor(math.Log10(lo)); p <= math.Ceil(math.Log10(hi)); p++ {
			out = append(out, math.Pow(10, p))
		}
		if len(out) < 2 {
			out = append(out, out[0]*10)
		}
		return out
	}
	if hi <= lo {
		hi = lo + 1
	}
	raw := (hi - lo) / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var out []float64
	for k := math.Floor(lo / step); k <= math.Ceil(hi/step); k++ {
		v, _ := strconv.ParseFloat(strconv.FormatFloat(k*step, 'g', 12, 64), 64) // 0.6, not 0.6000000000000001
		out = append(out, v)
	}
	return out
}

func (c *Chart) xTickLabel(t float64) string {
	if !c.XTime {
		return number(t)
	}
	switch {
	case t >= 3600 && math.Mod(t, 3600) == 0:
		return strconv.FormatFloat(t/3600, 'f', -1, 64) + "h"
	case t >= 60 && math.Mod(t, 60) == 0:
		return strconv.FormatFloat(t/60, 'f', -1, 64) + "m"
	}
	return number(t) + "s"
}

// number is a tick's label: 20000 as 20k, 1500000 as 1.5M.
func number(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e6:
		return strconv.FormatFloat(v/1e6, 'g', 4, 64) + "M"
	case a >= 1e3:
		return strconv.FormatFloat(v/1e3, 'g', 4, 64) + "k"
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// esc escapes text for XML.
func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
