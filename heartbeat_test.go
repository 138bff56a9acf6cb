package ssefanout

// Keepalives.

import (
	"testing"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

func TestHeartbeatOnSilentStream(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\theartbeat 50ms\n}")
	c := testkit.OpenClient(t, base+"/quiet", nil)
	origin.NextConn(t)
	for i := 0; i < 3; i++ {
		c.WaitKeepalive(t)
	}
	if ev, ok := c.Poll(0); ok {
		t.Fatalf("a keepalive must not be an event, got %+v", ev)
	}
}

func TestStuckWriteIsEndedAfterWriteTimeout(t *testing.T) {
	s := newTestStream(testSettings())
	stuck, fresh, idle := addClient(s), addClient(s), addClient(s)
	aborted := make(chan *client, 3)
	for _, c := range []*client{stuck, fresh, idle} {
		abort := func() { aborted <- c }
		c.abort.Store(&abort)
	}
	stuck.writing.Store(time.Now().Add(-time.Minute).UnixNano())
	fresh.writing.Store(time.Now().UnixNano())

	s.endStuckWrites(30 * time.Second)
	select {
	case c := <-aborted:
		if c != stuck {
			t.Fatal("a write that is not stuck was ended")
		}
	case <-time.After(testkit.WaitTimeout):
		t.Fatal("the stuck write was not ended")
	}
	if stuck.cause != errWriteTimeout {
		t.Fatalf("the stuck client ended with %v", stuck.cause)
	}
	for _, c := range []*client{fresh, idle} {
		select {
		case <-c.done:
			t.Fatalf("a client whose write is not stuck was ended: %v", c.cause)
		default:
		}
	}
}

// The stream's timer is also the write watchdog's (watchdog.go): it must
// look often enough to end a stuck write about write_timeout after it
// began, whatever the heartbeat, off or longer than write_timeout; with
// the default heartbeat it looks every quarter of write_timeout.
func TestWatchdogLooksWithinWriteTimeoutWhateverTheHeartbeat(t *testing.T) {
	for _, heartbeat := range []time.Duration{-1, 15 * time.Second, 10 * time.Minute} {
		cfg := testSettings()
		cfg.heartbeat = heartbeat
		s := newTestStream(cfg)
		var lastFilterRound time.Duration
		if wait, most := s.heartbeatWait(&lastFilterRound), cfg.writeTimeout/4; wait > most {
			t.Errorf("heartbeat %v: the timer looks again after %v, want at most %v (write_timeout %v)", heartbeat, wait, most, cfg.writeTimeout)
		}
	}
}
