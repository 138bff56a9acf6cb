package sse

// The parser's first step, bytes to lines (byte order mark, line ends),
// how a stream ends, and its limits; parse_test.go has the fields.

import (
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
		{
			name:    "event of many lines just under maxSize",
			in:      "data: " + strings.Repeat("x", 20) + "\ndata: " + strings.Repeat("x", 20) + "\ndata: " + strings.Repeat("x", 20) + "\n\n",
			maxSize: 64,
			want:    []Event{{Data: strings.Repeat("x", 20) + "\n" + strings.Repeat("x", 20) + "\n" + strings.Repeat("x", 20), HasData: true}},
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
