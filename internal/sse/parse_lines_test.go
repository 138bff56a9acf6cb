package sse

// The parser's first step, bytes to lines (byte order mark, line ends),
// how a stream ends, and its limits; parse_test.go has the fields.

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

func TestParseLines(t *testing.T) {
	runParseCases(t, []parseCase{
		{
			name: "empty stream",
			in:   "",
		},
		{
			name: "one event",
			in:   "data: hello\n\n",
			want: []Event{{Data: "hello", HasData: true}},
		},
		{
			name: "only blank lines",
			in:   "\n\n\r\n\r\r\n",
		},
		// Bytes to lines: BOM.
		{
			name: "BOM dropped once at the start (wpt format-bom)",
			in:   bom + "data: 1\n\n" + bom + "data: 2\n\ndata: 3\n\n",
			want: []Event{{Data: "1", HasData: true}, {Data: "3", HasData: true}},
		},
		{
			name: "second BOM at the start is part of the field name (wpt format-bom-2)",
			in:   bom + bom + "data: 1\n\ndata: 2\n\ndata: 3\n\n",
			want: []Event{{Data: "2", HasData: true}, {Data: "3", HasData: true}},
		},
		{
			name: "BOM alone",
			in:   bom,
		},
		{
			name: "partial BOM is not dropped",
			in:   "\xEF\xBBdata: 1\n\ndata: 2\n\n",
			want: []Event{{Data: "2", HasData: true}},
		},
		{
			name: "BOM before a blank line",
			in:   bom + "\ndata: 1\n\n",
			want: []Event{{Data: "1", HasData: true}},
		},
		// Bytes to lines: line ends.
		{
			name: "LF",
			in:   "data: a\ndata: b\n\ndata: c\n\n",
			want: []Event{{Data: "a\nb", HasData: true}, {Data: "c", HasData: true}},
		},
		{
			name: "CR",
			in:   "data: a\rdata: b\r\rdata: c\r\r",
			want: []Event{{Data: "a\nb", HasData: true}, {Data: "c", HasData: true}},
		},
		{
			name: "CRLF",
			in:   "data: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n",
			want: []Event{{Data: "a\nb", HasData: true}, {Data: "c", HasData: true}},
		},
		{
			name: "mixed line ends",
			in:   "data:a\rdata:b\ndata:c\r\ndata:d\n\rdata:e\r\n\n",
			want: []Event{{Data: "a\nb\nc\nd", HasData: true}, {Data: "e", HasData: true}},
		},
		{
			name: "LF CR is two line ends",
			in:   "data: x\n\rdata: y\n\n",
			want: []Event{{Data: "x", HasData: true}, {Data: "y", HasData: true}},
		},
		{
			name: "CR CR is two line ends",
			in:   "data: x\r\rdata: y\r\r",
			want: []Event{{Data: "x", HasData: true}, {Data: "y", HasData: true}},
		},
		{
			name: "CRLF CRLF then CR",
			in:   "data: x\r\n\r\n\rdata: y\r\n\r",
			want: []Event{{Data: "x", HasData: true}, {Data: "y", HasData: true}},
		},
		{
			name: "newlines (wpt format-newlines)",
			in:   "data:test\r\ndata\ndata:test\r\n\r\n",
			want: []Event{{Data: "test\n\ntest", HasData: true}},
		},
		{
			name: "CR as the last byte ends the line but dispatches nothing",
			in:   "data: x\r",
		},
		{
			name: "LF then CR at the end dispatches",
			in:   "data: x\n\r",
			want: []Event{{Data: "x", HasData: true}},
		},
		// End of stream.
		{
			name: "trailing event without its blank line is discarded",
			in:   "data: a\n\ndata: b\n",
			want: []Event{{Data: "a", HasData: true}},
		},
		{
			name: "trailing partial line is discarded",
			in:   "data: a\n\ndata: b",
			want: []Event{{Data: "a", HasData: true}},
		},
		{
			name: "trailing id without its blank line is discarded",
			in:   "data: a\n\nid: 9\n",
			want: []Event{{Data: "a", HasData: true}},
		},
		{
			name: "data before final empty line (wpt format-data-before-final-empty-line)",
			in:   "retry:1000\ndata:test1\n\nid:test\ndata:test",
			want: []Event{{Data: "test1", HasData: true, Retry: 1000, HasRetry: true}},
		},
		{
			name:    "reader error after a complete event",
			in:      "data: a\n\ndata: b\n",
			readErr: errBoom,
			want:    []Event{{Data: "a", HasData: true}},
			wantErr: errBoom,
		},
		// Limits.
		{
			name: "very long line within limits",
			in:   "data: " + strings.Repeat(long, 20) + "\n\ndata: x\n\n",
			want: []Event{{Data: strings.Repeat(long, 20), HasData: true}, {Data: "x", HasData: true}},
		},
		{
			name:    "line exactly maxSize",
			in:      "data: " + strings.Repeat("x", 1018) + "\n\n",
			maxSize: 1024,
			want:    []Event{{Data: strings.Repeat("x", 1018), HasData: true}},
		},
		{
			name:    "line one past maxSize",
			in:      "data: ok\n\ndata: " + strings.Repeat("x", 1019) + "\n\n",
			maxSize: 1024,
			want:    []Event{{Data: "ok", HasData: true}},
			wantErr: ErrEventTooLarge,
		},
		{
			name:    "many events each under maxSize",
			in:      strings.Repeat("data: "+strings.Repeat("x", 50)+"\n\n", 100),
			maxSize: 64,
			want:    slices.Repeat([]Event{{Data: strings.Repeat("x", 50), HasData: true}}, 100),
		},
		// An event's size is the bytes of its data, event, id and retry
		// lines as sent (name, colon and value), line ends not counted: an
		// event of exactly maxSize bytes passes, one byte more is refused.
		{
			name:    "event of many lines exactly maxSize",
			in:      strings.Repeat("data: "+strings.Repeat("x", 10)+"\n", 4) + "\n",
			maxSize: 64,
			want:    []Event{{Data: strings.Repeat(strings.Repeat("x", 10)+"\n", 3) + strings.Repeat("x", 10), HasData: true}},
		},
		{
			name:    "event of many lines one byte past maxSize",
			in:      "data: ok\n\n" + strings.Repeat("data: "+strings.Repeat("x", 10)+"\n", 3) + "data: " + strings.Repeat("x", 11) + "\n\n",
			maxSize: 64,
			want:    []Event{{Data: "ok", HasData: true}},
			wantErr: ErrEventTooLarge,
		},
		{
			name:    "data, event and id lines exactly maxSize",
			in:      "data: " + strings.Repeat("d", 18) + "\nevent: " + strings.Repeat("e", 13) + "\nid: " + strings.Repeat("i", 16) + "\n\n",
			maxSize: 64,
			want:    []Event{{Type: strings.Repeat("e", 13), Data: strings.Repeat("d", 18), HasData: true, ID: strings.Repeat("i", 16), HasID: true}},
		},
		{
			name:    "one byte past maxSize in the data line",
			in:      "data: ok\n\ndata: " + strings.Repeat("d", 19) + "\nevent: " + strings.Repeat("e", 13) + "\nid: " + strings.Repeat("i", 16) + "\n\n",
			maxSize: 64,
			want:    []Event{{Data: "ok", HasData: true}},
			wantErr: ErrEventTooLarge,
		},
		{
			name:    "one byte past maxSize in the event line",
			in:      "data: ok\n\ndata: " + strings.Repeat("d", 18) + "\nevent: " + strings.Repeat("e", 14) + "\nid: " + strings.Repeat("i", 16) + "\n\n",
			maxSize: 64,
			want:    []Event{{Data: "ok", HasData: true}},
			wantErr: ErrEventTooLarge,
		},
		{
			name:    "one byte past maxSize in the id line",
			in:      "data: ok\n\ndata: " + strings.Repeat("d", 18) + "\nevent: " + strings.Repeat("e", 13) + "\nid: " + strings.Repeat("i", 17) + "\n\n",
			maxSize: 64,
			want:    []Event{{Data: "ok", HasData: true}},
			wantErr: ErrEventTooLarge,
		},
		{
			name:    "an id-only block past maxSize",
			in:      "data: ok\n\nid: " + strings.Repeat("i", 10) + "\nid: " + strings.Repeat("i", 10) + "\nid: " + strings.Repeat("i", 10) + "\n\n",
			maxSize: 40,
			want:    []Event{{Data: "ok", HasData: true}},
			wantErr: ErrEventTooLarge,
		},
		{
			name:    "a retry line counts",
			in:      "data: ok\n\nretry: 1000\ndata: " + strings.Repeat("x", 16) + "\n\n",
			maxSize: 32,
			want:    []Event{{Data: "ok", HasData: true}},
			wantErr: ErrEventTooLarge,
		},
		{
			name:    "comments and unknown fields are not counted",
			in:      "data: " + strings.Repeat("x", 26) + "\n:" + strings.Repeat("c", 31) + "\nfoo: " + strings.Repeat("f", 27) + "\n\n",
			maxSize: 32,
			want:    []Event{{Data: strings.Repeat("x", 26), HasData: true}},
		},
		{
			name:    "event over maxSize",
			in:      "data: ok\n\ndata: " + strings.Repeat("x", 40) + "\ndata: " + strings.Repeat("x", 40) + "\n\ndata: late\n\n",
			maxSize: 64,
			want:    []Event{{Data: "ok", HasData: true}},
			wantErr: ErrEventTooLarge,
		},
		{
			name:    "line that never ends",
			in:      "data: ok\n\ndata: " + strings.Repeat("x", 100),
			maxSize: 32,
			want:    []Event{{Data: "ok", HasData: true}},
			wantErr: ErrEventTooLarge,
		},
		{
			name:    "comment line past maxSize",
			in:      ":" + strings.Repeat("x", 100) + "\n\ndata: x\n\n",
			maxSize: 32,
			wantErr: ErrEventTooLarge,
		},
		{
			name:    "tiny maxSize",
			in:      "\n\n\n",
			maxSize: 1,
		},
		{
			name:    "tiny maxSize with a BOM",
			in:      bom + "\n",
			maxSize: 1,
			wantErr: ErrEventTooLarge,
		},
	})
}

// TestParseIDLimit checks the limit on an id: an id of exactly the limit
// is kept, one byte more stops the parser with ErrIDTooLong before the
// block is returned, and the error's text holds no more of the id than a
// short prefix. An id that holds a NUL is ignored, as the spec says,
// whatever its length.
func TestParseIDLimit(t *testing.T) {
	const limit = 1024
	atLimit := strings.Repeat("k", limit)
	overLimit := "secret-" + strings.Repeat("s", limit+1-len("secret-"))
	withNUL := strings.Repeat("n", 2*limit) + "\x00"
	in := "id: " + atLimit + "\ndata: a\n\n" +
		"id: " + withNUL + "\ndata: b\n\n" +
		"id: " + overLimit + "\ndata: c\n\n" +
		"data: d\n\n"
	want := []Event{
		{Data: "a", HasData: true, ID: atLimit, HasID: true},
		{Data: "b", HasData: true, ID: atLimit},
	}
	for _, mode := range readerModes {
		r := mode.open(in, nil)
		p := NewParser(r, 1<<20)
		p.SetMaxIDLen(limit)
		var got []Event
		var err error
		for {
			var ev Event
			if ev, err = p.Next(); err != nil {
				break
			}
			got = append(got, ev)
		}
		if c, ok := r.(io.Closer); ok {
			c.Close() // unblock the pipe writer after an early stop
		}
		if !errors.Is(err, ErrIDTooLong) {
			t.Errorf("%s: error = %v, want ErrIDTooLong", mode.name, err)
		} else if strings.Contains(err.Error(), overLimit[:32]) {
			t.Errorf("%s: error holds more than a prefix of the id: %.80q", mode.name, err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: events differ\n got: %s\nwant: %s", mode.name, fmtEvents(got), fmtEvents(want))
		}
	}
}
