package ssefanout

// Which compression a client gets, and that what it gets decodes, with the
// standard decoders, to exactly what a client without compression gets.

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

func TestNegotiate(t *testing.T) {
	both := []*encoding{encZstd, encGzip}
	for _, tc := range []struct {
		accept  string
		offered []*encoding
		want    string // "" for none
	}{
		{"", both, ""},
		{"identity", both, ""},
		{"br", both, ""},
		{"gzip, deflate, br, zstd", both, "zstd"}, // Chrome's; the config's order decides
		{"gzip, deflate, br, zstd", []*encoding{encGzip, encZstd}, "gzip"},
		{"gzip", both, "gzip"},
		{"GZip", both, "gzip"},
		{"x-gzip", both, "gzip"},
		{"gzip;q=0.5, zstd;q=0.2", both, "gzip"}, // the client's weights come first
		{"gzip;q=0.5, zstd;q=0.5", both, "zstd"},
		{"zstd;q=0", both, ""},
		{"zstd;q=0, *", both, "gzip"},
		{"*", both, "zstd"},
		{"*;q=0", both, ""},
		{"*;q=0.1, gzip;q=0", both, "zstd"},
		{"zstd;q=bad, gzip", both, "gzip"},
		{"zstd;q=1.5", both, ""},
		{"zstd, zstd;q=NaN", both, "zstd"}, // a weight that is no number is no weight
		{"zstd;q=nan, gzip", both, "gzip"},
		{"gzip;q=Inf, zstd;q=0.1", both, "zstd"},
		{" zstd ; q=0.8 ", both, "zstd"},
		{"zstd", []*encoding{encGzip}, ""},
		{"gzip", nil, ""},
	} {
		got := negotiate(strings.Split(tc.accept, "\n"), tc.offered)
		name := ""
		if got != nil {
			name = got.name
		}
		if name != tc.want {
			t.Errorf("Accept-Encoding %q offering %d: got %q, want %q", tc.accept, len(tc.offered), name, tc.want)
		}
	}
	// Accept-Encoding in two header lines counts as one list.
	if got := negotiate([]string{"br", "gzip"}, both); got != encGzip {
		t.Errorf("two header lines: got %v, want gzip", got)
	}
}

// wireReader reads a response body as it arrives, keeping the raw bytes
// and, for a compressed one, what the standard decoder makes of them.
type wireReader struct {
	resp *http.Response
	mu   sync.Mutex
	raw  bytes.Buffer // what came over the wire
	out  bytes.Buffer // decoded
	err  error
	done chan struct{}
}

// rawTransport sends what a test sets and decodes nothing.
var rawTransport = &http.Transport{DisableKeepAlives: true, DisableCompression: true}

// openWire opens url with the given Accept-Encoding ("" sends none) and
// reads the body through the decoder its Content-Encoding names.
func openWire(t *testing.T, url, accept string) *wireReader {
	t.Helper()
	header := http.Header{}
	if accept != "" {
		header.Set("Accept-Encoding", accept)
	}
	return openWireWith(t, url, header)
}

// openWireWith is openWire with the given request headers.
func openWireWith(t *testing.T, url string, header http.Header) *wireReader {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, values := range header {
		req.Header[name] = values
	}
	resp, err := rawTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	wr := &wireReader{resp: resp, done: make(chan struct{})}
	t.Cleanup(func() {
		resp.Body.Close()
		<-wr.done
	})
	go wr.read()
	return wr
}

func (wr *wireReader) read() {
	defer close(wr.done)
	body := io.TeeReader(wr.resp.Body, writerFunc(func(b []byte) {
		wr.mu.Lock()
		wr.raw.Write(b)
		wr.mu.Unlock()
	}))
	var dec io.Reader
	switch ce := wr.resp.Header.Get("Content-Encoding"); ce {
	case "":
		dec = body
	case "gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			wr.fail(err)
			return
		}
		dec = zr
	case "zstd":
		zr, err := zstd.NewReader(body, zstd.WithDecoderConcurrency(1))
		if err != nil {
			wr.fail(err)
			return
		}
		defer zr.Close()
		dec = zr
	default:
		wr.fail(fmt.Errorf("unexpected Content-Encoding %q", ce))
		return
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := dec.Read(buf)
		wr.mu.Lock()
		wr.out.Write(buf[:n])
		wr.mu.Unlock()
		if err != nil {
			wr.fail(err)
			return
		}
	}
}

func (wr *wireReader) fail(err error) {
	wr.mu.Lock()
	wr.err = err
	wr.mu.Unlock()
}

// decoded returns what was decoded so far, less the lines that close zstd
// frames (withoutClosings), and the raw bytes' count.
func (wr *wireReader) decoded() (string, int) {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	return string(withoutClosings(wr.out.Bytes())), wr.raw.Len()
}

// waitFor waits until the decoded body holds s.
func (wr *wireReader) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(testkit.WaitTimeout)
	for {
		out, _ := wr.decoded()
		if strings.Contains(out, s) {
			return
		}
		if time.Now().After(deadline) {
			wr.mu.Lock()
			err := wr.err
			wr.mu.Unlock()
			t.Fatalf("%s stream: no %q in %d decoded bytes (reader: %v)", wr.resp.Header.Get("Content-Encoding"), s, len(out), err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

type writerFunc func([]byte)

func (f writerFunc) Write(b []byte) (int, error) { f(b); return len(b), nil }

// bigData is a data value of about 100 KB, of JSON-ish text.
func bigData() string {
	var b strings.Builder
	for i := 0; b.Len() < 100_000; i++ {
		fmt.Fprintf(&b, `{"row":%d,"name":"item %d","tags":["a","b%d"]},`, i, i*7, i%13)
	}
	return b.String()
}

// TestCompressedStreamsDecodeToThePlainStream has clients of every kind
// read one stream: without compression, and in gzip and zstd by the
// config's order and the client's weights. Each compressed one, decoded
// with the standard decoders (compress/gzip, klauspost's zstd) as it
// arrives, must be byte for byte the plain client's stream, event after
// event (every piece is flushed at once): events, keepalives, a retry the
// origin changes, a 100 KB event.
func TestCompressedStreamsDecodeToThePlainStream(t *testing.T) {
	for _, detach := range []string{"on", "off"} {
		t.Run("detach "+detach, func(t *testing.T) {
			origin := testkit.NewOrigin(t)
			base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tcompress zstd gzip\n\theartbeat 1s\n\tdetach "+detach+"\n}")
			clients := []struct {
				accept, want string
			}{
				{"", ""},
				{"br", ""},
				{"gzip", "gzip"},
				{"gzip, deflate, br, zstd", "zstd"},
				{"zstd;q=0.1, gzip;q=0.9", "gzip"},
				{"*", "zstd"},
			}
			var readers []*wireReader
			for _, c := range clients {
				readers = append(readers, openWire(t, base+"/compressed", c.accept))
			}
			up := origin.NextConn(t)
			for i, c := range clients {
				h := readers[i].resp.Header
				if got := h.Get("Content-Encoding"); got != c.want {
					t.Errorf("Accept-Encoding %q: Content-Encoding %q, want %q", c.accept, got, c.want)
				}
				if got := h.Get("Vary"); got != "Accept-Encoding" {
					t.Errorf("Accept-Encoding %q: Vary %q, want Accept-Encoding", c.accept, got)
				}
			}
			testkit.Eventually(t, "every client to join", func() bool {
				return counterValue(t, origin.URL(), "clients") == float64(len(clients))
			})
			if detach == "on" {
				// Compressed or not, each is served by a shared writer.
				testkit.Eventually(t, "every client to be detached", func() bool { return detachedClients() == len(clients) })
			}
			everyone := func(s string) {
				t.Helper()
				for _, wr := range readers {
					wr.waitFor(t, s)
				}
			}
			send := func(from, to int) {
				for i := from; i <= to; i++ {
					up.Send(fmt.Sprintf("id: %d\ndata: {\"n\":%d,\"text\":\"event number %d of the stream\"}\n\n", i, i, i))
				}
				everyone(fmt.Sprintf("id: %d\n", to))
			}
			for i := 1; i <= 5; i++ {
				send(i, i) // one by one: each is delivered at once
			}
			everyone(": keepalive\n")
			send(6, 8) // after a keepalive, everyone joins a new segment
			big := bigData()
			up.Send("id: big\ndata: " + big + "\n\n")
			everyone("id: big\n")
			send(9, 40)
			up.Send("retry: 700\n\n") // a piece of each client's own
			everyone("retry: 700\n")
			send(41, 60)
			up.Send("event: end\ndata: end\n\n")
			everyone("event: end\n")

			plain, plainRaw := readers[0].decoded()
			if plainRaw != len(plain) {
				t.Fatalf("the plain client got %d bytes on the wire for %d of stream", plainRaw, len(plain))
			}
			end := strings.Index(plain, "event: end\n")
			plain = plain[:end]
			for i, wr := range readers {
				got, raw := wr.decoded()
				if clients[i].want == "zstd" {
					wr.mu.Lock()
					body := bytes.Clone(wr.raw.Bytes())
					wr.mu.Unlock()
					checkZstdFrameEnds(t, body)
				}
				if !strings.HasPrefix(got, plain) {
					t.Errorf("Accept-Encoding %q (%s): the decoded stream differs from the plain one:\n%s",
						clients[i].accept, clients[i].want, firstDifference(got, plain))
				}
				if clients[i].want != "" && raw > len(plain)/2 {
					t.Errorf("Accept-Encoding %q (%s): %d bytes on the wire for %d of stream", clients[i].accept, clients[i].want, raw, len(plain))
				}
				t.Logf("%-24q %-4s %6d bytes on the wire for %d", clients[i].accept, clients[i].want, raw, len(got))
			}
		})
	}
}

// firstDifference shows where got and want first differ.
func firstDifference(got, want string) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	from := max(0, i-80)
	return fmt.Sprintf("at byte %d:\n got  %q\n want %q", i, got[from:min(len(got), i+80)], want[from:min(len(want), i+80)])
}

// TestEncodeInFrontCompressesOnce puts Caddy's encode in front of an
// sse_fanout that compresses too: encode compresses, sse_fanout does not,
// and the client decodes the stream once. Such a client stays in its
// request, behind the encoder.
func TestEncodeInFrontCompressesOnce(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "encode gzip\n\tsse_fanout "+origin.URL()+" {\n\t\tcompress gzip zstd\n\t\tdetach on\n\t}")
	gz := openWire(t, base+"/twice", "gzip")
	zs := openWire(t, base+"/twice", "zstd") // encode offers no zstd, and sse_fanout leaves it to encode
	up := origin.NextConn(t)
	if ce := gz.resp.Header.Values("Content-Encoding"); len(ce) != 1 || ce[0] != "gzip" {
		t.Fatalf("Content-Encoding %q, want one gzip", ce)
	}
	if ce := zs.resp.Header.Get("Content-Encoding"); ce != "" {
		t.Fatalf("zstd client behind encode gzip: Content-Encoding %q, want none", ce)
	}
	up.Send("id: 1\ndata: once\n\n")
	gz.waitFor(t, "data: once\nid: 1\n\n")
	zs.waitFor(t, "data: once\nid: 1\n\n")
	if n := detachedClients(); n != 1 {
		t.Fatalf("%d clients detached, want 1: the one encode passes through as is", n)
	}
}

// TestCompressedCatchUp has clients resume from a cursor the buffer no
// longer holds, in each encoding and without: the catch-up the origin
// relays is each client's own, compressed on its own, then the shared
// stream from where the two met. Each decodes to what the plain one got.
func TestCompressedCatchUp(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tbuffer 5\n\tclient_queue 5\n\tcompress gzip zstd\n}")
	up, _ := testkit.StartStream(t, origin, base+"/catch", 50)

	var readers []*wireReader
	for _, accept := range []string{"identity", "gzip", "zstd"} {
		readers = append(readers, openWireWith(t, base+"/catch", http.Header{"Accept-Encoding": {accept}, "Last-Event-ID": {"10"}}))
	}
	// The origin answers every catch-up: one for the three when they come
	// together, and one more for a client that starts its own after the
	// first was over (a compressed client compresses its first bytes
	// before it asks; TestCatchUpHerdSharesOneOriginRequest holds the
	// sharing).
	stop := make(chan struct{})
	var serving sync.WaitGroup
	serving.Add(1)
	go func() {
		defer serving.Done()
		for catchUp := origin.NextConnOr(stop); catchUp != nil; catchUp = origin.NextConnOr(stop) {
			testkit.SendIDs(catchUp, 11, 50)
		}
	}()
	defer func() { close(stop); serving.Wait() }()
	testkit.SendIDs(up, 51, 53) // within client_queue
	for _, wr := range readers {
		wr.waitFor(t, "data: event 53\nid: 53\n\n")
	}
	plain, _ := readers[0].decoded()
	for i, wr := range readers[1:] {
		if got, _ := wr.decoded(); got != plain {
			t.Errorf("%s: the decoded stream differs from the plain one:\n%s", []string{"gzip", "zstd"}[i], firstDifference(got, plain))
		}
	}
	// The opening comment goes with the head, before the catch-up.
	if !strings.HasPrefix(plain, sse.Opening+"data: event 11\nid: 11\n\n") {
		t.Errorf("the plain stream begins %q, not with the opening and event 11", plain[:min(len(plain), 40)])
	}
}
