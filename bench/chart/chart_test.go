package chart

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
)

// svgSeries parses an SVG document strictly and returns its series'
// names with their point counts, and the polylines' point lists.
func svgSeries(t *testing.T, doc []byte) (map[string]int, []string) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(doc))
	d.Strict = true
	series := make(map[string]int)
	var lines []string
	root := ""
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not valid XML: %v\n%s", err, doc)
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		if root == "" {
			root = se.Name.Space + " " + se.Name.Local
		}
		attr := func(name string) string {
			for _, a := range se.Attr {
				if a.Name.Local == name {
					return a.Value
				}
			}
			return ""
		}
		switch se.Name.Local {
		case "g":
			n, err := strconv.Atoi(attr("data-points"))
			if err != nil {
				t.Fatalf("series %q: data-points %q", attr("data-series"), attr("data-points"))
			}
			series[attr("data-series")] = n
		case "polyline":
			lines = append(lines, attr("points"))
		}
	}
	if root != "http://www.w3.org/2000/svg svg" {
		t.Fatalf("root element %q, want svg in the SVG namespace", root)
	}
	return series, lines
}

func TestWriteSVGSeries(t *testing.T) {
	c := &Chart{
		Title: "p99 <latency> & clients", XLabel: "clients", YLabel: "ms", LogX: true,
		Series: []Series{
			{Name: "sse_fanout W2", X: []float64{1000, 10000, 20000, 100000}, Y: []float64{5, 40, 83, 400}},
			{Name: "nchan W2", X: []float64{1000, 10000}, Y: []float64{3, 30}},
			{Name: "bad points", X: []float64{0, 10, 20}, Y: []float64{1, math.NaN(), 2}},
		},
	}
	var buf bytes.Buffer
	if err := c.WriteSVG(&buf); err != nil {
		t.Fatal(err)
	}
	series, lines := svgSeries(t, buf.Bytes())
	want := map[string]int{"sse_fanout W2": 4, "nchan W2": 2, "bad points": 1} // x=0 is off a log axis, NaN is dropped
	for name, n := range want {
		if series[name] != n {
			t.Errorf("series %q has %d points, want %d (all: %v)", name, series[name], n, series)
		}
	}
	if len(lines) != 3 || len(strings.Fields(lines[0])) != 4 {
		t.Errorf("polylines %q, want 3, the first of 4 points", lines)
	}
	// The first series rises: each point is above (smaller y) the one before.
	var prev float64 = math.Inf(1)
	for _, p := range strings.Fields(lines[0]) {
		_, ys, _ := strings.Cut(p, ",")
		y, _ := strconv.ParseFloat(ys, 64)
		if y >= prev {
			t.Errorf("points %q: y does not rise", lines[0])
		}
		prev = y
	}
	if !strings.Contains(buf.String(), "p99 &lt;latency&gt; &amp; clients") {
		t.Error("the title is not escaped")
	}
}

func TestWriteSVGEmpty(t *testing.T) {
	var buf bytes.Buffer
	c := &Chart{Title: "nothing", XTime: true}
	if err := c.WriteSVG(&buf); err != nil {
		t.Fatal(err)
	}
	series, _ := svgSeries(t, buf.Bytes())
	if len(series) != 0 || !strings.Contains(buf.String(), "no data") {
		t.Errorf("series %v; want none, and 'no data'", series)
	}
}

func TestTicks(t *testing.T) {
	for _, tc := range []struct {
		lo, hi float64
		log    bool
		want   string
	}{
		{0, 83, false, "[0 20 40 60 80 100]"},
		{0, 1, false, "[0 0.2 0.4 0.6 0.8 1]"},
		{1000, 100000, true, "[1000 10000 100000]"},
		{0, 3600, false, "[0 1000 2000 3000 4000]"},
	} {
		got := strings.Join(strings.Fields(strings.Trim(strings.ReplaceAll(fmtFloats(ticks(tc.lo, tc.hi, tc.log)), ",", " "), "[]")), " ")
		if "["+got+"]" != tc.want {
			t.Errorf("ticks(%v, %v, %v) = [%s], want %s", tc.lo, tc.hi, tc.log, got, tc.want)
		}
	}
}

func fmtFloats(v []float64) string {
	var s []string
	for _, f := range v {
		s = append(s, strconv.FormatFloat(f, 'g', -1, 64))
	}
	return "[" + strings.Join(s, " ") + "]"
}
