package ssefanout

import (
	"sync"
	"sync/atomic"
)

// This file compresses each frame once per stream, not once per client.
//
// Pieces compressed independently lose what a per-client compressor
// gains from the events before each one (similar JSON events compress about
// twice as well in a stream as alone). So each stream keeps, per encoding
// that its clients use, a chain: one compressor that compresses every frame
// after the ones before it, as a per-client compressor would, and flushes
// it. A frame's piece in the chain is only valid for a client whose
// decoder holds exactly what the chain's compressor held: that client must
// have been sent every piece of the chain's current segment, from the
// segment's first, and nothing in between. Such a client follows the
// chain; it is sent each frame as a piece of the chain, shared by every
// client that follows it.
//
// A client that does not follow the chain (it joined mid-segment, or was
// sent a piece of its own: its retry time, its cursor priming, a
// keepalive, its catch-up) is sent frames compressed on their own, made
// once per frame when a client first needs them, until the chain begins a
// new segment: the compressor restarts, forgetting what came before, so
// that every client can follow it from its first piece. A restart costs
// every follower one frame compressed as if alone, so it comes when the
// frames sent on their own since the segment began outnumber the chain's
// clients, or a client has waited maxSegmentWait frames, or every client
// was just sent a piece of its own (a keepalive round, a new retry time).

// maxSegmentWait is the most frames a client waits, outside its stream's
// chain, for a new segment to begin.
const maxSegmentWait = 32

// framePack is a frame's compressed forms in one encoding. The chain piece
// is made before the frame is published, the piece on its own when a
// client first needs it, under the ring's read lock (aloneOf).
type framePack struct {
	chain   []byte // the frame as a piece of its stream's chain; nil when no client used the encoding
	segment uint64 // the chain segment it belongs to
	first   bool   // it begins its segment
	once    sync.Once
	alone   []byte // the frame compressed on its own
}

// framePacks are a frame's compressed forms, by encoding.
type framePacks [numEncodings]framePack

// aloneOf returns f compressed on its own in enc, making it the first time,
// when it counts in f's size (frame.grow). The ring's read lock must be
// held, with f in the ring.
func (fp *framePack) aloneOf(f *frame, enc *encoding) []byte {
	fp.once.Do(func() {
		fp.alone = enc.alone(nil, f.bytes)
		f.grow(len(fp.alone))
	})
	return fp.alone
}

// chains are a stream's compression: its chain per encoding.
type chains struct {
	// restartAll is set when every client was just sent a piece of its
	// own, so that the next frame begins new segments, which they follow
	// at once.
	restartAll atomic.Bool
	// live counts the clients in any encoding and the compressors held:
	// while it is 0, pack has nothing to do, and publish passes it by.
	live atomic.Int64
	of   [numEncodings]chain
}

// chain is a stream's chain in one encoding.
type chain struct {
	users   atomic.Int64 // the stream's clients in this encoding that may follow the chain
	lone    atomic.Int64 // those that never follow it (filtered: they skip frames), and need frames on their own
	waiting atomic.Int64 // frames sent on their own since the segment began

	// The upstream reader's, in pack.
	comp    chainCompressor // nil while no client uses the encoding
	segment uint64          // the current segment, from 1
	frames  int             // frames in the current segment
}

// pack compresses f into the chain of every encoding that the stream's
// clients use, beginning new segments as the rule above says, and releases
// the compressor of a chain that no client uses any more. Only publish
// calls it, before f is pushed: the chain's pieces are exactly the frames
// its clients are sent, in their order.
func (cs *chains) pack(f *frame) {
	restartAll := cs.restartAll.Swap(false)
	for i := range cs.of {
		ch := &cs.of[i]
		users := ch.users.Load()
		if users == 0 {
			if ch.comp != nil {
				ch.comp.release()
				ch.comp = nil
				cs.live.Add(-1)
			}
			if ch.lone.Load() > 0 && f.packs == nil {
				f.packs = new(framePacks) // for its piece on its own, made when first needed
			}
			continue
		}
		if f.packs == nil {
			f.packs = new(framePacks)
		}
		fp := &f.packs[i]
		waiting := ch.waiting.Load()
		switch {
		case ch.comp == nil:
			ch.comp = encodings[i].newChain()
			cs.live.Add(1)
			fp.first = true
		case restartAll, waiting > 0 && (waiting >= users || ch.frames >= maxSegmentWait):
			ch.comp.restart()
			fp.first = true
		}
		if fp.first { // f begins a new segment
			ch.segment++
			ch.frames = 0
			ch.waiting.Store(0)
		}
		fp.segment = ch.segment
		fp.chain = ch.comp.add(make([]byte, 0, pieceRoom(f)), f.bytes)
		f.grow(len(fp.chain))
		ch.frames++
	}
}

// pieceRoom is room enough for most pieces of f in one allocation: an
// event compresses to a third of its size or less, plus its block headers.
func pieceRoom(f *frame) int { return len(f.bytes)/2 + 64 }

// packer appends what one client is sent, as its encoding has it: a
// plain client's as it is (plainPacker, client.go), a compressed client's compressed
// (chainPacker), or, for a client whose every byte is its own, each piece
// compressed on its own (alonePacker). Like the rest of what a client was
// last sent, it is used by one writer at a time.
type packer interface {
	// frame appends f, a frame of the ring; the ring's read lock must be
	// held, with f in the ring.
	frame(out []byte, f *frame) []byte
	// own appends a piece of the client's own.
	own(out, plain []byte) []byte
	// loose appends f, a frame that is the client's own, not the ring's:
	// an event of its catch-up, its stale event.
	loose(out []byte, f *frame) []byte
	// id appends an id-only block that sets the client's lastEventId to
	// id: its cursor priming, a filtered client's settling block.
	id(out []byte, id string) []byte
	// keepalive appends a ": keepalive" comment.
	keepalive(out []byte) []byte
	// encoding is what the client is sent its stream in; nil: none.
	encoding() *encoding
	// release counts the client out of its stream's compression.
	release()
}

// chainPacker compresses what one client is sent, in its encoding: its
// frames as pieces of the stream's chain while it follows it, else on
// their own, and its own pieces on their own.
type chainPacker struct {
	enc   *encoding
	chain *chain        // the stream's chain in enc
	lone  bool          // it never follows the chain: a filtered client, which skips frames (filter.go)
	live  *atomic.Int64 // its stream's chains.live

	begun   bool   // the encoding's head (codec.ends) was sent
	segment uint64 // the chain segment the client follows; 0: none
	at      uint64 // seq of the last frame it was sent of that segment
}

// newPacker returns the packer of a client of the stream in enc, counted
// as a user of its chain until release, or, if lone, as one that needs
// frames on their own; the plain packer if enc is nil.
func (cs *chains) newPacker(enc *encoding, lone bool) packer {
	if enc == nil {
		return plainPacker{}
	}
	ch := &cs.of[enc.index]
	if lone {
		ch.lone.Add(1)
	} else {
		ch.users.Add(1)
	}
	cs.live.Add(1)
	return &chainPacker{enc: enc, chain: ch, lone: lone, live: &cs.live}
}

// encoding is what c's stream is compressed in; nil: none.
func (p *chainPacker) encoding() *encoding { return p.enc }

// release counts the client out of its chain's users.
func (p *chainPacker) release() {
	if p.lone {
		p.chain.lone.Add(-1)
	} else {
		p.chain.users.Add(-1)
	}
	p.live.Add(-1)
}

// frame appends f: as a piece of the chain when the client follows it (or
// can begin to, at a segment's first piece), else compressed on its own.
// The ring's read lock must be held, with f in the ring.
func (p *chainPacker) frame(out []byte, f *frame) []byte {
	out = p.begin(out)
	if f.packs == nil { // published while the stream had no compressed client
		return p.own(out, f.bytes)
	}
	fp := &f.packs[p.enc.index]
	if p.lone {
		// It skips frames, so it cannot follow the chain, and waits for
		// no segment: its frames' pieces on their own are shared.
		return append(out, fp.aloneOf(f, p.enc)...)
	}
	if fp.chain != nil && (fp.first || fp.segment == p.segment && f.seq == p.at+1) {
		if fp.first {
			out = p.leave(out)
		}
		p.segment, p.at = fp.segment, f.seq
		return append(out, fp.chain...)
	}
	out = p.leave(out)
	p.chain.waiting.Add(1)
	return append(out, fp.aloneOf(f, p.enc)...)
}

// own appends a piece of the client's own, compressed on its own.
func (p *chainPacker) own(out, plain []byte) []byte {
	out = p.leave(p.begin(out))
	return p.enc.alone(out, plain)
}

// loose appends f, a frame of the client's own, compressed on its own.
func (p *chainPacker) loose(out []byte, f *frame) []byte { return p.own(out, f.bytes) }

// id appends an id-only block, compressed on its own.
func (p *chainPacker) id(out []byte, id string) []byte {
	return p.own(out, appendIDOnly(nil, id))
}

// keepalive appends a ": keepalive" comment, compressed on its own.
func (p *chainPacker) keepalive(out []byte) []byte {
	out = p.leave(p.begin(out))
	return append(out, p.enc.keepalive()...)
}

// begin appends the encoding's head before the client's first piece.
func (p *chainPacker) begin(out []byte) []byte {
	if p.begun {
		return out
	}
	p.begun = true
	head, _ := p.enc.ends()
	return append(out, head...)
}

// leave appends what ends the segment the client follows, if it follows
// one: what comes next does not follow it.
func (p *chainPacker) leave(out []byte) []byte {
	if p.segment == 0 {
		return out
	}
	p.segment = 0
	_, tail := p.enc.ends()
	return append(out, tail...)
}

// alonePacker compresses, each piece on its own, what another packer
// appends as it is. It is the packer of a client whose every byte is its
// own: a multiplexed page's member (mux.go), whose frames are renamed for
// its page and carry the page's cursor, so that neither its stream's chain
// nor a frame's piece on its own (framePack) can serve it. It keeps no
// compressor: each piece is compressed by the encoding's pooled ones
// (codec.alone), and may follow any piece before it. The packers of one
// body (a page's members) share it, and its head.
type alonePacker struct {
	plain packer // appends the pieces as they are
	body  *aloneBody
}

// aloneBody is one response body of pieces compressed on their own.
type aloneBody struct {
	enc   *encoding
	begun bool // the encoding's head (codec.ends) was sent
}

// packer returns the packer that appends what p does to b: each piece
// compressed on its own in b's encoding; p itself when b has none.
func (b *aloneBody) packer(p packer) packer {
	if b.enc == nil {
		return p
	}
	return alonePacker{p, b}
}

func (p alonePacker) frame(out []byte, f *frame) []byte {
	start := len(out)
	return p.body.seal(p.plain.frame(out, f), start)
}

func (p alonePacker) own(out, plain []byte) []byte {
	start := len(out)
	return p.body.seal(p.plain.own(out, plain), start)
}

func (p alonePacker) loose(out []byte, f *frame) []byte {
	start := len(out)
	return p.body.seal(p.plain.loose(out, f), start)
}

func (p alonePacker) id(out []byte, id string) []byte {
	start := len(out)
	return p.body.seal(p.plain.id(out, id), start)
}

// keepalive appends the encoding's keepalive, made once for all.
func (p alonePacker) keepalive(out []byte) []byte {
	return append(p.body.begin(out), p.body.enc.keepalive()...)
}

func (p alonePacker) encoding() *encoding { return p.body.enc }
func (p alonePacker) release()            { p.plain.release() }

// begin appends the encoding's head before the body's first piece.
func (b *aloneBody) begin(out []byte) []byte {
	if b.begun {
		return out
	}
	b.begun = true
	head, _ := b.enc.ends()
	return append(out, head...)
}

// seal compresses what out holds from start on, as one piece on its own,
// in place: the piece is appended after it, then moved over it, so that a
// body needs no buffer of its own. Nothing is appended for nothing.
func (b *aloneBody) seal(out []byte, start int) []byte {
	end := len(out)
	if end == start {
		return out
	}
	// The codec appends after end, never over out[start:end], which it
	// reads: into out's spare room, or a new array.
	out = b.enc.alone(b.begin(out), out[start:end])
	return out[:start+copy(out[start:], out[end:])]
}
