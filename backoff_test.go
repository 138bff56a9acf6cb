package ssefanout

// The upstream reconnect policy, on a fake clock.

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when the test moves it.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newFakeClock() *fakeClock               { return &fakeClock{t: time.Unix(1e9, 0)} }
func jitterMost(n int64) int64               { return n - 1 }
func jitterLeast(int64) int64                { return 0 }
func testBackoff(clk *fakeClock, jitter func(int64) int64) *backoff {
	return &backoff{now: clk.now, jitter: jitter}
}

// defaultBounds are the floor and cap of a stream whose origin sent no retry.
func defaultBounds(t *testing.T) (floor, ceiling time.Duration) {
	t.Helper()
	floor, ceiling = backoffBounds(testSettings(), -1)
	if floor != time.Second || ceiling != 30*time.Second {
		t.Fatalf("default bounds %v, %v; want 1s, 30s", floor, ceiling)
	}
	return floor, ceiling
}

// recoveryDelay runs b through an outage of d that starts on a live
// stream: every attempt fails at once until d has passed since the first
// failure, and the first attempt from then on is served. It returns how
// long after the origin healed that attempt came.
func recoveryDelay(b *backoff, clk *fakeClock, d, floor, ceiling time.Duration) time.Duration {
	start := clk.now()
	for {
		clk.advance(b.ended(false, floor, ceiling))
		if elapsed := clk.now().Sub(start); elapsed >= d {
			return elapsed - d
		}
	}
}

// TestBackoffAfterFastFailures is issue 24's case: an origin restarting
// fails ten times within three seconds, then is healthy. The next
// attempt, the one it serves, comes within 2 s, however the jitter falls.
func TestBackoffAfterFastFailures(t *testing.T) {
	floor, ceiling := defaultBounds(t)
	for name, jitter := range map[string]func(int64) int64{"most": jitterMost, "least": jitterLeast} {
		clk := newFakeClock()
		b := testBackoff(clk, jitter)
		var wait time.Duration
		for i := 0; i < 10; i++ {
			if i > 0 {
				clk.advance(300 * time.Millisecond)
			}
			wait = b.ended(false, floor, ceiling)
		}
		if wait > 2*time.Second || wait < floor {
			t.Errorf("jitter %s: after ten failures in 2.7s the wait is %v, want within [%v, 2s]", name, wait, floor)
		}
		// That attempt is served: the next failure is a new outage.
		clk.advance(wait)
		b.connected()
		clk.advance(time.Second)
		if wait := b.ended(true, floor, ceiling); wait > 2*floor {
			t.Errorf("jitter %s: after a healthy connection the wait is %v, want at most %v", name, wait, 2*floor)
		}
	}
}

// TestBackoffServesWithinHalfTheOutage: after an outage of d, the first
// attempt comes within max(2s, d/2) of the origin healing, and never
// more than the cap after it; for a sixty-second outage, within 30 s.
func TestBackoffServesWithinHalfTheOutage(t *testing.T) {
	floor, ceiling := defaultBounds(t)
	clk := newFakeClock()
	if got := recoveryDelay(testBackoff(clk, jitterMost), clk, time.Minute, floor, ceiling); got > 30*time.Second {
		t.Fatalf("after a 60s outage the first attempt came %v after the origin healed, want within 30s", got)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, jitter := range []func(int64) int64{jitterMost, jitterLeast, rng.Int64N} {
		for d := 100 * time.Millisecond; d < 20*time.Minute; d = d * 5 / 4 {
			clk := newFakeClock()
			got := recoveryDelay(testBackoff(clk, jitter), clk, d, floor, ceiling)
			if promise := min(max(2*time.Second, d/2), ceiling); got > promise {
				t.Fatalf("after a %v outage the first attempt came %v after the origin healed, want within %v", d, got, promise)
			}
		}
	}
}

// TestBackoffReachesTheCap: failures spread over minutes wait the cap,
// jittered down by up to half of it, and never more.
func TestBackoffReachesTheCap(t *testing.T) {
	floor, ceiling := defaultBounds(t)
	clk := newFakeClock()
	most := testBackoff(clk, jitterMost)
	least := testBackoff(clk, jitterLeast)
	for i := 0; i < 10; i++ {
		wMost, wLeast := most.ended(false, floor, ceiling), least.ended(false, floor, ceiling)
		if wMost > ceiling || wLeast < floor {
			t.Fatalf("at %v into the outage the waits are %v to %v, want within [%v, %v]", time.Duration(i)*30*time.Second, wLeast, wMost, floor, ceiling)
		}
		if i >= 2 && (wMost != ceiling || wLeast != ceiling/2) {
			t.Errorf("at %v into the outage the waits are %v to %v, want %v to %v", time.Duration(i)*30*time.Second, wLeast, wMost, ceiling/2, ceiling)
		}
		clk.advance(30 * time.Second)
	}
}

// TestBackoffGrowsAndIsBounded: the wait grows with the outage's length,
// not with the count of failures, and any jitter stays within [floor, cap].
func TestBackoffGrowsAndIsBounded(t *testing.T) {
	floor, ceiling := defaultBounds(t)
	clk := newFakeClock()
	b := testBackoff(clk, rand.N[int64])
	most := testBackoff(clk, jitterMost)
	var prevTop time.Duration
	for elapsed := time.Duration(0); elapsed < 5*time.Minute; elapsed += 700 * time.Millisecond {
		for i := 0; i < 20; i++ {
			if got := b.ended(false, floor, ceiling); got < floor || got > ceiling {
				t.Fatalf("at %v into the outage a wait of %v, want within [%v, %v]", elapsed, got, floor, ceiling)
			}
		}
		top := most.ended(false, floor, ceiling)
		if top < prevTop {
			t.Fatalf("at %v into the outage the longest wait fell to %v from %v", elapsed, top, prevTop)
		}
		prevTop = top
		clk.advance(700 * time.Millisecond)
	}
	if prevTop != ceiling {
		t.Fatalf("after five minutes the longest wait is %v, want the cap %v", prevTop, ceiling)
	}
}

// TestBackoffFloorFromOrigin: the origin's retry sets the floor, never
// under 250ms (an origin cannot make us loop hot) nor over the cap.
func TestBackoffFloorFromOrigin(t *testing.T) {
	cfg := testSettings()
	for _, tc := range []struct {
		retry int64 // ms; -1: none sent
		floor time.Duration
	}{
		{-1, time.Second},
		{5000, 5 * time.Second},
		{400, 400 * time.Millisecond},
		{0, backoffMin},
		{1, backoffMin},
		{600000, 30 * time.Second},
		{math.MaxInt64, 30 * time.Second},
	} {
		floor, ceiling := backoffBounds(cfg, tc.retry)
		if floor != tc.floor || ceiling != 30*time.Second {
			t.Errorf("origin retry %d: bounds %v, %v; want %v, 30s", tc.retry, floor, ceiling, tc.floor)
		}
		clk := newFakeClock()
		if w := testBackoff(clk, jitterLeast).ended(false, floor, ceiling); w != floor {
			t.Errorf("origin retry %d: the first wait is at least %v, want the floor %v", tc.retry, w, floor)
		}
	}
	cfg.backoffFloor, cfg.backoffCap = 2*time.Second, 10*time.Second // upstream_backoff 2s 10s
	if floor, ceiling := backoffBounds(cfg, -1); floor != 2*time.Second || ceiling != 10*time.Second {
		t.Errorf("upstream_backoff 2s 10s: bounds %v, %v", floor, ceiling)
	}
	if floor, _ := backoffBounds(cfg, 5000); floor != 5*time.Second {
		t.Errorf("upstream_backoff 2s 10s, origin retry 5s: floor %v, want 5s", floor)
	}
}

// TestBackoffLiveResets: a connection that delivered an event, or that
// stayed up for the cap, ends the outage; one that answered 200 and
// dropped at once does not, so a flapping origin still sees the cap.
func TestBackoffLiveResets(t *testing.T) {
	floor, ceiling := defaultBounds(t)
	clk := newFakeClock()
	b := testBackoff(clk, jitterMost)
	b.ended(false, floor, ceiling)
	clk.advance(time.Hour)
	for i := 0; i < 3; i++ { // connects, then drops with nothing sent
		b.connected()
		clk.advance(time.Second)
		if w := b.ended(false, floor, ceiling); w != ceiling {
			t.Fatalf("a connection that dropped at once: wait %v, want the cap %v", w, ceiling)
		}
	}
	b.connected()
	clk.advance(ceiling) // up and silent for the cap: the origin was up
	if w := b.ended(false, floor, ceiling); w != 2*floor {
		t.Fatalf("after a connection that lasted the cap: wait %v, want %v", w, 2*floor)
	}
	clk.advance(time.Hour)
	b.connected()
	if w := b.ended(true, floor, ceiling); w != 2*floor {
		t.Fatalf("after a connection that delivered: wait %v, want %v", w, 2*floor)
	}
}
