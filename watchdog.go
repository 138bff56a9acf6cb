package ssefanout

import (
	"errors"
	"time"
)

// This file is the write watchdog: it ends a client whose write never
// completes. The stream's timer (heartbeat.go) runs it on every tick.

// errWriteTimeout ends a client whose write took longer than write_timeout.
var errWriteTimeout = errors.New("a write to the client took longer than write_timeout")

// endStuckWrites ends the clients whose write has been in flight for longer than timeout. A writer past Caddy's chain
// (respWriter) writes without deadlines, which over HTTP/2 would cost a
// message to the connection's goroutine on every write: a connection that
// takes nothing more would hold its writer for good, and this ends it.
func (s *stream) endStuckWrites(timeout time.Duration) {
	now := time.Now().UnixNano()
	s.eachClient(func(c *client) {
		if since := c.writing.Load(); since != 0 && now-since > int64(timeout) {
			c.end(errWriteTimeout)
			c.abortWrite() // if it was ended before, its write was not
		}
	})
}
