package ssefanout

import "testing"

// feedReaders counts the clients reading catch-up feeds for id, over every
// live stream.
func feedReaders(id string) int {
	n := 0
	registries.Range(func(_, value any) bool {
		r := value.(*registry)
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, s := range r.streams {
			s.mu.RLock()
			if f := s.feeds[clientCursor(id)]; f != nil {
				f.mu.Lock()
				n += f.readers
				f.mu.Unlock()
			}
			s.mu.RUnlock()
		}
		return true
	})
	return n
}

func TestCatchUpHerdSharesOneOriginRequest(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\tbuffer 5\n\tclient_queue 5\n}")
	up, witness := startStream(t, origin, base+"/herd", 50)

	const n = 20
	var herd []*testClient
	for i := 0; i < n; i++ {
		herd = append(herd, openClient(t, base+"/herd", lastEventID("10")))
	}
	catchUp := origin.nextConn(t)
	if got := catchUp.header.Get("Last-Event-ID"); got != "10" {
		t.Fatalf("catch-up request Last-Event-ID %q, want 10", got)
	}
	eventually(t, "the whole herd to read the catch-up", func() bool { return feedReaders("10") == n })
	origin.noNewConn(t) // one request for all of them

	sendIDs(catchUp, 11, 50) // the origin resumes; it meets the buffer at 46
	catchUp.waitClosed(t)
	sendIDs(up, 51, 53)
	for _, c := range herd {
		c.expectIDs(t, 11, 53)
	}
	witness.expectIDs(t, 51, 53)
	origin.noNewConn(t)
	if got := counterValue(t, origin.URL(), "catch_ups"); got != 1 {
		t.Fatalf("%v catch-up requests counted, want 1", got)
	}
}

func TestCatchUpStopsWhenItsLastClientLeaves(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\tbuffer 5\n\tclient_queue 5\n}")
	startStream(t, origin, base+"/gone", 50)

	first := openClient(t, base+"/gone", lastEventID("10"))
	second := openClient(t, base+"/gone", lastEventID("10"))
	catchUp := origin.nextConn(t)
	eventually(t, "both clients to read the catch-up", func() bool { return feedReaders("10") == 2 })
	sendIDs(catchUp, 11, 12)
	first.expectIDs(t, 11, 12)
	first.close()
	second.expectIDs(t, 11, 12) // the other one reads on
	sendIDs(catchUp, 13, 13)
	second.expectIDs(t, 13, 13)
	second.close()
	catchUp.waitClosed(t) // nobody reads it any more
	eventually(t, "the feed to be forgotten", func() bool { return feedReaders("10") == 0 })
}
