package ssefanout

// What a client is sent next: retry times and the lag rule.

import (
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

func TestRetryIsInjectedAndRewritten(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tretry 2500ms\n}")
	c := testkit.OpenClient(t, base+"/r", nil)
	first := c.NextBlock(t)
	if !first.HasRetry || first.Retry != 2500 || first.HasData {
		t.Fatalf("first block %+v, want retry 2500 alone", first)
	}
	up := origin.NextConn(t)
	up.Send("retry: 10000\ndata: one\n\n")
	up.Send("retry: 9000\n\n")
	up.Send("data: two\n\n")
	for _, want := range []string{"one", "two"} {
		ev := c.NextBlock(t)
		if ev.HasRetry {
			t.Fatalf("origin retry leaked through: %+v", ev)
		}
		if ev.Data != want {
			t.Fatalf("got %+v, want data %q", ev, want)
		}
	}
}

func TestOriginRetryPassesThroughWhenUnset(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())
	early := testkit.OpenClient(t, base+"/r", nil)
	up := origin.NextConn(t)
	up.Send("retry: 7000\n\n")
	if ev := early.NextBlock(t); !ev.HasRetry || ev.Retry != 7000 {
		t.Fatalf("got %+v, want retry 7000", ev)
	}
	up.Send("data: after\n\n")
	if ev := early.NextEvent(t); ev.Data != "after" {
		t.Fatalf("got %+v", ev)
	}
	late := testkit.OpenClient(t, base+"/r", nil)
	if ev := late.NextBlock(t); !ev.HasRetry || ev.Retry != 7000 {
		t.Fatalf("late joiner got %+v first, want retry 7000", ev)
	}
}

func TestRetryJitterSpreadsRetries(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tretry 1s\n\tretry_jitter 50\n}")
	seen := map[int64]bool{}
	for i := 0; i < 20; i++ {
		c := testkit.OpenClient(t, base+"/j", nil)
		ev := c.NextBlock(t)
		if !ev.HasRetry || ev.Retry < 500 || ev.Retry > 1500 {
			t.Fatalf("retry %+v, want 500..1500", ev)
		}
		seen[ev.Retry] = true
	}
	if len(seen) < 2 {
		t.Fatalf("20 clients all got the same retry %v", seen)
	}
}

func TestRetryWithoutJitterIsExact(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tretry 2500ms\n}")
	for i := 0; i < 5; i++ {
		if ev := testkit.OpenClient(t, base+"/e", nil).NextBlock(t); ev.Retry != 2500 {
			t.Fatalf("retry %d, want exactly 2500", ev.Retry)
		}
	}
}

func TestSlowClientIsCutOthersKeepGoing(t *testing.T) {
	cfg := testSettings()
	cfg.clientQueue = 4
	s := newTestStream(cfg)
	held := addClient(s) // its writer is held in a write: publish cuts it
	idle := addClient(s) // its writer never looked: its first look cuts it
	fast := addClient(s)
	held.writing.Store(time.Now().UnixNano())

	// The fast client takes every frame as soon as it is published.
	for i := 1; i <= 10; i++ {
		publishTo(s, &sse.Event{Data: fmt.Sprint(i), HasData: true})
		out, more, err := fast.next(nil, maxBatchWrite)
		if err != nil || more || string(out) != fmt.Sprintf("data: %d\n\n", i) {
			t.Fatalf("fast client, event %d: got %q (more=%v, err=%v)", i, out, more, err)
		}
	}
	select {
	case <-held.done:
		if held.cause != errSlowClient {
			t.Fatalf("client held in a write cut with %v", held.cause)
		}
	default:
		t.Fatal("a client 10 events behind with client_queue 4, held in a write, was not cut")
	}
	if _, ok := s.clients[held]; ok {
		t.Fatal("cut client still registered")
	}
	if out, _, err := idle.next(nil, maxBatchWrite); err != errSlowClient || len(out) != 0 {
		t.Fatalf("a client 10 events behind with client_queue 4 looked and got %q, %v; want errSlowClient", out, err)
	}
	select {
	case <-fast.done:
		t.Fatalf("fast client cut: %v", fast.cause)
	default:
	}
}

// stalledClient sends a GET for path, with the given header lines, and
// never reads the answer, with a receive buffer as small as the kernel
// allows.
func stalledClient(t *testing.T, base, path string, headers ...string) {
	t.Helper()
	conn := rawDial(t, base, path, headers...)
	if err := conn.(*net.TCPConn).SetReadBuffer(1024); err != nil {
		t.Fatal(err)
	}
}

func TestStalledClientIsCutOthersGetEverything(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tclient_queue 8\n}")
	var others []*testkit.Client
	for i := 0; i < 50; i++ {
		others = append(others, testkit.OpenClient(t, base+"/stall", nil))
	}
	up := origin.NextConn(t)
	stalledClient(t, base, "/stall")
	testkit.Eventually(t, "the stalled client to join", func() bool {
		return counterValue(t, origin.URL(), "clients") == 51
	})

	// Large events until the stalled socket's buffers are full and the
	// client falls client_queue events behind.
	payload := strings.Repeat("x", 16<<10)
	sent := 0
	for counterValue(t, origin.URL(), "slow_client_drops") == 0 {
		if sent >= 2000 {
			t.Fatal("the stalled client was never cut")
		}
		for i := 0; i < 4; i++ {
			sent++
			up.Send(fmt.Sprintf("id: %d\ndata: %s\n\n", sent, payload))
		}
		for _, c := range others { // the others keep up all along
			for i := sent - 3; i <= sent; i++ {
				if ev := c.NextData(t); ev.ID != strconv.Itoa(i) {
					t.Fatalf("a reading client got id %s, want %d", ev.ID, i)
				}
			}
		}
	}
	if n := counterValue(t, origin.URL(), "slow_client_drops"); n != 1 {
		t.Fatalf("%v clients cut, want only the stalled one", n)
	}
	up.Send("id: last\ndata: after the cut\n\n")
	for _, c := range others {
		if ev := c.NextData(t); ev.Data != "after the cut" {
			t.Fatalf("got %q", ev.Data)
		}
	}
}

// TestNeverReadingClientsCostBytesNotEvents holds issue 19's "many
// never-reading clients with large events": what a stream holds for its
// clients is bounded by buffer_bytes, not by the event counts (buffer,
// client_queue), whichever writer serves them. With the defaults, 50
// clients that never read and one that does get 400 events of 60 KiB,
// 24 MiB in all, where the counts alone (1,280 frames in the ring) would
// let the stream hold every one of them. Half the stalled clients join at
// the start; half halfway through, with a Last-Event-ID 100 events back,
// so that each has a replay of about 6 MiB, more than its socket takes,
// to be sent. Once each of those has been handed its first frames, and at
// every 25th event, the ring holds at most buffer_bytes (beyond the
// newest frame), and the live heap has grown by at most the ring, one
// batch per client in its writer (maxBatchWrite and one frame), and a
// margin. In the end the lag rule has cut every stalled client.
func TestNeverReadingClientsCostBytesNotEvents(t *testing.T) {
	const (
		stalled     = 50
		events      = 400
		eventSize   = 60 << 10
		bufferBytes = defaultBufferBytes
		replay      = 100
		checkEvery  = 25
	)
	for _, detach := range []string{"off", "on"} {
		t.Run("detach "+detach, func(t *testing.T) {
			origin := testkit.NewOrigin(t)
			base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tdetach "+detach+"\n}")
			witness := testkit.OpenClient(t, base+"/heavy", nil)
			up := origin.NextConn(t)
			for range stalled / 2 {
				stalledClient(t, base, "/heavy")
			}
			testkit.Eventually(t, "the stalled clients to join", func() bool {
				return counterValue(t, origin.URL(), "clients") == stalled/2+1
			})

			var before runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			payload := strings.Repeat("x", eventSize)
			frameSize := len(fmt.Sprintf("id: %d\ndata: %s\n\n", events, payload))
			heapBound := uint64(bufferBytes + (stalled+1)*(maxBatchWrite+frameSize) + 8<<20)
			var peakHeld int
			var peakGrowth int64
			for i := 1; i <= events; i++ {
				up.Send(fmt.Sprintf("id: %d\ndata: %s\n\n", i, payload))
				if ev := witness.NextData(t); ev.ID != strconv.Itoa(i) {
					t.Fatalf("the reading client got id %s, want %d", ev.ID, i)
				}
				if i == events/2 {
					for range stalled - stalled/2 {
						stalledClient(t, base, "/heavy", "Last-Event-ID: "+strconv.Itoa(i-replay))
					}
					testkit.Eventually(t, "the late stalled clients to join", func() bool {
						return counterValue(t, origin.URL(), "clients")+counterValue(t, origin.URL(), "slow_client_drops") == stalled+1
					})
					// Ids are seqs here: each late client still on has
					// been handed the first frames of its replay.
					s := streamOf(t, "/heavy")
					testkit.Eventually(t, "the late stalled clients to be handed frames", func() bool {
						return clientsPast(s, uint64(i), uint64(i-replay))
					})
				}
				if i%checkEvery != 0 {
					continue
				}
				st := streamStatusOf(t, "/heavy")
				peakHeld = max(peakHeld, st.BufferedBytes)
				if st.BufferedBytes > bufferBytes+frameSize {
					t.Fatalf("after %d events the ring holds %d bytes (%d events), want at most buffer_bytes %d and the newest frame",
						i, st.BufferedBytes, st.Buffered, bufferBytes)
				}
				var now runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&now)
				growth := int64(now.HeapInuse) - int64(before.HeapInuse)
				peakGrowth = max(peakGrowth, growth)
				if growth > int64(heapBound) {
					t.Fatalf("after %d events (%d clients connected) the heap grew by %d MiB, want at most %d MiB",
						i, int(counterValue(t, origin.URL(), "clients")), growth>>20, heapBound>>20)
				}
			}
			// The lag rule let go of each client whose frames were evicted.
			testkit.Eventually(t, "the stalled clients to be cut", func() bool {
				return counterValue(t, origin.URL(), "slow_client_drops") == stalled
			})
			t.Logf("ring at most %d KiB; heap growth at most %d KiB (bound %d KiB); %d MiB published to %d clients",
				peakHeld>>10, peakGrowth>>10, heapBound>>10, events*eventSize>>20, stalled+1)
		})
	}
}

// streamStatusOf returns the status of the live stream with the given key.
func streamStatusOf(t *testing.T, key string) streamStatus {
	t.Helper()
	return streamOf(t, key).status()
}

// streamOf returns the live stream with the given key, of any registry.
func streamOf(t *testing.T, key string) *stream {
	t.Helper()
	var found []*stream
	registries.Range(func(_, value any) bool {
		for _, s := range value.(*registry).liveStreams() {
			if s.label == key {
				found = append(found, s)
			}
		}
		return true
	})
	if len(found) != 1 {
		t.Fatalf("%d live streams with key %s, want 1", len(found), key)
	}
	return found[0]
}

// clientsPast reports whether every client of s that joined at seq
// joinedAt, whichever writer serves it, has been handed frames past seq.
func clientsPast(s *stream, joinedAt, seq uint64) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for c := range s.clients {
		if c.joinedAt == joinedAt && c.cursor.Load() <= seq {
			return false
		}
	}
	return true
}
