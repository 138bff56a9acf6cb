package ssefanout

// Keepalives.

import (
	"testing"

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
	select {
	case ev := <-c.Events:
		t.Fatalf("a keepalive must not be an event, got %+v", ev)
	default:
	}
}
