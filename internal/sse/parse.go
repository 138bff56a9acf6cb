package sse

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// This file is the parser: bytes in, the blocks an EventSource would
// interpret, one by one.

// ErrEventTooLarge is returned by the parser when one event (or one line)
// grows past the configured maximum size.
var ErrEventTooLarge = errors.New("sse: event or line too large")

// ErrIDTooLong is returned, wrapped with the id's length and a short
// prefix of it, by a parser given SetMaxIDLen when an id field's value is
// longer than that.
var ErrIDTooLong = errors.New("sse: id too long")

// idPrefixLen is how much of an over-long id ErrIDTooLong's text shows:
// enough to tell which origin sent it, not enough to fill a log.
const idPrefixLen = 16

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// Parser reads an event stream and returns its blocks one by one. It keeps
// field values as the origin's bytes: a browser decodes invalid UTF-8 the
// same way whether it reads the origin or us, so we do not touch it.
//
// Its size limit bounds every line and every event. A line (line end not
// counted) may be at most maxSize bytes, comments included. An event's
// size is the sum of the lengths of its data, event, id and retry lines
// as sent (field name, colon and value, line ends not counted); comments
// and fields the spec ignores are dropped as they are read and do not
// count. An event of exactly maxSize bytes passes; one byte more is
// ErrEventTooLarge.
//
// A Parser is not safe for concurrent use.
type Parser struct {
	r        io.Reader
	buf      []byte
	start    int   // first unread byte in buf
	end      int   // one past the last byte read into buf
	readErr  error // the error that ended the reader, once seen
	maxSize  int
	maxIDLen int

	started bool // the BOM check at the stream start is done
	afterCR bool // the last line ended in CR, so a following LF belongs to it
	scanned int  // buf[start:scanned] is known to hold no CR or LF

	// The block being read, and the last-event-ID buffer that outlives it.
	size     int // bytes of the block's counted lines so far
	data     []byte
	typ      string
	hasData  bool
	hasID    bool
	retry    int64
	hasRetry bool
	lastID   string
}

// NewParser returns a parser reading r that refuses any event or line
// larger than maxSize bytes.
func NewParser(r io.Reader, maxSize int) *Parser {
	size := 4096
	if maxSize < size {
		size = maxSize + 1
	}
	return &Parser{r: r, buf: make([]byte, size), maxSize: maxSize, maxIDLen: maxSize}
}

// SetMaxIDLen makes the parser refuse an id longer than n bytes: Next
// returns an error wrapping ErrIDTooLong at that id's line, before its
// block is returned. An id that holds a NUL is ignored, as the spec says,
// whatever its length. Without it, an id is bounded by the size limit only.
func (p *Parser) SetMaxIDLen(n int) { p.maxIDLen = n }

// SetLastID sets the last-event-ID buffer, as if the stream had begun after
// an event with that id. A resumed upstream connection starts from it.
func (p *Parser) SetLastID(id string) { p.lastID = id }

// next returns the next block that carries anything: an event, a new last
// event ID, or a retry time. Comments and empty blocks are skipped. At the
// end of the stream it returns the reader's error (io.EOF for a clean end);
// a block without its terminating blank line is discarded, as the spec says.
func (p *Parser) Next() (Event, error) {
	for {
		line, err := p.readLine()
		if err != nil {
			return Event{}, err
		}
		if len(line) == 0 {
			if ev, ok := p.dispatch(); ok {
				return ev, nil
			}
			continue
		}
		if err := p.field(line); err != nil {
			return Event{}, err
		}
	}
}

// dispatch ends the current block and reports whether it carries anything.
func (p *Parser) dispatch() (Event, bool) {
	ev := Event{
		Type:     p.typ,
		HasData:  p.hasData,
		ID:       p.lastID,
		HasID:    p.hasID,
		Retry:    p.retry,
		HasRetry: p.hasRetry,
	}
	if p.hasData {
		ev.Data = string(p.data[:len(p.data)-1]) // drop the final LF
	}
	p.size = 0
	p.data = p.data[:0]
	p.typ = ""
	p.hasData, p.hasID, p.hasRetry = false, false, false
	p.retry = 0
	// A block with a type but no data fires nothing in a browser, but some
	// client libraries (go-sse) fire it, so it is reported, and passed on.
	return ev, ev.HasData || ev.HasID || ev.HasRetry || ev.Type != ""
}

// field interprets one non-empty line.
func (p *Parser) field(line []byte) error {
	var name, value []byte
	switch i := bytes.IndexByte(line, ':'); {
	case i == 0:
		return nil // a comment
	case i < 0:
		name = line
	default:
		name, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(name) {
	case "event", "data", "id", "retry":
		p.size += len(line)
		if p.size > p.maxSize {
			return ErrEventTooLarge
		}
	default:
		return nil // a field the spec ignores
	}
	switch string(name) {
	case "event":
		p.typ = string(value)
	case "data":
		p.data = append(p.data, value...)
		p.data = append(p.data, '\n')
		p.hasData = true
	case "id":
		if bytes.IndexByte(value, 0) >= 0 {
			return nil // ignored, as the spec says
		}
		if len(value) > p.maxIDLen {
			return fmt.Errorf("%w: %d bytes, over %d (it starts %q)", ErrIDTooLong, len(value), p.maxIDLen, value[:min(len(value), idPrefixLen)])
		}
		p.lastID = string(value)
		p.hasID = true
	case "retry":
		if n, ok := parseRetry(value); ok {
			p.retry, p.hasRetry = n, true
		}
	}
	return nil
}

// parseRetry parses a retry value, which counts only when it is one or more
// ASCII digits.
func parseRetry(value []byte) (int64, bool) {
	if len(value) == 0 {
		return 0, false
	}
	for _, b := range value {
		if b < '0' || b > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(string(value), 10, 64)
	return n, err == nil
}

// readLine returns the next line without its line end. A line ends at CRLF,
// LF or CR; a CR at the end of one read and an LF at the start of the next
// make one line end. The returned slice is valid until the next call.
func (p *Parser) readLine() ([]byte, error) {
	for {
		if !p.started {
			p.skipBOM()
		}
		if p.start < p.end {
			if p.afterCR {
				p.afterCR = false
				if p.buf[p.start] == '\n' {
					p.start++
					continue
				}
			}
			if line, ok := p.cutLine(); ok {
				return line, nil
			}
		}
		if p.end-p.start > p.maxSize {
			return nil, ErrEventTooLarge
		}
		if p.readErr != nil {
			return nil, p.readErr // a partial last line is discarded
		}
		p.fill()
	}
}

// cutLine takes one complete line off the buffer, if there is one.
func (p *Parser) cutLine() ([]byte, bool) {
	// Search only the bytes not searched before: a long line that arrives
	// in many reads must not be rescanned from its start after each one.
	from := max(p.scanned, p.start)
	i := indexLineEnd(p.buf[from:p.end])
	if i < 0 {
		p.scanned = p.end
		return nil, false
	}
	i += from
	if p.buf[i] == '\r' {
		p.afterCR = true
	}
	line := p.buf[p.start:i]
	p.start = i + 1
	return line, true
}

// indexLineEnd returns the index of the first CR or LF in b, or -1.
func indexLineEnd(b []byte) int {
	// Two IndexByte calls are much faster than a byte loop, but looking
	// for an LF through all of b at each line would make a stream whose
	// lines end in CR alone quadratic in the buffer size. So look in
	// windows that double in size.
	for lo, hi := 0, 256; lo < len(b); lo, hi = hi, 2*hi {
		win := b[lo:min(hi, len(b))]
		i := bytes.IndexByte(win, '\n')
		if i >= 0 {
			win = win[:i]
		}
		if j := bytes.IndexByte(win, '\r'); j >= 0 {
			return lo + j
		}
		if i >= 0 {
			return lo + i
		}
	}
	return -1
}

// skipBOM drops one U+FEFF at the very start of the stream.
func (p *Parser) skipBOM() {
	// Stop when the buffer is full too: with a maxSize below the BOM's
	// length, fill could never read the rest and this would spin forever.
	for p.end-p.start < len(utf8BOM) && p.readErr == nil && p.end < len(p.buf) {
		p.fill()
	}
	p.started = true
	if bytes.HasPrefix(p.buf[p.start:p.end], utf8BOM) {
		p.start += len(utf8BOM)
	}
}

// fill reads more bytes into the buffer, moving unread bytes to its front
// and growing it (up to just past maxSize) when it is full.
func (p *Parser) fill() {
	if p.start > 0 {
		p.end = copy(p.buf, p.buf[p.start:p.end])
		p.scanned = max(p.scanned-p.start, 0)
		p.start = 0
	}
	if p.end == len(p.buf) {
		size := 2 * len(p.buf)
		if size > p.maxSize+1 {
			size = p.maxSize + 1
		}
		if size <= len(p.buf) {
			return // full at the limit; readLine reports the oversize line
		}
		grown := make([]byte, size)
		copy(grown, p.buf[:p.end])
		p.buf = grown
	}
	n, err := p.r.Read(p.buf[p.end:])
	p.end += n
	if err != nil {
		p.readErr = err
	}
}
