package ssefanout

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
	for _, eol := range []struct{ name, s string }{{"LF", "\n"}, {"CRLF", "\r\n"}, {"CR", "\r"}} {
		b.Run(eol.name, func(b *testing.B) {
			stream := benchStream(1000, 256, eol.s)
			r := bytes.NewReader(stream)
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			for b.Loop() {
				r.Reset(stream)
				p := newParser(r, 1<<20)
				n := 0
				for {
					_, err := p.next()
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
					n++
				}
				if n != 1000 {
					b.Fatalf("parsed %d events, want 1000", n)
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
			buf := appendEvent(nil, &bc.ev, true)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				buf = appendEvent(buf[:0], &bc.ev, true)
			}
		})
	}
}
