package sse

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// parseAll reads r to its end with a parser and returns every block the
// parser returned and the error that stopped it.
func parseAll(r io.Reader, maxSize int) ([]Event, error) {
	p := NewParser(r, maxSize)
	var evs []Event
	for {
		ev, err := p.Next()
		if err != nil {
			return evs, err
		}
		evs = append(evs, ev)
	}
}

// encodeAll encodes evs, each with its id, as one event stream.
func encodeAll(evs []Event) []byte {
	var out []byte
	for i := range evs {
		out = AppendEvent(out, &evs[i], true)
	}
	return out
}

// seen is what an EventSource observes of a block: the fields that survive
// an encode and a parse.
type seen struct {
	Type    string
	Data    string
	HasData bool
	ID      string
}

func seenOf(evs []Event) []seen {
	var s []seen
	for _, ev := range evs {
		s = append(s, seen{ev.Type, ev.Data, ev.HasData, ev.ID})
	}
	return s
}

// oneByteReader returns one byte per Read, so every CRLF is split across
// two reads.
type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

// chunkReader returns at most size bytes per Read.
type chunkReader struct {
	b    []byte
	size int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), c.size, len(c.b))
	n = copy(p, c.b[:n])
	c.b = c.b[n:]
	return n, nil
}

// splitAfterCR cuts s just after every CR, so a CR always ends one chunk
// and the LF of a CRLF always starts the next.
func splitAfterCR(s string) []string {
	var chunks []string
	for {
		i := strings.IndexByte(s, '\r')
		if i < 0 {
			break
		}
		chunks = append(chunks, s[:i+1])
		s = s[i+1:]
	}
	if s != "" {
		chunks = append(chunks, s)
	}
	return chunks
}

// chunksReader returns the chunks one per Read, then err.
type chunksReader struct {
	chunks []string
	err    error
}

func (c *chunksReader) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, c.err
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	if c.chunks[0] == "" {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

// pipeReader writes the stream into an io.Pipe, one write per chunk, cut
// after every CR, and closes it with err (io.EOF when err is nil).
func pipeReader(s string, err error) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		for _, c := range splitAfterCR(s) {
			if _, werr := pw.Write([]byte(c)); werr != nil {
				return
			}
		}
		pw.CloseWithError(err)
	}()
	return pr
}

// readerModes are the ways the table tests feed a stream to the parser.
// Each one ends with err after the stream, or io.EOF when err is nil.
var readerModes = []struct {
	name string
	open func(s string, err error) io.Reader
}{
	{"whole", func(s string, err error) io.Reader {
		return io.MultiReader(strings.NewReader(s), iotest.ErrReader(errOrEOF(err)))
	}},
	{"byte by byte", func(s string, err error) io.Reader {
		return oneByteReader{io.MultiReader(strings.NewReader(s), iotest.ErrReader(errOrEOF(err)))}
	}},
	{"iotest.OneByteReader", func(s string, err error) io.Reader {
		return iotest.OneByteReader(io.MultiReader(strings.NewReader(s), iotest.ErrReader(errOrEOF(err))))
	}},
	{"iotest.DataErrReader", func(s string, err error) io.Reader {
		return iotest.DataErrReader(io.MultiReader(strings.NewReader(s), iotest.ErrReader(errOrEOF(err))))
	}},
	{"split after CR", func(s string, err error) io.Reader {
		return &chunksReader{chunks: splitAfterCR(s), err: errOrEOF(err)}
	}},
	{"io.Pipe", pipeReader},
}

func errOrEOF(err error) error {
	if err == nil {
		return io.EOF
	}
	return err
}

var errBoom = errors.New("boom")

func TestParseStream(t *testing.T) {
	const bom = "\xEF\xBB\xBF"
	long := strings.Repeat("0123456789", 500) // 5000 bytes, past the initial buffer
	tests := []struct {
		name    string
		in      string
		maxSize int   // 0 means 1 MiB
		readErr error // what the reader returns after in; nil means io.EOF
		want    []Event
		wantErr error // nil means io.EOF
	}{
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
		// Lines to fields.
		{
			name: "one leading space is removed",
			in:   "data:x\n\ndata: x\n\ndata:  x\n\ndata: \n\n",
			want: []Event{
				{Data: "x", HasData: true},
				{Data: "x", HasData: true},
				{Data: " x", HasData: true},
				{Data: "", HasData: true},
			},
		},
		{
			name: "tab is not a space (wpt format-leading-space)",
			in:   "data:\ttest\rdata: \ndata:test\n\n",
			want: []Event{{Data: "\ttest\n\ntest", HasData: true}},
		},
		{
			name: "field without colon (wpt format-field-data)",
			in:   "data:\n\ndata\ndata\n\ndata:test\n\n",
			want: []Event{
				{Data: "", HasData: true},
				{Data: "\n", HasData: true},
				{Data: "test", HasData: true},
			},
		},
		{
			name: "colon in the value",
			in:   "event: a:b\ndata: c:d\nid: e:f\n\n",
			want: []Event{{Type: "a:b", Data: "c:d", HasData: true, ID: "e:f", HasID: true}},
		},
		{
			name: "space before the colon is part of the name",
			in:   "data : x\n\n data: y\n\ndata: z\n\n",
			want: []Event{{Data: "z", HasData: true}},
		},
		{
			name: "comments (wpt format-comments)",
			in: "data:1\r:\x00\n:\r\ndata:2\n:" + long + "\rdata:3\n:data:fail\r:" + long +
				"\ndata:4\n\n",
			want: []Event{{Data: "1\n2\n3\n4", HasData: true}},
		},
		{
			name: "comment only block",
			in:   ": hello\n\n:\n\n: ping\r\n\r\ndata: x\n\n",
			want: []Event{{Data: "x", HasData: true}},
		},
		{
			name: "unknown fields ignored (wpt format-field-unknown)",
			in:   "data:test\n data\ndata\nfoobar:xxx\njustsometext\n:thisisacommentyay\ndata:test\n\n",
			want: []Event{{Data: "test\n\ntest", HasData: true}},
		},
		{
			name: "unknown field alone fires nothing",
			in:   "foo: bar\n\n",
		},
		{
			name: "field names are case-sensitive",
			in:   "Data: x\n\nDATA: y\n\nEvent: e\ndata: z\n\nID: 1\n\nRetry: 1\n\n",
			want: []Event{{Data: "z", HasData: true}},
		},
		{
			name: "field parsing (wpt format-field-parsing)",
			in: "data:\x00\ndata:  2\rData:1\ndata\x00:2\ndata:1\r\x00data:4\nda-ta:3\rdata_5\n" +
				"data:3\rdata:\r\n data:32\ndata:4\n\n",
			want: []Event{{Data: "\x00\n 2\n1\n3\n\n4", HasData: true}},
		},
		{
			name: "NUL data (wpt format-null-character)",
			in:   "data:\x00\n\n\n\n",
			want: []Event{{Data: "\x00", HasData: true}},
		},
		// event.
		{
			name: "event type, then message (wpt format-field-event)",
			in:   "event:test\ndata:x\n\ndata:x\n\n",
			want: []Event{{Type: "test", Data: "x", HasData: true}, {Data: "x", HasData: true}},
		},
		{
			name: "empty event type is message (wpt format-field-event-empty)",
			in:   "event: \ndata:data\n\n",
			want: []Event{{Data: "data", HasData: true}},
		},
		{
			name: "last event field wins",
			in:   "event: a\nevent: b\ndata: x\n\n",
			want: []Event{{Type: "b", Data: "x", HasData: true}},
		},
		{
			name: "event without data does not fire and its type is reset",
			in:   "event: e\n\ndata: x\n\n",
			want: []Event{{Type: "e"}, {Data: "x", HasData: true}},
		},
		{
			name: "event type after the data still counts",
			in:   "data: x\nevent: late\n\n",
			want: []Event{{Type: "late", Data: "x", HasData: true}},
		},
		// data.
		{
			name: "empty data fires with empty string",
			in:   "data:\n\ndata\n\n",
			want: []Event{{Data: "", HasData: true}, {Data: "", HasData: true}},
		},
		{
			name: "multi-line data",
			in:   "data: a\ndata: b\ndata: c\n\ndata: a\ndata:\ndata\ndata: b\n\n",
			want: []Event{{Data: "a\nb\nc", HasData: true}, {Data: "a\n\n\nb", HasData: true}},
		},
		{
			name: "unicode",
			in:   "event: ☃\ndata: ok←★\ndata: 𝄞 é\nid: ⌘\n\n",
			want: []Event{{Type: "☃", Data: "ok←★\n𝄞 é", HasData: true, ID: "⌘", HasID: true}},
		},
		{
			name: "invalid UTF-8 passes through byte-exact",
			in:   "data: \xff\xfe\xc3\x28 \xe2\x82\n\nevent: \x80\ndata: x\xed\xa0\x80\n\nid: \xc0\xaf\n\n",
			want: []Event{
				{Data: "\xff\xfe\xc3\x28 \xe2\x82", HasData: true},
				{Type: "\x80", Data: "x\xed\xa0\x80", HasData: true},
				{ID: "\xc0\xaf", HasID: true},
			},
		},
		// id.
		{
			name: "id sets the last event id",
			in:   "id: 1\ndata: x\n\n",
			want: []Event{{Data: "x", HasData: true, ID: "1", HasID: true}},
		},
		{
			name: "last event id carries over to events without id",
			in:   "id: 7\ndata: a\n\ndata: b\n\nevent: e\ndata: c\n\n",
			want: []Event{
				{Data: "a", HasData: true, ID: "7", HasID: true},
				{Data: "b", HasData: true, ID: "7"},
				{Type: "e", Data: "c", HasData: true, ID: "7"},
			},
		},
		{
			name: "empty id resets (wpt format-field-id-2)",
			in:   "id: 1\ndata: a\n\nid\ndata: b\n\nid: 2\n\nid:\ndata: c\n\ndata: d\n\n",
			want: []Event{
				{Data: "a", HasData: true, ID: "1", HasID: true},
				{Data: "b", HasData: true, ID: "", HasID: true},
				{ID: "2", HasID: true},
				{Data: "c", HasData: true, ID: "", HasID: true},
				{Data: "d", HasData: true, ID: ""},
			},
		},
		{
			name: "id with NUL is ignored (wpt format-field-id-null)",
			in:   "id: 1\n\nid: 2\x00\ndata: x\n\nid: \x00\n\nid: 3\x00\n\n",
			want: []Event{
				{ID: "1", HasID: true},
				{Data: "x", HasData: true, ID: "1"},
			},
		},
		{
			name: "id only block moves the cursor without firing",
			in:   "id: 5\n\ndata: x\n\n",
			want: []Event{{ID: "5", HasID: true}, {Data: "x", HasData: true, ID: "5"}},
		},
		{
			name: "id keeps inner and trailing spaces",
			in:   "id:  a b \ndata: x\n\n",
			want: []Event{{Data: "x", HasData: true, ID: " a b ", HasID: true}},
		},
		{
			name: "id of a discarded block still counts",
			in:   "id: 9\nevent: e\n\ndata: x\n\n",
			want: []Event{{Type: "e", ID: "9", HasID: true}, {Data: "x", HasData: true, ID: "9"}},
		},
		{
			name: "last id field in a block wins",
			in:   "id: 1\nid: 2\ndata: x\n\n",
			want: []Event{{Data: "x", HasData: true, ID: "2", HasID: true}},
		},
		// retry.
		{
			name: "retry with leading zeros (wpt format-field-retry)",
			in:   "retry:03000\ndata:x\n\n",
			want: []Event{{Data: "x", HasData: true, Retry: 3000, HasRetry: true}},
		},
		{
			name: "bogus retry ignored (wpt format-field-retry-bogus)",
			in:   "retry:3000\nretry:1000x\ndata:x\n\n",
			want: []Event{{Data: "x", HasData: true, Retry: 3000, HasRetry: true}},
		},
		{
			name: "empty retry ignored (wpt format-field-retry-empty)",
			in:   "retry\ndata:test\n\nretry:\n\nretry: \n\n",
			want: []Event{{Data: "test", HasData: true}},
		},
		{
			name: "retry only ASCII digits",
			in: "retry: -1\n\nretry: +1\n\nretry: 1.5\n\nretry: 1 \n\nretry:  1\n\n" +
				"retry: 1e3\n\nretry: 0x10\n\nretry: \xd9\xa1\n\nretry: 1\x00\n\n",
		},
		{
			name: "retry zero",
			in:   "retry: 0\n\n",
			want: []Event{{Retry: 0, HasRetry: true}},
		},
		{
			// Larger than any sane reconnection time; our parser drops it
			// rather than wrap it.
			name: "retry overflowing int64 ignored",
			in:   "retry: 99999999999999999999\n\nretry: 9223372036854775807\n\n",
			want: []Event{{Retry: 9223372036854775807, HasRetry: true}},
		},
		{
			name: "retry only block keeps the last id",
			in:   "id: 3\n\nretry: 10\n\n",
			want: []Event{{ID: "3", HasID: true}, {ID: "3", Retry: 10, HasRetry: true}},
		},
		{
			name: "retry, id and data in one block",
			in:   "retry: 5\nid: a\nevent: t\ndata: d\n\n",
			want: []Event{{Type: "t", Data: "d", HasData: true, ID: "a", HasID: true, Retry: 5, HasRetry: true}},
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
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			maxSize := tc.maxSize
			if maxSize == 0 {
				maxSize = 1 << 20
			}
			wantErr := errOrEOF(tc.wantErr)
			for _, mode := range readerModes {
				r := mode.open(tc.in, tc.readErr)
				got, err := parseAll(r, maxSize)
				if c, ok := r.(io.Closer); ok {
					c.Close() // unblock the pipe writer after an early stop
				}
				if !errors.Is(err, wantErr) {
					t.Errorf("%s: error = %v, want %v", mode.name, err, wantErr)
				}
				if !slices.Equal(got, tc.want) {
					t.Errorf("%s: events differ\n got: %s\nwant: %s", mode.name, fmtEvents(got), fmtEvents(tc.want))
				}
			}
			checkRoundTrip(t, tc.want)
		})
	}
}

// checkRoundTrip checks that encoding evs with their ids and parsing the
// result gives what a browser saw of evs, and that each retry time survives
// AppendRetry.
func checkRoundTrip(t *testing.T, evs []Event) {
	t.Helper()
	enc := encodeAll(evs)
	got, err := parseAll(bytes.NewReader(enc), len(enc)+16)
	if err != io.EOF {
		t.Errorf("reparsing %q: error = %v, want EOF", enc, err)
	}
	if g, w := seenOf(got), seenOf(evs); !slices.Equal(g, w) {
		t.Errorf("round trip through %q:\n got: %+v\nwant: %+v", enc, g, w)
	}
	for i, ev := range got {
		if !ev.HasID {
			t.Errorf("reparsed block %d has no id, though encoded withID", i)
		}
	}
	for _, ev := range evs {
		if !ev.HasRetry {
			continue
		}
		enc := AppendRetry(nil, ev.Retry)
		got, err := parseAll(bytes.NewReader(enc), 64)
		want := []Event{{Retry: ev.Retry, HasRetry: true}}
		if err != io.EOF || !slices.Equal(got, want) {
			t.Errorf("reparsing %q = %s, %v; want %s, EOF", enc, fmtEvents(got), err, fmtEvents(want))
		}
	}
}

func fmtEvents(evs []Event) string {
	var b strings.Builder
	b.WriteString("[")
	for i, ev := range evs {
		if i > 0 {
			b.WriteString(" ")
		}
		if len(ev.Data) > 64 {
			ev.Data = fmt.Sprintf("%.32q…(%d bytes)", ev.Data, len(ev.Data))
		}
		fmt.Fprintf(&b, "%+q", fmt.Sprintf("%+v", ev))
	}
	b.WriteString("]")
	return b.String()
}

// TestParseLineEndAtWindowEdges puts line ends on and around the edges of
// the windows that indexLineEnd searches, and of the initial buffer.
func TestParseLineEndAtWindowEdges(t *testing.T) {
	for _, eol := range []string{"\n", "\r", "\r\n"} {
		for _, edge := range []int{256, 512, 768, 1024, 4096} {
			for n := edge - 3; n <= edge+2; n++ {
				data := strings.Repeat("x", n-len("data:"))
				in := ": c" + eol + "data:" + data + eol + "data:" + data + eol + eol + "data: y" + eol + eol
				want := []Event{{Data: data + "\n" + data, HasData: true}, {Data: "y", HasData: true}}
				for _, chunk := range []int{1 << 20, 7, 256} {
					got, err := parseAll(&chunkReader{b: []byte(in), size: chunk}, 1<<20)
					if err != io.EOF || !slices.Equal(got, want) {
						t.Errorf("eol %q, line %d, reads of %d: got %s, %v", eol, n, chunk, fmtEvents(got), err)
					}
				}
			}
		}
	}
}

// TestParseEndlessLine checks that a line that never ends stops the parser
// once it passes maxSize instead of buffering forever.
func TestParseEndlessLine(t *testing.T) {
	for _, prefix := range []string{"", "data: ", ":", "data: ok\n\ndata: ", "\r"} {
		r := io.MultiReader(strings.NewReader(prefix), endless('x'))
		_, err := parseAll(r, 4<<10)
		if err != ErrEventTooLarge {
			t.Errorf("prefix %q: error = %v, want ErrEventTooLarge", prefix, err)
		}
	}
}

// endless is a reader of the same byte forever.
type endless byte

func (e endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(e)
	}
	return len(p), nil
}

// TestParseSmallMaxSizeTerminates checks that a parser whose buffer cannot
// hold a BOM still makes progress (it used to spin in skipBOM).
func TestParseSmallMaxSizeTerminates(t *testing.T) {
	for maxSize := 1; maxSize <= 4; maxSize++ {
		done := make(chan error, 1)
		go func() {
			_, err := parseAll(strings.NewReader("data: x\n\n"), maxSize)
			done <- err
		}()
		select {
		case err := <-done:
			if err != ErrEventTooLarge {
				t.Errorf("maxSize %d: error = %v, want ErrEventTooLarge", maxSize, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("maxSize %d: parser did not return", maxSize)
		}
	}
}

func TestParseSetLastID(t *testing.T) {
	p := NewParser(strings.NewReader("data: a\n\nid: 2\ndata: b\n\n"), 1<<10)
	p.SetLastID("1")
	var got []Event
	for {
		ev, err := p.Next()
		if err != nil {
			break
		}
		got = append(got, ev)
	}
	want := []Event{{Data: "a", HasData: true, ID: "1"}, {Data: "b", HasData: true, ID: "2", HasID: true}}
	if !slices.Equal(got, want) {
		t.Errorf("got %s, want %s", fmtEvents(got), fmtEvents(want))
	}
}

func FuzzParser(f *testing.F) {
	for _, s := range []string{
		"data: hello\n\n",
		"\xEF\xBB\xBF\xEF\xBB\xBFdata: 1\n\ndata: 2\n\n",
		"data:a\rdata:b\ndata:c\r\ndata:d\n\r",
		"id: 1\n\nid: 2\x00\ndata: x\n\nid\n\n",
		"retry: 10\n\nretry: x\ndata\n\n",
		"event: e\ndata:  x\n:comment\nData: y\n\ndata: z",
		"data: \xff\xfe\r\n\r\n",
	} {
		f.Add([]byte(s), uint16(0), uint8(1))
		f.Add([]byte(s), uint16(8), uint8(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, maxSize uint16, chunk uint8) {
		limit := int(maxSize)
		if limit == 0 {
			limit = 1 << 20
		}
		evs, err := parseAll(bytes.NewReader(in), limit)
		if err != io.EOF && err != ErrEventTooLarge {
			t.Fatalf("error = %v", err)
		}

		// How the stream is cut into reads does not matter.
		chunked, cerr := parseAll(&chunkReader{b: in, size: int(chunk%16) + 1}, limit)
		if cerr != err || !slices.Equal(chunked, evs) {
			t.Fatalf("in chunks of %d: %s, %v; whole: %s, %v", chunk%16+1, fmtEvents(chunked), cerr, fmtEvents(evs), err)
		}

		for _, ev := range evs {
			if !ev.HasData && !ev.HasID && !ev.HasRetry && ev.Type == "" {
				t.Errorf("empty block returned: %+v", ev)
			}
			if !ev.HasData && ev.Data != "" {
				t.Errorf("block without data has data: %+v", ev)
			}
			if strings.ContainsAny(ev.Type, "\r\n") || strings.ContainsRune(ev.Data, '\r') ||
				strings.ContainsAny(ev.ID, "\r\n\x00") {
				t.Errorf("line end or NUL where none can be: %+v", ev)
			}
			if ev.Retry < 0 || (!ev.HasRetry && ev.Retry != 0) {
				t.Errorf("bad retry: %+v", ev)
			}
			if !ev.HasData && ev.HasID && ev.Type == "" {
				want := "id: " + ev.ID + "\n\n"
				if ev.ID == "" {
					want = "id:\n\n"
				}
				if got := string(AppendEvent(nil, &ev, true)); got != want {
					t.Errorf("id-only block encodes as %q, want %q", got, want)
				}
			}
		}
		checkRoundTrip(t, evs)
	})
}
