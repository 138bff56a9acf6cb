package sse

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
)

// benchStream returns n events of eventSize bytes each, with an id, a type
// and one data line of JSON-looking text, and lines ended by eol.
func benchStream(n, eventSize int, eol string) []byte {
	var b bytes.Buffer
	for i := range n {
		head := fmt.Sprintf("id: %d%sevent: update%sdata: {\"seq\":%d,\"text\":\"", i, eol, eol, i)
		tail := "\"}" + eol + eol
		pad := max(eventSize-len(head)-len(tail), 0)
		b.WriteString(head)
		b.WriteString(strings.Repeat("x", pad))
		b.WriteString(tail)
	}
	return b.Bytes()
}

func BenchmarkParse(b *testing.B) {
	large := "data: " + strings.Repeat("x", 512<<10) + "\n\n"
	for _, bc := range []struct {
		name   string
		stream []byte
		events int
		chunk  int // bytes per Read; 0 means as many as asked for
	}{
		{"LF", benchStream(1000, 256, "\n"), 1000, 0},
		{"CRLF", benchStream(1000, 256, "\r\n"), 1000, 0},
		{"CR", benchStream(1000, 256, "\r"), 1000, 0},
		// CR-only lines after one large event has grown the buffer: a
		// search for LF through the whole buffer at each line was quadratic.
		{"CRAfterLargeEvent", append([]byte(large), benchStream(4000, 256, "\r")...), 4001, 0},
		// A large event arriving in TCP-segment-sized reads: rescanning
		// the line from its start after each read was quadratic.
		{"LargeEventInSmallReads", []byte(large), 1, 1400},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.stream)))
			b.ReportAllocs()
			for b.Loop() {
				var r io.Reader = bytes.NewReader(bc.stream)
				if bc.chunk > 0 {
					r = &chunkReader{b: bc.stream, size: bc.chunk}
				}
				p := NewParser(r, 1<<20)
				n := 0
				for {
					_, err := p.Next()
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
					n++
				}
				if n != bc.events {
					b.Fatalf("parsed %d events, want %d", n, bc.events)
				}
			}
		})
	}
}

func BenchmarkEncode(b *testing.B) {
	for _, bc := range []struct {
		name string
		ev   Event
	}{
		{"OneLine", Event{Type: "update", Data: `{"seq":1,"text":"` + strings.Repeat("x", 200) + `"}`, HasData: true, ID: "123456"}},
		{"MultiLine", Event{Type: "update", Data: strings.Repeat(strings.Repeat("x", 40)+"\n", 5), HasData: true, ID: "123456"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			buf := AppendEvent(nil, &bc.ev, true)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				buf = AppendEvent(buf[:0], &bc.ev, true)
			}
		})
	}
}
