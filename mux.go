package ssefanout

import (
	"bytes"
	"errors"
	"strings"
	"sync/atomic"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
)

// This file is multiplexing (docs/multiplex.md): a page reads several
// streams, its members, on one response. Each member is an ordinary client
// of its stream, as a request for that stream alone would be; the members
// of one request are served together, by one writer (its request
// goroutine, or once detached a shared writer of its first member's
// stream), as one muxClient, which renames each member's events after it
// and gives every event the composite cursor: every member's last event
// ID, in one id.

// muxClient is a multiplexed request's members, one client per stream,
// served by one writer as a client is (served): the request goroutine
// (respWriter.serve) or, detached, a shared writer (writerShard). Its
// members end together: the first to end ends the others, and the page
// reconnects with its composite cursor.
type muxClient struct {
	members []*client
	names   []string // each member's name in the request: its events' type, or their type's prefix
	// ids are each member's last event ID as the page holds it: from its
	// part of the cursor the request resumed with, then from each frame or
	// id block it is sent. Only the writer touches them.
	ids []string
	// w is what serves the page: its request goroutine, through its first
	// member's requestWriter (the page waits on that member's wakeC, and
	// arms that member's abort hook: newRespWriter), or, detached, a
	// shared writer. Each member's writer (muxWriter) wakes it.
	w atomic.Pointer[writer]
	// membersW is the writer of every member (muxWriter), one for all:
	// each member's writer points at it, so that a member costs none.
	membersW writer
	done     chan struct{} // closed when the members are ended
	cause    error         // why; set before done closes
	ends     atomic.Bool   // end has begun
}

// newMuxClient serves the members, which joined their streams for a
// request whose cursor gave them ids (their parts of it, "" for none), by
// one writer from now on, in enc (nil: none). The members joined
// uncompressed: a page is compressed per page, each piece on its own
// (alonePacker), since its bytes are its own.
func newMuxClient(names, ids []string, members []*client, enc *encoding) *muxClient {
	m := &muxClient{
		members: members,
		names:   names,
		ids:     ids,
		done:    make(chan struct{}),
	}
	m.serveBy(requestWriter{members[0]})
	m.membersW = muxWriter{m}
	body := &aloneBody{enc: enc}
	for i, c := range members {
		c.pack = body.packer(muxPacker{m, i})
		c.w.Store(&m.membersW)
	}
	for _, c := range members {
		select {
		case <-c.done: // ended before it was ours: end the others too
			m.end(c.cause)
		default:
		}
	}
	return m
}

// next appends what each member is to be sent next, in turn, up to
// about limit bytes in all (client.next), and reports whether more
// remains for any. A member past limit is still asked, with none left,
// whether it has more. A member that breaks the lag rule ends the page.
func (m *muxClient) next(out []byte, limit int) (_ []byte, more bool, err error) {
	start := len(out)
	for _, c := range m.members {
		var left bool
		if out, left, err = c.next(out, limit-(len(out)-start)); err != nil {
			return out[:start], false, err
		}
		more = more || left
	}
	return out, more, nil
}

func (m *muxClient) serveBy(w writer)         { m.w.Store(&w) }
func (m *muxClient) writer() writer           { return *m.w.Load() }
func (m *muxClient) wakeups() <-chan struct{} { return m.members[0].wakeC }
func (m *muxClient) ended() <-chan struct{}   { return m.done }
func (m *muxClient) why() error               { return m.cause }

// end ends every member with cause, once, then tells the page's writer.
// A member that ends on its own (cut for lagging, its stream closed) calls
// it through its writer.
func (m *muxClient) end(cause error) {
	if !m.ends.CompareAndSwap(false, true) {
		return
	}
	m.cause = cause
	close(m.done)
	for _, c := range m.members {
		select {
		case <-c.done: // it is ending, and called us: its end is under way
		default:
			c.end(cause)
		}
	}
	m.writer().end()
}

// muxWriter is the writer of a muxClient's members, one for all: it wakes
// the writer that serves them all, and the end of one member ends them
// all, with its cause.
type muxWriter struct{ m *muxClient }

func (w muxWriter) wake() { w.m.writer().wake() }

// end is called by a member that ended (client.end), after its done
// closed: the page ends with the cause of a member found ended.
func (w muxWriter) end() {
	for _, c := range w.m.members {
		select {
		case <-c.done:
			w.m.end(c.cause)
			return
		default:
		}
	}
}

// muxPacker is a member's packer: it renames what the member is sent
// after the member and gives it the composite cursor. A compressed page's
// members compress what it appends (alonePacker).
type muxPacker struct {
	m *muxClient
	i int // which member
}

// frame appends f, renamed after the member: an event that fires is of
// type "<name>" when it is a message, else "<name>:<type>", with its data
// as it is; any block is given the composite cursor as its id when it
// carries an id or fires; a block that does neither is dropped.
func (p muxPacker) frame(out []byte, f *frame) []byte {
	if f.carriesID {
		p.m.ids[p.i] = f.id
	}
	if !f.fires && !f.carriesID {
		return out
	}
	if f.fires {
		out = append(out, "event: "...)
		out = appendMuxType(out, p.m.names[p.i], f.typ)
		out = append(out, '\n')
		out = appendDataLines(out, f.bytes)
	}
	return p.appendCursor(out)
}

func (p muxPacker) loose(out []byte, f *frame) []byte { return p.frame(out, f) }
func (p muxPacker) own(out, plain []byte) []byte      { return append(out, plain...) }
func (p muxPacker) keepalive(out []byte) []byte       { return append(out, sse.Keepalive...) }
func (p muxPacker) encoding() *encoding               { return nil }
func (p muxPacker) release()                          {}

// id sets the member's last event ID and appends an id-only block with
// the composite cursor.
func (p muxPacker) id(out []byte, id string) []byte {
	p.m.ids[p.i] = id
	return p.appendCursor(out)
}

// appendCursor appends the id line with the composite cursor, and ends
// the block.
func (p muxPacker) appendCursor(out []byte) []byte {
	out = append(out, "id: "...)
	out = appendMuxCursor(out, p.m.ids)
	return append(out, '\n', '\n')
}

// appendMuxType appends the event type a member's event is sent with:
// its name for a message, else its name, a colon and the origin's type. A
// name holds no colon (muxNameOK), so the first colon always ends it, and
// no origin type makes one member's events another's.
func appendMuxType(out []byte, name, typ string) []byte {
	out = append(out, name...)
	if typ != "message" {
		out = append(out, ':')
		out = append(out, typ...)
	}
	return out
}

// appendDataLines appends the data lines of a block as sse.AppendEvent
// encodes it: its lines that are data fields, each with its line end.
func appendDataLines(out, block []byte) []byte {
	for len(block) > 0 {
		line := block
		if i := bytes.IndexByte(block, '\n'); i >= 0 {
			line, block = block[:i+1], block[i+1:]
		} else {
			block = nil
		}
		if bytes.HasPrefix(line, []byte("data")) {
			out = append(out, line...)
		}
	}
	return out
}

// The composite cursor names every member's last event ID, in the order
// the request lists its members: the parts, joined by commas, each
// percent-encoded but for the unreserved bytes of RFC 3986 (A-Z a-z 0-9
// - . _ ~), so that any id (with commas, colons, percent signs, spaces,
// non-ASCII) comes back as it was, and the cursor is ASCII with no space
// at either end, which an HTTP header would trim. An empty part is a
// member without an id.

// maxMuxCursorLen is the longest composite cursor of n members that is
// looked up: every part at its longest (maxCursorLen, each byte escaped),
// and the commas. An origin's id is never longer than maxCursorLen
// (upstream.go), so no cursor the handler sent is longer.
func maxMuxCursorLen(n int) int { return n*(3*maxCursorLen+1) - 1 }

// appendMuxCursor appends the composite cursor of ids.
func appendMuxCursor(out []byte, ids []string) []byte {
	const hex = "0123456789ABCDEF"
	for i, id := range ids {
		if i > 0 {
			out = append(out, ',')
		}
		for j := 0; j < len(id); j++ {
			if b := id[j]; unreserved(b) {
				out = append(out, b)
			} else {
				out = append(out, '%', hex[b>>4], hex[b&15])
			}
		}
	}
	return out
}

// unreserved reports whether b is an unreserved byte of RFC 3986, which a
// cursor part holds as it is.
func unreserved(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '-' || b == '.' || b == '_' || b == '~'
}

// errBadMuxCursor marks a composite cursor that is not one: not n parts,
// a byte a part does not hold as it is, or a bad escape. It is served as
// an unusable cursor: every member is stale, and nothing is echoed.
var errBadMuxCursor = errors.New("not a composite cursor")

// splitMuxCursor splits a composite cursor of n members into its parts,
// unescaped and not yet validated as cursors (parseCursor does that, for
// each). It fails with errBadMuxCursor for a cursor that is not one.
func splitMuxCursor(raw string, n int) ([]string, error) {
	if strings.Count(raw, ",") != n-1 {
		return nil, errBadMuxCursor
	}
	parts := make([]string, 0, n)
	for part := range strings.SplitSeq(raw, ",") {
		var b []byte
		for i := 0; i < len(part); i++ {
			switch c := part[i]; {
			case unreserved(c):
				b = append(b, c)
			case c == '%' && i+2 < len(part):
				hi, ok1 := unhex(part[i+1])
				lo, ok2 := unhex(part[i+2])
				if !ok1 || !ok2 {
					return nil, errBadMuxCursor
				}
				b = append(b, hi<<4|lo)
				i += 2
			default:
				return nil, errBadMuxCursor
			}
		}
		parts = append(parts, string(b))
	}
	return parts, nil
}

// unhex is the value of the hex digit c, and whether c is one.
func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
