package ssefanout

import (
	"io"
	"net/http"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"
	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
)

// This file is what compression a client gets: the encodings sse_fanout
// compresses event streams with, the one rule that picks a client's from
// its Accept-Encoding, and the codecs that compress a piece on its own.
// How each frame is compressed once per stream, and which form of it a
// client is sent, is compresschain.go.
//
// Both encodings let a stream be cut into pieces, each compressed on its
// own or after the pieces before it, and every piece written at once:
//
//   - gzip: a client's body is a gzip header, then raw deflate pieces, each
//     ended by a sync flush (an empty stored block), so byte-aligned and
//     never final: a deflate stream may hold any number of blocks, and a
//     decoder hands out what it decoded at each flush. The stream is never
//     finished (no final block, no CRC trailer): it ends when the
//     connection does, as an event stream always does.
//   - zstd: a client's body is a sequence of zstd frames (RFC 8878, 3.1: a
//     stream may hold several frames, and their content is concatenated).
//     A piece is a whole frame, or a block of a frame that the client
//     was sent from its start; such a frame is closed, when the client
//     leaves it, by a last block that holds an empty comment line (":\n"),
//     never by an empty one: see zstdClosingBlock.

// encoding is a content coding that event streams can be compressed with:
// its name and slot, and its codec.
type encoding struct {
	name  string // its token in Accept-Encoding and Content-Encoding
	index int    // its slot in a frame's and a stream's arrays
	codec

	keepalive func() []byte // ": keepalive" compressed on its own, made once
}

// codec is how an encoding compresses, in three methods, as an Encoding
// of Caddy's encode handler is: pieces on their own, a stream's chain, and
// the bytes that begin a body and close a chain segment.
type codec interface {
	// alone appends src compressed on its own: a piece that may follow
	// any piece of this encoding.
	alone(dst, src []byte) []byte
	// newChain returns a compressor for a stream's chain.
	newChain() chainCompressor
	// ends returns what begins every body in this encoding (gzip's
	// header) and what closes a chain segment that a client leaves
	// (zstd's zstdClosingBlock). Either may be empty.
	ends() (head, tail []byte)
}

// gzipCodec is raw deflate pieces after a gzip header.
type gzipCodec struct{}

// gzipHeader is RFC 1952's: the magic, deflate, no flags, no time, no
// extra flags, unknown OS.
var gzipHeader = []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}

func (gzipCodec) alone(dst, src []byte) []byte { return deflateAlone(dst, src) }
func (gzipCodec) newChain() chainCompressor    { return newDeflateChain() }
func (gzipCodec) ends() (head, tail []byte)    { return gzipHeader, nil }

// zstdCodec is zstd frames, a chain segment closed by zstdClosingBlock.
type zstdCodec struct{}

// zstdClosingBlock closes a frame that a client leaves: a last block
// (RFC 8878, 3.1.1.2: Last_Block set, Raw_Block, Block_Size 2) that holds
// ":\n", a comment line, which every event stream parser passes over; the
// pieces before it end at an event's end. An empty last block would be
// shorter, but a frame must never end with a block that decodes to
// nothing: Chromium's decoder asks libzstd for one call at a time, a call
// stops at a frame's end, and when a call decoded nothing Chromium takes
// all of its read as used and drops the rest (net/filter's
// FilterSourceStream): the page's EventSource then fails on what follows,
// whenever the frame's end and the next piece come in one read.
var zstdClosingBlock = []byte{1 | 2<<3, 0, 0, ':', '\n'}

func (zstdCodec) alone(dst, src []byte) []byte { return zstdAlone(dst, src) }
func (zstdCodec) newChain() chainCompressor    { return newZstdChain() }
func (zstdCodec) ends() (head, tail []byte)    { return nil, zstdClosingBlock }

// numEncodings is how many encodings there are: the length of a frame's
// and a stream's arrays of them.
const numEncodings = 2

var (
	encGzip = &encoding{name: "gzip", index: 0, codec: gzipCodec{}}
	encZstd = &encoding{name: "zstd", index: 1, codec: zstdCodec{}}
	// encodings are the encodings there are, by index.
	encodings = [numEncodings]*encoding{encGzip, encZstd}
)

func init() {
	for _, enc := range encodings {
		enc.keepalive = sync.OnceValue(func() []byte { return enc.alone(nil, []byte(sse.Keepalive)) })
	}
}

// encodingNamed returns the encoding with the given name, or nil.
func encodingNamed(name string) *encoding {
	for _, enc := range encodings {
		if enc.name == name {
			return enc
		}
	}
	return nil
}

// encodingFor returns the encoding r's response is compressed with, or nil
// for none: the one of the configured encodings that the client accepts
// with the highest weight, the configured order deciding between equal
// weights. None when compress is off, or when an encoder of Caddy's is in
// front (w's chain): it then compresses, and a response is never
// compressed twice.
func (h *Handler) encodingFor(w http.ResponseWriter, r *http.Request) *encoding {
	if len(h.cfg.compress) == 0 || encoderInFront(w) {
		return nil
	}
	return negotiate(r.Header.Values("Accept-Encoding"), h.cfg.compress)
}

// negotiate returns, of offered (in order of preference), the encoding that
// the Accept-Encoding values allow with the highest weight (RFC 9110,
// 12.5.3), or nil if they allow none. A coding is allowed when it is
// listed, or "*" is, with a weight above 0; "x-gzip" is gzip.
func negotiate(accept []string, offered []*encoding) *encoding {
	var best *encoding
	bestQ := 0.0
	for _, enc := range offered {
		q, star := -1.0, -1.0
		for _, value := range accept {
			for item := range strings.SplitSeq(value, ",") {
				token, params, _ := strings.Cut(item, ";")
				token = strings.ToLower(strings.TrimSpace(token))
				weight, ok := qValue(params)
				switch {
				case !ok:
				case token == enc.name || enc == encGzip && token == "x-gzip":
					q = max(q, weight)
				case token == "*":
					star = max(star, weight)
				}
			}
		}
		if q < 0 {
			q = star // not listed: "*" decides
		}
		if q > bestQ {
			best, bestQ = enc, q
		}
	}
	return best
}

// qValue reads the weight in the parameters of an Accept-Encoding item
// ("q=0.5"), 1 when there is none. It reports false for a weight that is
// not one.
func qValue(params string) (float64, bool) {
	for param := range strings.SplitSeq(params, ";") {
		name, value, _ := strings.Cut(param, "=")
		if !strings.EqualFold(strings.TrimSpace(name), "q") {
			continue
		}
		q, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil || !(q >= 0 && q <= 1) { // NaN too
			return 0, false
		}
		return q, true
	}
	return 1, true
}

// encodePackage is the package of Caddy's encode handler.
const encodePackage = "github.com/caddyserver/caddy/v2/modules/caddyhttp/encode"

// encoderInFront reports whether Caddy's encode handler wraps w. It wraps
// every response it handles, and compresses those its config and the
// client allow (an event stream, by its default match), so sse_fanout
// leaves the compression to it.
func encoderInFront(w http.ResponseWriter) bool {
	for {
		if t := reflect.TypeOf(w); t.Kind() == reflect.Pointer && t.Elem().PkgPath() == encodePackage {
			return true
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return false
		}
		w = u.Unwrap()
	}
}

// setEncodingHeaders sets the response headers that compression asks for:
// Content-Encoding when the client gets enc (nil: none), and, whenever
// compress is configured, Vary: Accept-Encoding, since then the response
// depends on it.
func (h *Handler) setEncodingHeaders(header http.Header, enc *encoding) {
	if len(h.cfg.compress) == 0 {
		return
	}
	if !strings.Contains(strings.ToLower(strings.Join(header.Values("Vary"), ",")), "accept-encoding") {
		header.Add("Vary", "Accept-Encoding")
	}
	if enc != nil {
		header.Set("Content-Encoding", enc.name)
	}
}

// Compression levels: compressing once per stream affords a level above
// the per-client default of Caddy's encode (5 for gzip).
const (
	deflateLevel = 6 // flate.DefaultCompression
	zstdLevel    = zstd.SpeedDefault
	// zstdWindow is the window of a chain's zstd frames, as Caddy's encode
	// zstd uses: a decoder holds that much of each stream.
	zstdWindow = 128 << 10
)

// appender is an io.Writer that appends to b.
type appender struct{ b []byte }

func (a *appender) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

// deflateWriters are deflate compressors for pieces compressed on their
// own, and for chains that ended; each holds about 1 MiB.
var deflateWriters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, deflateLevel)
	return w
}}

// deflateAlone appends src as one deflate piece on its own: compressed
// with no history, sync-flushed.
func deflateAlone(dst, src []byte) []byte {
	w := deflateWriters.Get().(*flate.Writer)
	out := appender{dst}
	w.Reset(&out)
	w.Write(src) // an appender never fails
	w.Flush()
	w.Reset(nil)
	deflateWriters.Put(w)
	return out.b
}

// zstdAllEncoder compresses zstd pieces on their own, each a whole frame,
// from any goroutine.
var zstdAllEncoder = sync.OnceValue(func() *zstd.Encoder {
	enc, _ := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstdLevel),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithEncoderCRC(false),
		zstd.WithLowerEncoderMem(true))
	return enc
})

// zstdAlone appends src as one whole zstd frame.
func zstdAlone(dst, src []byte) []byte {
	return zstdAllEncoder().EncodeAll(src, dst)
}

// chainCompressor compresses a stream's frames one after the other, each
// piece referring to the ones before it in its segment.
type chainCompressor interface {
	// restart begins a segment: what follows refers to nothing before.
	restart()
	// add appends src, compressed after the segment so far and flushed.
	add(dst, src []byte) []byte
	// release gives the compressor back for another chain.
	release()
}

// flushingWriter is a streaming compressor that can flush what it was
// written so far as a piece of its own: flate's sync flush, zstd's block
// flush.
type flushingWriter interface {
	Reset(w io.Writer)
	Write(p []byte) (int, error)
	Flush() error
}

// pieceChain is a chain of pieces from one streaming compressor, flushed
// after each frame, taken from pool and given back to it.
type pieceChain struct {
	w    flushingWriter
	pool *sync.Pool
	out  appender
}

func newPieceChain(pool *sync.Pool) *pieceChain {
	c := &pieceChain{w: pool.Get().(flushingWriter), pool: pool}
	c.w.Reset(&c.out)
	return c
}

func (c *pieceChain) restart() { c.w.Reset(&c.out) }

func (c *pieceChain) add(dst, src []byte) []byte {
	c.out.b = dst
	c.w.Write(src) // an appender never fails
	c.w.Flush()
	dst, c.out.b = c.out.b, nil
	return dst
}

func (c *pieceChain) release() {
	c.w.Reset(io.Discard)
	c.pool.Put(c.w)
}

// newDeflateChain returns a chain of deflate pieces: one compressor,
// sync-flushed after each frame.
func newDeflateChain() chainCompressor { return newPieceChain(&deflateWriters) }

// zstdChainEncoders are streaming zstd encoders of chains that ended.
var zstdChainEncoders = sync.Pool{New: func() any {
	enc, _ := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstdLevel),
		zstd.WithEncoderConcurrency(1), // encodes in the caller's goroutine
		zstd.WithWindowSize(zstdWindow),
		zstd.WithEncoderCRC(false),
		zstd.WithLowerEncoderMem(true))
	return enc
}}

// newZstdChain returns a chain of zstd blocks: a segment is one frame,
// begun by its first piece (with the frame header) and never ended by the
// chain; each client closes it as it leaves (codec.ends).
func newZstdChain() chainCompressor { return newPieceChain(&zstdChainEncoders) }
