package ssefanout

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// TestOnOwnStackRaisesPanicsInTheCaller: a panic on start's goroutine
// reaches the request goroutine, where net/http recovers it, instead of
// ending the process.
func TestOnOwnStackRaisesPanicsInTheCaller(t *testing.T) {
	defer func() {
		if p := recover(); p != "boom" {
			t.Fatalf("recovered %v, want the panic of f", p)
		}
	}()
	onOwnStack(func() { panic("boom") })
	t.Fatal("onOwnStack returned after f panicked")
}

// TestOnOwnStackRunsFToTheEnd: what f sets is there when onOwnStack
// returns, and f ran on another goroutine, whose stack is not the
// caller's.
func TestOnOwnStackRunsFToTheEnd(t *testing.T) {
	var mine, its []byte
	mine = stackTop()
	onOwnStack(func() { its = stackTop() })
	if its == nil {
		t.Fatal("f did not run")
	}
	if string(mine) == string(its) {
		t.Fatalf("f ran on the caller's goroutine (%s)", mine)
	}
}

// stackTop is the first line of the calling goroutine's stack trace:
// "goroutine N [running]:".
func stackTop() []byte {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	line, _, _ := strings.Cut(string(buf), "\n")
	return []byte(line)
}

// BenchmarkHTTP2ClientStack holds 500 HTTP/2 clients of one stream, each
// served in its request, and reports the goroutine stack they cost the
// process per client (stack-B/client), after each has read an event: the
// request goroutine's stack, and a share of each connection's two
// goroutines on either side. Caddy's handler chain leaves little of a
// request goroutine's first 8 KiB; with what ServeHTTP does before the
// live events run on a goroutine of its own, a client costs about 8 KiB
// here, and about 16 KiB without (README, Where we stand).
func BenchmarkHTTP2ClientStack(b *testing.B) {
	const n = 500
	origin := testkit.NewOrigin(b)
	addr, client := startHTTP2Caddy(b, origin.URL(), "")

	var perClient float64
	round := 0
	for b.Loop() {
		round++
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		ctx, cancel := context.WithCancel(context.Background())
		bodies := make([]*bufio.Reader, 0, n)
		var closers []func() error
		for range n {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://%s/stack%d", addr, round), nil)
			resp, err := client.Do(req)
			if err != nil {
				cancel()
				b.Fatal(err)
			}
			if resp.ProtoMajor != 2 {
				cancel()
				b.Fatalf("got %s, want HTTP/2", resp.Proto)
			}
			bodies = append(bodies, bufio.NewReader(resp.Body))
			closers = append(closers, resp.Body.Close)
		}
		origin.NextConn(b).Send("data: x\n\n") // a stream of each round's own
		for i, br := range bodies {
			// Each reads up to its event: its writer has written it, and
			// waits for the next.
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					cancel()
					b.Fatalf("client %d: %v", i, err)
				}
				if strings.HasPrefix(line, "data: x") {
					break
				}
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perClient = float64(after.StackInuse-before.StackInuse) / n
		cancel()
		for _, c := range closers {
			_ = c()
		}
		testkit.Eventually(b, "the clients to leave", func() bool {
			return counterValue(b, origin.URL(), "clients") == 0
		})
	}
	b.ReportMetric(perClient, "stack-B/client")
}
