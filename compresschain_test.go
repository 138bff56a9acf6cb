package ssefanout

// Compressing once per stream: the chain, its segments, and which form of
// a frame each client is sent.

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	kflate "github.com/klauspost/compress/flate"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
	"github.com/sse-fanout/caddy-sse-fanout/internal/sseorigin"
)

// addClientIn adds a client to s with no cursor, compressed in enc (nil:
// none), as join would.
func addClientIn(s *stream, enc *encoding, cursor string) *client {
	s.mu.Lock()
	defer s.mu.Unlock()
	sr := streamRequest{encoding: enc}
	if cursor != "" {
		sr.cursor, sr.hasCursor = clientCursor(cursor), true
	}
	return s.addLocked(s.hub.settings.Load(), sr, nil)
}

// drain appends to out all that c is to be sent now.
func drain(t *testing.T, c *client, out []byte) []byte {
	t.Helper()
	for more := true; more; {
		var err error
		if out, more, err = c.next(out, maxBatchWrite); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// decodeAll decodes a body in enc (nil: none) with the standard decoders,
// less the lines that close zstd frames (withoutClosings), and checks that
// Chromium can decode its zstd frames (checkZstdFrameEnds). A body ends
// where its connection would, so without gzip's trailer or the end of an
// open zstd frame: an unexpected EOF there is no error.
func decodeAll(t *testing.T, enc *encoding, body []byte) []byte {
	t.Helper()
	var r io.Reader
	switch enc {
	case nil:
		return body
	case encGzip:
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	case encZstd:
		zr, err := zstd.NewReader(bytes.NewReader(body), zstd.WithDecoderConcurrency(1))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	}
	out, err := io.ReadAll(r)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("decoding %s: %v after %d bytes", enc.name, err, len(out))
	}
	if enc == encZstd {
		checkZstdFrameEnds(t, body)
	}
	return withoutClosings(out)
}

// withoutClosings returns a decoded body less the comment lines that
// close zstd frames a client left (zstdClosingBlock): what an event
// stream parser makes of it is the plain stream's. The plain stream has
// no such line: comments from the origin are not passed on, and a
// keepalive has its text.
func withoutClosings(decoded []byte) []byte {
	var out []byte
	for line := range bytes.Lines(decoded) {
		if string(line) != ":\n" {
			out = append(out, line...)
		}
	}
	return out
}

// checkZstdFrameEnds fails the test if a zstd frame of body ends with a
// block that decodes to nothing. Chromium's decoder asks libzstd for one
// decoding call at a time, and a call stops where a frame ends; a call
// that decoded nothing must have taken all its input, or Chromium drops
// the rest of that network read (net/filter/filter_source_stream.cc), and
// the page's EventSource fails on what follows. So a frame's end must
// always come with output.
func checkZstdFrameEnds(t *testing.T, body []byte) {
	t.Helper()
	if at, ok := zstdEmptyFrameEnd(body); ok {
		t.Fatalf("the zstd frame at byte %d of %d ends with a block that decodes to nothing", at, len(body))
	}
}

// zstdEmptyFrameEnd walks the zstd frames of body (RFC 8878, 3.1.1) and
// returns the offset of the first whose last block decodes to nothing: a
// raw or RLE block of size 0. A body may end in an open frame.
func zstdEmptyFrameEnd(body []byte) (int, bool) {
	for at := 0; at+6 <= len(body); {
		frame := at
		fhd := body[at+4]
		single := fhd>>5&1 == 1
		fcsSize := [4]int{0, 2, 4, 8}[fhd>>6]
		if fcsSize == 0 && single {
			fcsSize = 1
		}
		at += 5 + fcsSize + [4]int{0, 1, 2, 4}[fhd&3]
		if !single {
			at++ // Window_Descriptor
		}
		for at+3 <= len(body) {
			h := int(body[at]) | int(body[at+1])<<8 | int(body[at+2])<<16
			last, kind, size := h&1 == 1, h>>1&3, h>>3
			at += 3
			switch kind {
			case 0: // raw
				at += size
			case 1: // RLE: one byte, repeated size times
				at++
			default: // compressed: it holds what it decodes to
				at += size
			}
			if last {
				if kind < 2 && size == 0 {
					return frame, true
				}
				if fhd>>2&1 == 1 {
					at += 4 // Content_Checksum
				}
				break
			}
		}
	}
	return 0, false
}

// jsonEvent is event n of the bench's realistic payload, as the origin
// would send it.
func jsonEvent(n int) *sse.Event {
	st := sseorigin.NewStampedJSON(uint64(n), time.Unix(1767225600, 0).Add(time.Duration(n)*time.Second), 1024)
	return &sse.Event{ID: strconv.Itoa(n), HasID: true, Data: string(st.Data()), HasData: true}
}

// TestFollowersShareTheChainsPieces has clients join a stream at its
// start, and one mid-way: those that were there from the start are sent
// exactly the chain's pieces; the late one gets frames compressed on their
// own until the chain begins a segment, and from then on the same pieces
// as the others. Each decodes to what its plain twin, which joined with
// it, is sent.
func TestFollowersShareTheChainsPieces(t *testing.T) {
	for _, enc := range encodings {
		t.Run(enc.name, func(t *testing.T) {
			s := newTestStream(testSettings())
			type twins struct {
				packed, plain   *client
				outPack, outRaw []byte
			}
			join := func() *twins {
				return &twins{packed: addClientIn(s, enc, ""), plain: addClientIn(s, nil, "")}
			}
			serve := func(ps ...*twins) {
				for _, p := range ps {
					p.outPack = drain(t, p.packed, p.outPack)
					p.outRaw = drain(t, p.plain, p.outRaw)
				}
			}
			n := 0
			publish := func(k int) {
				for range k {
					n++
					publishTo(s, jsonEvent(n))
				}
			}
			early := []*twins{join(), join()}
			publish(5)
			serve(early...)
			head, _ := enc.ends()
			want := append([]byte(nil), head...)
			s.ring.mu.RLock()
			for seq := uint64(1); seq <= 5; seq++ {
				want = append(want, s.ring.get(seq).packs[enc.index].chain...)
			}
			s.ring.mu.RUnlock()
			for _, p := range early {
				if !bytes.Equal(p.outPack, want) {
					t.Fatalf("a client there from the start got %d bytes, not the chain's %d", len(p.outPack), len(want))
				}
			}

			late := join() // mid-segment, and primed: it follows nothing
			all := append(early, late)
			var restart uint64
			for restart == 0 {
				if n > 5+maxSegmentWait+1 {
					t.Fatal("the chain never began a segment for the late client")
				}
				publish(1)
				s.ring.mu.RLock()
				if s.ring.get(s.ring.head).packs[enc.index].first {
					restart = s.ring.head
				}
				s.ring.mu.RUnlock()
				serve(all...)
			}
			// 3 clients: the third frame sent on its own begins a segment.
			if alone := restart - 6; alone != 3 {
				t.Errorf("the late client was sent %d frames on their own, want 3", alone)
			}
			var from [3]int
			for i, p := range all {
				from[i] = len(p.outPack)
			}
			publish(10)
			serve(all...)
			for i, p := range all {
				if !bytes.Equal(p.outPack[from[i]:], all[0].outPack[from[0]:]) {
					t.Errorf("after the restart client %d got other bytes than the others for the same frames", i)
				}
				if got := decodeAll(t, enc, p.outPack); !bytes.Equal(got, p.outRaw) {
					t.Errorf("client %d decodes to a stream other than its twin's:\n%s", i, firstDifference(string(got), string(p.outRaw)))
				}
			}
		})
	}
}

// TestEveryClientDecodesToItsPlainTwin drives a stream at random: events
// of the bench's JSON payload, clients joining (some resuming from the
// buffer), keepalive rounds, a changing retry time, clients leaving, and
// writers that catch up at moments of their own. Each compressed client
// has a twin without compression, that joined with it and is drained with
// it: decoded, its bytes must be exactly its twin's.
func TestEveryClientDecodesToItsPlainTwin(t *testing.T) {
	cfg := testSettings()
	cfg.clientQueue = 4096
	cfg.buffer = 256
	s := newTestStream(cfg)
	rng := rand.New(rand.NewPCG(13, 1))
	type twins struct {
		enc             *encoding
		packed, plain   *client
		outPack, outRaw []byte
		gone            bool
	}
	var pairs []*twins
	join := func() {
		enc := encodings[rng.IntN(len(encodings))]
		cursor := ""
		if n := s.ring.head; n > 0 && rng.IntN(3) == 0 {
			cursor = strconv.FormatUint(1+rng.Uint64N(n), 10)
		}
		pairs = append(pairs, &twins{enc: enc, packed: addClientIn(s, enc, cursor), plain: addClientIn(s, nil, cursor)})
	}
	serve := func(p *twins) {
		if !p.gone {
			p.outPack = drain(t, p.packed, p.outPack)
			p.outRaw = drain(t, p.plain, p.outRaw)
		}
	}
	events := 0
	for step := 0; step < 3000; step++ {
		switch r := rng.IntN(100); {
		case r < 50:
			events++
			publishTo(s, jsonEvent(events))
		case r < 55:
			join()
		case r < 57:
			s.keepaliveRound()
		case r < 58:
			publishTo(s, &sse.Event{Retry: int64(500 + rng.IntN(3)*100), HasRetry: true})
		case r < 59 && len(pairs) > 0:
			p := pairs[rng.IntN(len(pairs))]
			if !p.gone {
				serve(p)
				p.gone = true
				s.leave(p.packed)
				s.leave(p.plain)
			}
		default:
			if len(pairs) > 0 {
				serve(pairs[rng.IntN(len(pairs))])
			}
		}
		if step%100 == 0 { // nobody falls client_queue behind
			for _, p := range pairs {
				serve(p)
			}
		}
	}
	packed, raw := 0, 0
	for i, p := range pairs {
		serve(p)
		if got := decodeAll(t, p.enc, p.outPack); !bytes.Equal(got, p.outRaw) {
			t.Fatalf("client %d (%s) decodes to a stream other than its twin's:\n%s", i, p.enc.name, firstDifference(string(got), string(p.outRaw)))
		}
		packed += len(p.outPack)
		raw += len(p.outRaw)
	}
	t.Logf("%d clients, %d events: %d bytes compressed for %d (%.0f%%)", len(pairs), events, packed, raw, 100*float64(packed)/float64(raw))
	for i := range s.chains.of {
		if users := s.chains.of[i].users.Load(); users != int64(countIn(pairs, func(p *twins) bool { return !p.gone && p.enc.index == i })) {
			t.Errorf("%s chain counts %d users", encodings[i].name, users)
		}
	}
}

func countIn[T any](s []T, f func(T) bool) int {
	n := 0
	for _, v := range s {
		if f(v) {
			n++
		}
	}
	return n
}

// TestCompressedFormsCountTowardBufferBytes checks that what a frame's
// compressed forms take counts toward buffer_bytes, from when each is
// made, and leaves with the frame: the ring holds no more than
// buffer_bytes after each push.
func TestCompressedFormsCountTowardBufferBytes(t *testing.T) {
	cfg := testSettings()
	cfg.bufferBytes = 16 << 10
	s := newTestStream(cfg)
	follower := addClientIn(s, encGzip, "")
	for n := 1; n <= 40; n++ {
		publishTo(s, jsonEvent(n))
		s.ring.mu.Lock()
		size := int64(0)
		for seq := s.ring.tail; seq <= s.ring.head; seq++ {
			f := s.ring.get(seq)
			if f.size.Load() < int64(len(f.bytes)) {
				t.Fatalf("frame %d counts %d bytes, less than its own %d", seq, f.size.Load(), len(f.bytes))
			}
			size += f.size.Load()
		}
		if s.ring.size.Load() != size {
			t.Fatalf("after frame %d the ring counts %d bytes, its frames hold %d", n, s.ring.size.Load(), size)
		}
		// The bound holds from each push on: what clients make in between
		// counts from then, and is shed at the next push.
		if held := s.ring.heldBytes(); held > cfg.bufferBytes {
			t.Fatalf("after frame %d the ring holds %d bytes, over buffer_bytes %d", n, held, cfg.bufferBytes)
		}
		s.ring.mu.Unlock()
		if n == 30 {
			// A client that joins now replays from frame 25, sent on its own.
			replayer := addClientIn(s, encZstd, "25")
			drain(t, replayer, nil)
			s.ring.mu.RLock()
			alone := 0
			for seq := s.ring.tail; seq <= s.ring.head; seq++ {
				if f := s.ring.get(seq); f.packs != nil {
					alone += len(f.packs[encZstd.index].alone)
				}
			}
			s.ring.mu.RUnlock()
			if alone == 0 {
				t.Fatal("the replaying client was sent no frame compressed on its own")
			}
		}
		drain(t, follower, nil)
	}
}

// BenchmarkCompressOnce measures, on the bench's JSON payload (events of
// about 1 KiB), what each way of compressing an event stream sends per
// event (B/event) and costs per event compressed (ns/op):
//
//   - encode: a compressor per client, flushed after each event, as Caddy's
//     encode gzip (level 5) and encode zstd run one: the reference;
//   - chain: the stream's chain, as its followers get it (the same as a
//     per-client compressor at our level, compressed once);
//   - segments-N: the chain restarted every N frames, as it would be under
//     clients joining without end;
//   - alone: each event compressed on its own;
//   - dict-N: each event compressed on its own with the N bytes before it
//     as a dictionary (gzip only; zstd has no way to share one with a
//     browser): the design this one was chosen over.
//
// Run it with -benchtime=2000x, so that B/event is over 2,000 events.
func BenchmarkCompressOnce(b *testing.B) {
	evs := make([][]byte, 2000)
	for i := range evs {
		evs[i] = sse.AppendEvent(nil, jsonEvent(i+1), true)
	}
	run := func(name string, piece func(i int) int) {
		b.Run(name, func(b *testing.B) {
			total, i := 0, 0
			for b.Loop() {
				total += piece(i % len(evs))
				i++
			}
			b.ReportMetric(float64(total)/float64(i), "B/event")
		})
	}
	var out []byte
	run("plain", func(i int) int { return len(evs[i]) })
	{
		var sink appender
		gz, _ := kgzip.NewWriterLevel(&sink, 5)
		run("gzip/encode", func(i int) int {
			sink.b = sink.b[:0]
			gz.Write(evs[i])
			gz.Flush()
			return len(sink.b)
		})
		zs, _ := zstd.NewWriter(&sink, zstd.WithWindowSize(128<<10), zstd.WithEncoderConcurrency(1), zstd.WithZeroFrames(true))
		run("zstd/encode", func(i int) int {
			sink.b = sink.b[:0]
			zs.Write(evs[i])
			zs.Flush()
			return len(sink.b)
		})
	}
	for _, enc := range encodings {
		for _, every := range []int{0, 8, 32} {
			c := enc.newChain()
			name := enc.name + "/chain"
			if every > 0 {
				name = fmt.Sprintf("%s/segments-%d", enc.name, every)
			}
			run(name, func(i int) int {
				n := 0
				if every > 0 && i%every == 0 {
					c.restart()
					_, tail := enc.ends()
					n = len(tail)
				}
				out = c.add(out[:0], evs[i])
				return n + len(out)
			})
			c.release()
		}
		run(enc.name+"/alone", func(i int) int {
			out = enc.alone(out[:0], evs[i])
			return len(out)
		})
	}
	var all []byte // the stream: event i begins at starts[i]
	starts := make([]int, len(evs))
	for i, ev := range evs {
		starts[i] = len(all)
		all = append(all, ev...)
	}
	for _, size := range []int{2 << 10, 8 << 10} {
		w, _ := kflate.NewWriter(nil, deflateLevel)
		var sink appender
		run(fmt.Sprintf("gzip/dict-%dK", size>>10), func(i int) int {
			sink.b = sink.b[:0]
			w.ResetDict(&sink, all[max(0, starts[i]-size):starts[i]])
			w.Write(evs[i])
			w.Flush()
			return len(sink.b)
		})
	}
}
