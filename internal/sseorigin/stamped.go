package sseorigin

import (
	"bytes"
	"strconv"
	"time"
)

// Stamped is an event of the benchmark format, which bench/sseload reads:
//
//	id: 42
//	data: 42 1767225600123456789 xxxxxxxx…
//
// The data is the event's sequence number (the same as its id), its send
// time in Unix nanoseconds, and padding up to the event's size on the
// wire. It is encoded once and every connection gets the same bytes.
type Stamped struct {
	seq  uint64
	wire []byte // id and data lines and the blank line; never modified
	data int    // where the data value starts in wire
}

// NewStamped encodes event seq, stamped with sent, padded so that its id
// and data lines and the blank line after them come to size bytes. Padding
// takes at least two bytes (a space and an x), so when size leaves less
// room than that the event goes unpadded, a byte short of size or more
// than it.
func NewStamped(seq uint64, sent time.Time, size int) *Stamped {
	b := make([]byte, 0, max(size, 64))
	b = append(b, "id: "...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, "\ndata: "...)
	data := len(b)
	b = appendData(b, seq, sent.UnixNano(), size-len(b)-2)
	b = append(b, "\n\n"...)
	return &Stamped{seq: seq, wire: b, data: data}
}

// appendData appends "seq nanos" and, when room is larger than that, a
// space and padding up to room bytes.
func appendData(b []byte, seq uint64, nanos int64, room int) []byte {
	from := len(b)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, nanos, 10)
	if pad := room - (len(b) - from) - 1; pad > 0 {
		b = append(b, ' ')
		b = append(b, bytes.Repeat([]byte{'x'}, pad)...)
	}
	return b
}

// Seq returns the event's sequence number, which is also its id.
func (e *Stamped) Seq() uint64 { return e.seq }

// AppendWire appends the event as sent; it is the same on every stream.
func (e *Stamped) AppendWire(dst []byte, _ string) []byte { return append(dst, e.wire...) }

// Data returns the event's data: what follows "data: " on the wire, before
// the line end. The caller must not modify it.
func (e *Stamped) Data() []byte { return e.wire[e.data : len(e.wire)-2] }
