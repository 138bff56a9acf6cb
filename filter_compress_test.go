package ssefanout

// The event-type filter under compression: a filtered client never
// follows its stream's chain (compresschain.go).

import (
	"bytes"
	"cmp"
	"fmt"
	"strings"
	"testing"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// TestFilteredCompressedClientDecodesToItsPlainTwin: a compressed client
// with a filter is sent what its plain twin with the same filter is sent,
// id-only blocks and keepalives included, in its encoding. It skips
// frames, so it never follows its stream's chain and is no user of it: an
// unfiltered compressed client beside it keeps following the chain.
func TestFilteredCompressedClientDecodesToItsPlainTwin(t *testing.T) {
	for _, enc := range encodings {
		t.Run(enc.name, func(t *testing.T) {
			cfg := testSettings()
			cfg.buffer = 8
			s := newTestStream(cfg)
			add := func(enc *encoding, filter eventFilter) *client {
				s.mu.Lock()
				defer s.mu.Unlock()
				return s.addLocked(s.hub.settings.Load(), streamRequest{encoding: enc, filter: filter}, nil)
			}
			follower := add(enc, nil)
			packed, plain := add(enc, eventFilter{"update"}), add(nil, eventFilter{"update"})
			var outFollower, outPacked, outPlain []byte
			serve := func() {
				outFollower = drain(t, follower, outFollower)
				outPacked = drain(t, packed, outPacked)
				outPlain = drain(t, plain, outPlain)
			}
			for i := 1; i <= 60; i++ {
				ev := jsonEvent(i)
				if i%7 != 0 {
					ev.Type = "tick"
				} else {
					ev.Type = "update"
				}
				publishTo(s, ev)
				serve()
				if i%20 == 0 { // a filter round with nothing since the last
					s.signals.filterRounds.Add(2)
					serve()
				}
			}
			if got := decodeAll(t, enc, outPacked); !bytes.Equal(got, outPlain) {
				t.Fatalf("the filtered %s client decodes to a stream other than its plain twin's:\n%s", enc.name, firstDifference(string(got), string(outPlain)))
			}
			if !bytes.Contains(outPlain, []byte("\n\nid: ")) || !bytes.Contains(outPlain, []byte(sse.Keepalive)) {
				t.Fatalf("the twins were sent no id-only block or no keepalive:\n%s", outPlain)
			}
			if users := s.chains.of[enc.index].users.Load(); users != 1 {
				t.Errorf("the %s chain counts %d users, want the unfiltered client alone", enc.name, users)
			}
			if waiting := s.chains.of[enc.index].waiting.Load(); waiting != 0 {
				t.Errorf("the %s chain counts %d frames sent on their own: the filtered client counts toward its restarts", enc.name, waiting)
			}
		})
	}
}

// TestFilteredCompressedStreamsThroughCaddy: through Caddy, detached and
// not, a filtered client in gzip or zstd decodes to what a plain filtered
// client reads, id-only blocks and keepalives included, and the stream
// still has one upstream connection.
func TestFilteredCompressedStreamsThroughCaddy(t *testing.T) {
	for _, detach := range []string{"on", "off"} {
		t.Run("detach "+detach, func(t *testing.T) {
			origin := testkit.NewOrigin(t)
			base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tcompress zstd gzip\n\tfilter_param events\n\tbuffer 8\n\theartbeat 300ms\n\tdetach "+detach+"\n}")
			var readers []*wireReader
			for _, accept := range []string{"", "gzip", "zstd"} {
				readers = append(readers, openWire(t, base+"/fc?events=update", accept))
			}
			follower := openWire(t, base+"/fc", "gzip")
			up := origin.NextConn(t)
			for i := 1; i <= 50; i++ { // ending with ten ticks: more than half the buffer
				typ := "tick"
				if i%10 == 0 && i < 50 {
					typ = "update"
				}
				up.Send(fmt.Sprintf("event: %s\ndata: {\"n\":%d}\nid: %d\n\n", typ, i, i))
			}
			follower.waitFor(t, "id: 50\n")
			for _, wr := range readers {
				wr.waitFor(t, "id: 40\n")
				wr.waitFor(t, ": keepalive\n") // the filter's own, on a quiet stream
			}
			plain, _ := readers[0].decoded()
			if strings.Contains(plain, "event: tick") {
				t.Errorf("the filtered client was sent ticks:\n%s", plain)
			}
			for _, wr := range readers {
				got, _ := wr.decoded()
				enc := cmp.Or(wr.resp.Header.Get("Content-Encoding"), "plain")
				// The events are the same; when id-only blocks and
				// keepalives come, and which id a block carries, depends
				// on when each client's writer ran.
				events, idOnly := eventsOf(got)
				if want, _ := eventsOf(plain); events != want {
					t.Errorf("the %s filtered client decodes to other events than the plain one's:\n%s", enc, firstDifference(events, want))
				}
				if idOnly == 0 {
					t.Errorf("the %s filtered client was sent no id-only block:\n%s", enc, got)
				}
			}
			origin.NoNewConn(t)
		})
	}
}

// eventsOf returns the blocks of a decoded stream that are neither
// keepalives nor id-only blocks, and how many id-only blocks there were.
func eventsOf(stream string) (events string, idOnly int) {
	var b strings.Builder
	for block := range strings.SplitSeq(stream, "\n\n") {
		switch {
		case block == ": keepalive":
		case strings.HasPrefix(block, "id:") && !strings.Contains(block, "\n"):
			idOnly++
		default:
			b.WriteString(block + "\n\n")
		}
	}
	return b.String(), idOnly
}
