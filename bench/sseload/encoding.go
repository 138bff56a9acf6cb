package main

import (
	"fmt"
	"io"
	"net/http"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// This file is the clients' side of compression (-accept-encoding): the
// body a client reads is counted as it comes over the wire, then decoded
// by its Content-Encoding, so that the report gives the bytes on the wire
// per event of each system.

// bodyOf returns what c parses of resp: its body, counted, then decoded
// by its Content-Encoding, gzip or zstd. Closing c's closer ends it.
func (l *load) bodyOf(resp *http.Response, c *client) (io.Reader, error) {
	enc := resp.Header.Get("Content-Encoding")
	l.noteEncoding(enc)
	body := io.Reader(&wireCounter{r: resp.Body, c: c, l: l})
	switch enc {
	case "":
		return body, nil
	case "gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			return nil, fmt.Errorf("reading the gzip header: %w", err)
		}
		return zr, nil
	case "zstd":
		zr, err := zstd.NewReader(body,
			zstd.WithDecoderConcurrency(1), // decodes in the reader's goroutine
			zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, err
		}
		c.release = zr.Close
		return zr, nil
	}
	return nil, fmt.Errorf("Content-Encoding %q, which sseload cannot decode", enc)
}

// wireCounter counts, in the measurement window, the bytes of a body as
// they come over the wire: after TLS and HTTP/1.1 de-chunking, before
// decompression.
type wireCounter struct {
	r io.Reader
	c *client
	l *load
}

func (w *wireCounter) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if n > 0 && w.l.measuring.Load() {
		w.c.wire.Add(uint64(n))
	}
	return n, err
}

// noteEncoding counts the responses by Content-Encoding ("identity" for
// none).
func (l *load) noteEncoding(enc string) {
	if enc == "" {
		enc = "identity"
	}
	l.errMu.Lock()
	defer l.errMu.Unlock()
	l.encodings[enc]++
}
