package ssefanout

// Catch-up requests shared by the clients with the same cursor.

import (
	"testing"

	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// feedReaders counts the clients reading catch-up feeds for id, over every
// live stream.
func feedReaders(id string) int {
	n := 0
	registries.Range(func(_, value any) bool {
		r := value.(*registry)
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, s := range r.streams {
			s.catchUps.mu.Lock()
			if f := s.catchUps.feeds[clientCursor(id)]; f != nil {
				f.mu.Lock()
				n += f.readers
				f.mu.Unlock()
			}
			s.catchUps.mu.Unlock()
		}
		return true
	})
	return n
}

func TestCatchUpHerdSharesOneOriginRequest(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tbuffer 5\n\tclient_queue 5\n}")
	up, witness := testkit.StartStream(t, origin, base+"/herd", 50)

	const n = 20
	var herd []*testkit.Client
	for i := 0; i < n; i++ {
		herd = append(herd, testkit.OpenClient(t, base+"/herd", testkit.LastEventID("10")))
	}
	catchUp := origin.NextConn(t)
	if got := catchUp.Header.Get("Last-Event-ID"); got != "10" {
		t.Fatalf("catch-up request Last-Event-ID %q, want 10", got)
	}
	testkit.Eventually(t, "the whole herd to read the catch-up", func() bool { return feedReaders("10") == n })
	origin.NoNewConn(t) // one request for all of them

	testkit.SendIDs(catchUp, 11, 50) // the origin resumes; it meets the buffer at 46
	catchUp.WaitClosed(t)
	testkit.SendIDs(up, 51, 53)
	for _, c := range herd {
		c.ExpectIDs(t, 11, 53)
	}
	witness.ExpectIDs(t, 51, 53)
	origin.NoNewConn(t)
	if got := counterValue(t, origin.URL(), "catch_ups"); got != 1 {
		t.Fatalf("%v catch-up requests counted, want 1", got)
	}
}

func TestCatchUpStopsWhenItsLastClientLeaves(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tbuffer 5\n\tclient_queue 5\n}")
	testkit.StartStream(t, origin, base+"/gone", 50)

	first := testkit.OpenClient(t, base+"/gone", testkit.LastEventID("10"))
	second := testkit.OpenClient(t, base+"/gone", testkit.LastEventID("10"))
	catchUp := origin.NextConn(t)
	testkit.Eventually(t, "both clients to read the catch-up", func() bool { return feedReaders("10") == 2 })
	testkit.SendIDs(catchUp, 11, 12)
	first.ExpectIDs(t, 11, 12)
	first.Close()
	second.ExpectIDs(t, 11, 12) // the other one reads on
	testkit.SendIDs(catchUp, 13, 13)
	second.ExpectIDs(t, 13, 13)
	second.Close()
	catchUp.WaitClosed(t) // nobody reads it any more
	testkit.Eventually(t, "the feed to be forgotten", func() bool { return feedReaders("10") == 0 })
}
