package sse

// The parser's second step, lines to fields (event, data, id, retry and
// comments), its buffer at work (line ends at its edges, endless lines,
// small limits) and its fuzz test; parse_lines_test.go has the first step,
// bytes to lines, and how a stream ends.

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseFields(t *testing.T) {
	runParseCases(t, []parseCase{
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
	})
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
