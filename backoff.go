package ssefanout

import (
	"math/rand/v2"
	"time"
)

// This file is the upstream reconnect policy: how long a stream waits
// before its next attempt to reach the origin (issue 24).

// backoffMin is the shortest wait between two attempts, whatever the
// origin's retry or the config says, so that no origin can make us loop hot.
const backoffMin = 250 * time.Millisecond

// backoff decides how long a stream waits between two attempts to reach
// the origin. The wait grows with how long the stream has been failing,
// not with how many attempts failed: an origin that restarts, failing
// fast a few times in a few seconds, is tried again within seconds of
// coming back, while one that stays down is tried about once per cap.
//
// With the outage's length e (the time since the first failure after the
// stream was last live), the wait is drawn at random from
// [max(floor, top/2), top], where top = clamp(e/2, 2*floor, cap). So an
// origin that comes back after an outage of d is tried again within
// max(2*floor, d/2) of that, and never more than the cap after it; and
// no stream tries more often than once per floor.
//
// It is not safe for concurrent use: only the stream's upstream reader,
// which makes one attempt at a time, calls it.
type backoff struct {
	now    func() time.Time    // the clock: time.Now, but in tests
	jitter func(n int64) int64 // uniform in [0, n): rand.N, but in tests

	outageStart time.Time // the first failure since the stream was last live; zero while live
	connectedAt time.Time // when the attempt under way connected; zero if it has not
}

func newBackoff() *backoff {
	return &backoff{now: time.Now, jitter: rand.N[int64]}
}

// connected notes that the attempt under way was answered 200 with an
// event stream.
func (b *backoff) connected() { b.connectedAt = b.now() }

// ended notes the end of an attempt, which delivered an event or not, and
// returns how long to wait before the next one, within [floor, ceiling]
// (see backoffBounds). An attempt that delivered an event, or whose
// connection stayed up for ceiling, shows that the stream was live: the
// outage, if any, starts over with this end. One that connected and then
// dropped at once does not, so that an origin that flaps is tried less and
// less often, as one that refuses.
func (b *backoff) ended(delivered bool, floor, ceiling time.Duration) time.Duration {
	now := b.now()
	if delivered || !b.connectedAt.IsZero() && now.Sub(b.connectedAt) >= ceiling {
		b.outageStart = time.Time{}
	}
	b.connectedAt = time.Time{}
	if b.outageStart.IsZero() {
		b.outageStart = now
	}
	top := min(max(now.Sub(b.outageStart)/2, 2*floor), ceiling)
	low := max(floor, top/2)
	return low + time.Duration(b.jitter(int64(top-low)+1))
}

// backoffBounds returns the floor and the cap of a stream's wait between
// attempts: the floor is the origin's retry (in ms; negative: none sent)
// or else upstream_backoff's floor, never under backoffMin nor over the
// cap; the cap is upstream_backoff's.
func backoffBounds(cfg *settings, originRetry int64) (floor, ceiling time.Duration) {
	floor = cfg.backoffFloor
	if originRetry >= 0 {
		floor = time.Duration(min(originRetry, cfg.backoffCap.Milliseconds())) * time.Millisecond // no overflow
	}
	return min(max(floor, backoffMin), cfg.backoffCap), cfg.backoffCap
}
