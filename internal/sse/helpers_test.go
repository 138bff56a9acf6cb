package sse

// Helpers of this package's tests: readers that hand a stream to the
// parser in different ways, and the table of parse cases with its runner.

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
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

// bom is the UTF-8 byte order mark, which a stream may start with.
const bom = "\xEF\xBB\xBF"

// long is 5000 bytes, past the parser's initial buffer.
var long = strings.Repeat("0123456789", 500)

// parseCase is a stream and what parsing it gives.
type parseCase struct {
	name    string
	in      string
	maxSize int   // 0 means 1 MiB
	readErr error // what the reader returns after in; nil means io.EOF
	want    []Event
	wantErr error // nil means io.EOF
}

// runParseCases parses each case's stream, handed over by every reader
// mode, and checks the events and the error, and that the events survive
// a round trip through the encoder.
func runParseCases(t *testing.T, tests []parseCase) {
	t.Helper()
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
