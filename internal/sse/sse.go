// Package sse reads and writes the event-stream format of the WHATWG HTML
// Living Standard, "Server-sent events": the parser turns an origin's bytes
// into the blocks an EventSource would interpret (parsing an event stream,
// interpreting it, dispatching events), and the encoder writes a block so
// that an EventSource reading it sees exactly that block again. It uses the
// standard library only.
package sse

// Event is what one blank-line-terminated block of an event stream amounts
// to, as an EventSource would interpret it.
type Event struct {
	// Type is the event type; empty dispatches as "message".
	Type string
	// Data is the event's data, its lines joined by LF.
	Data string
	// HasData reports whether the block had at least one data field, that
	// is, whether it fires an event. An event may fire with empty Data.
	HasData bool
	// ID is the stream's last event ID after this block.
	ID string
	// HasID reports whether the block itself set the last event ID.
	HasID bool
	// Retry is the reconnection time in milliseconds, valid if HasRetry.
	Retry int64
	// HasRetry reports whether the block had a valid retry field.
	HasRetry bool
}

// RetryOnly reports whether the block carries nothing but, at most, a
// retry time: no data, no id and no event type. It fires no event and
// moves no cursor.
func (e *Event) RetryOnly() bool { return !e.HasData && !e.HasID && e.Type == "" }
