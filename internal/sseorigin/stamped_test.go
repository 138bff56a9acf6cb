package sseorigin

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestStamped(t *testing.T) {
	sent := time.Unix(1767225600, 123456789)
	const nanos = "1767225600123456789"
	for _, tc := range []struct {
		name    string
		seq     uint64
		size    int
		want    string // the wire, with the padding's length in place of the padding
		wantLen int
	}{
		{"padded", 42, 64, "id: 42\ndata: 42 " + nanos + " x*26\n\n", 64},
		{"bench default", 7, 256, "id: 7\ndata: 7 " + nanos + " x*220\n\n", 256},
		{"smallest padded", 7, 37, "id: 7\ndata: 7 " + nanos + " x*1\n\n", 37},
		{"no room for padding", 7, 36, "id: 7\ndata: 7 " + nanos + "\n\n", 35},
		{"exact fit", 7, 35, "id: 7\ndata: 7 " + nanos + "\n\n", 35},
		{"too small", 123, 0, "id: 123\ndata: 123 " + nanos + "\n\n", 39},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := NewStamped(tc.seq, sent, tc.size)
			wire := string(ev.AppendWire([]byte("before|"), "/ignored"))
			wire, ok := strings.CutPrefix(wire, "before|")
			if !ok {
				t.Fatalf("AppendWire did not append: %q", wire)
			}
			if got := abbreviate(wire); got != tc.want {
				t.Errorf("wire is %q, want %q", got, tc.want)
			}
			if len(wire) != tc.wantLen {
				t.Errorf("wire is %d bytes, want %d", len(wire), tc.wantLen)
			}
			if ev.Seq() != tc.seq {
				t.Errorf("Seq() = %d, want %d", ev.Seq(), tc.seq)
			}
			data := strings.TrimSuffix(wire[strings.Index(wire, "data: ")+len("data: "):], "\n\n")
			if string(ev.Data()) != data {
				t.Errorf("Data() = %q, want %q", ev.Data(), data)
			}
		})
	}
}

// abbreviate writes a run of padding as x*N.
func abbreviate(wire string) string {
	i := strings.Index(wire, "x")
	if i < 0 {
		return wire
	}
	j := i + len(wire[i:]) - len(strings.TrimLeft(wire[i:], "x"))
	return wire[:i] + "x*" + strconv.Itoa(j-i) + wire[j:]
}
