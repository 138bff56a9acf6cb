package sse

import (
	"strconv"
	"strings"
)

// This file is the encoder: a block, or a retry time, or a keepalive, in
// the bytes a client is sent.

// Keepalive is a comment: it keeps idle connections open along the way and
// fires nothing in an EventSource.
const Keepalive = ": keepalive\n\n"

// Opening is a comment that begins a stream's body when nothing else is
// ready to: it fires nothing in an EventSource, and is not a Keepalive.
const Opening = ": ok\n\n"

// AppendEvent appends the wire form of ev to dst so that an EventSource
// reading it sees exactly ev: its type, its data, and, when withID is set,
// its last event ID. A block without data is written without data lines:
// it moves the reader's last event ID and fires nothing. Retry is not
// written: the client writer sends the retry time on its own.
func AppendEvent(dst []byte, ev *Event, withID bool) []byte {
	if ev.Type != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, ev.Type...)
		dst = append(dst, '\n')
	}
	if ev.HasData {
		data := ev.Data
		for {
			line := data
			i := strings.IndexByte(data, '\n')
			if i >= 0 {
				line = data[:i]
			}
			if line == "" {
				dst = append(dst, "data:\n"...)
			} else {
				dst = append(dst, "data: "...)
				dst = append(dst, line...)
				dst = append(dst, '\n')
			}
			if i < 0 {
				break
			}
			data = data[i+1:]
		}
	}
	if withID {
		if ev.ID == "" {
			dst = append(dst, "id:\n"...)
		} else {
			dst = append(dst, "id: "...)
			dst = append(dst, ev.ID...)
			dst = append(dst, '\n')
		}
	}
	return append(dst, '\n')
}

// AppendRetry appends a block that sets the reconnection time to ms.
func AppendRetry(dst []byte, ms int64) []byte {
	dst = append(dst, "retry: "...)
	dst = strconv.AppendInt(dst, ms, 10)
	return append(dst, "\n\n"...)
}
