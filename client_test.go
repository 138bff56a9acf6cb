package ssefanout

// What a client is sent next: retry times and the lag rule.

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"

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
	slow := addClient(s)
	fast := addClient(s)

	// The slow client's writer never runs; the fast one takes every frame
	// as soon as it is published.
	for i := 1; i <= 10; i++ {
		publishTo(s, &sse.Event{Data: fmt.Sprint(i), HasData: true})
		out, more, err := fast.next(nil, maxBatchWrite)
		if err != nil || more || string(out) != fmt.Sprintf("data: %d\n\n", i) {
			t.Fatalf("fast client, event %d: got %q (more=%v, err=%v)", i, out, more, err)
		}
	}
	select {
	case <-slow.done:
		if slow.cause != errSlowClient {
			t.Fatalf("slow client cut with %v", slow.cause)
		}
	default:
		t.Fatal("a client 10 events behind with client_queue 4 was not cut")
	}
	select {
	case <-fast.done:
		t.Fatalf("fast client cut: %v", fast.cause)
	default:
	}
	if _, ok := s.clients[slow]; ok {
		t.Fatal("cut client still registered")
	}
}

// stalledClient sends a GET for path and never reads the answer, with a
// receive buffer as small as the kernel allows.
func stalledClient(t *testing.T, base, path string) {
	t.Helper()
	conn := rawDial(t, base, path)
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
