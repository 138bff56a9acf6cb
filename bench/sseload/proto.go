package main

// This file is the protocols sseload speaks (-proto): how a connection is
// opened and checked for each, and how the streams of -streams-per-conn
// share one over HTTP/2 and HTTP/3.
//
// h1 and h1tls write a raw HTTP/1.1 request on a connection of their own
// (connect, in main.go), wrapped in TLS for h1tls, which offers only
// http/1.1 in ALPN. h2 and h3 open one connection per group of
// -streams-per-conn streams (a connGroup): the group's first stream dials
// it, and every stream of the group is a request on it. Each connection is
// checked: one that did not negotiate the protocol asked for is counted as
// such (connCounts.WrongProto) and closed, and its streams fail, so a run
// never measures a protocol other than the one it names.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// The values of -proto.
const (
	protoH1    = "h1"    // HTTP/1.1 over TCP
	protoH1TLS = "h1tls" // HTTP/1.1 over TLS, ALPN http/1.1 only
	protoH2    = "h2"    // HTTP/2 over TLS
	protoH3    = "h3"    // HTTP/3 over QUIC
)

// maxStreamsPerConn bounds -streams-per-conn. Servers limit the streams
// open on one connection (Go's HTTP/2 server to 250, nginx to 128, quic-go
// to 100 by default); a stream beyond the limit waits for a free one, so
// it never connects.
const maxStreamsPerConn = 1000

// dialTimeout bounds opening one connection: TCP or QUIC, and TLS.
const dialTimeout = 30 * time.Second

// wantALPN is the protocol a connection of proto must negotiate in ALPN.
// For h1tls a server that negotiates none is also taken, as HTTP/1.1.
func wantALPN(proto string) string {
	switch proto {
	case protoH1TLS:
		return "http/1.1"
	case protoH2:
		return "h2"
	case protoH3:
		return http3.NextProtoH3
	}
	return ""
}

// wantProtoMajor is the HTTP major version every response of proto must
// come in.
func wantProtoMajor(proto string) int {
	switch proto {
	case protoH2:
		return 2
	case protoH3:
		return 3
	}
	return 1
}

// multiplexed reports whether proto carries several streams on one
// connection.
func multiplexed(proto string) bool { return proto == protoH2 || proto == protoH3 }

// tlsConfig is the client TLS configuration of -cacert and -insecure. It
// keeps no session cache: every connection makes a full handshake, as a
// new visitor's browser does.
func tlsConfig(cacert string, insecure bool) (*tls.Config, error) {
	cfg := &tls.Config{InsecureSkipVerify: insecure} //nolint:gosec // -insecure asks for it
	if cacert != "" {
		pem, err := os.ReadFile(cacert)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-cacert %s: no PEM certificate in it", cacert)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// alpnName is how a negotiated protocol is shown: "none" for no ALPN.
func alpnName(p string) string {
	if p == "" {
		return "none"
	}
	return p
}

// tlsName is a TLS connection's version, cipher suite and key exchange,
// such as "TLS 1.3 TLS_AES_128_GCM_SHA256 X25519MLKEM768".
func tlsName(cs *tls.ConnectionState) string {
	s := tls.VersionName(cs.Version) + " " + tls.CipherSuiteName(cs.CipherSuite)
	if cs.CurveID != 0 {
		s += " " + cs.CurveID.String()
	}
	return s
}

// noteConn counts a connection opened, over TLS with cs unless it is nil,
// and reports whether it negotiated the protocol the run asked for.
func (l *load) noteConn(cs *tls.ConnectionState) bool {
	l.connsOpened.Add(1)
	var alpn string
	if cs != nil {
		alpn = cs.NegotiatedProtocol
		l.errMu.Lock()
		l.alpn[alpnName(alpn)]++
		l.tlsKinds[tlsName(cs)]++
		l.errMu.Unlock()
	}
	want := wantALPN(l.cfg.proto)
	if alpn == want || (l.cfg.proto == protoH1TLS && alpn == "") {
		return true
	}
	l.connsWrong.Add(1)
	return false
}

// muxConn is an open HTTP/2 or HTTP/3 connection that requests are sent on.
type muxConn interface {
	RoundTrip(*http.Request) (*http.Response, error)
	Close() error
}

// connGroup is one HTTP/2 or HTTP/3 connection and the streams that share
// it. Its first stream opens the connection and closes ready; the others
// wait for ready and send their request on it.
type connGroup struct {
	ready  chan struct{} // closed once conn or err is set
	conn   muxConn       // nil if opening it failed
	err    error
	target int // the index of the -url it connects to

	mu     sync.Mutex
	closed bool // closeAll has run: a connection opened late is closed at once
}

// openGroup opens the group's connection, sets conn or err, and closes ready.
func (l *load) openGroup(ctx context.Context, g *connGroup) {
	defer close(g.ready)
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	var (
		conn muxConn
		cs   tls.ConnectionState
		err  error
	)
	if l.cfg.proto == protoH3 {
		conn, cs, err = l.dialH3(ctx, l.targets[g.target].url.Host)
	} else {
		conn, cs, err = l.dialH2(ctx, l.targets[g.target].url.Host)
	}
	if err != nil {
		l.connsFailed.Add(1)
		g.err = err
		return
	}
	if !l.noteConn(&cs) {
		conn.Close()
		g.err = fmt.Errorf("connection negotiated %s, not %s", alpnName(cs.NegotiatedProtocol), wantALPN(l.cfg.proto))
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		conn.Close()
		g.err = context.Canceled
		return
	}
	g.conn = conn
}

// close closes the group's connection, which ends its streams.
func (g *connGroup) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	if g.conn != nil {
		g.conn.Close()
	}
}

// tlsNote carries the state of the TLS connection that the transport's
// DialTLSContext made back to dialH2, through the context of
// Transport.NewClientConn.
type tlsNote struct{ state tls.ConnectionState }

type tlsNoteKey struct{}

// newH2Transport is the transport that HTTP/2 connections are made from,
// each by NewClientConn, so each is a TCP+TLS connection of its own that
// no other group shares. It offers h2 and http/1.1, as a browser does, so
// that a server that does not do HTTP/2 shows up as such.
func (l *load) newH2Transport() *http.Transport {
	tr := &http.Transport{
		DisableCompression: true,
		Protocols:          new(http.Protocols),
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			raw, err := l.dialer.dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			cfg := l.cfg.tls.Clone()
			cfg.NextProtos = []string{"h2", "http/1.1"}
			if cfg.ServerName == "" {
				cfg.ServerName = l.cfg.target.Hostname()
			}
			tc := tls.Client(raw, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, err
			}
			if n, ok := ctx.Value(tlsNoteKey{}).(*tlsNote); ok {
				n.state = tc.ConnectionState()
			}
			return tc, nil
		},
	}
	tr.Protocols.SetHTTP1(true)
	tr.Protocols.SetHTTP2(true)
	return tr
}

// dialH2 opens one TCP+TLS connection, and returns it with its TLS state.
func (l *load) dialH2(ctx context.Context, host string) (muxConn, tls.ConnectionState, error) {
	note := new(tlsNote)
	cc, err := l.h2.NewClientConn(context.WithValue(ctx, tlsNoteKey{}, note), "https", host)
	if err != nil {
		return nil, tls.ConnectionState{}, err
	}
	return cc, note.state, nil
}

// h3Conn is an HTTP/3 connection on a UDP socket of its own.
type h3Conn struct {
	*http3.ClientConn
	quic *quic.Conn
	tr   *quic.Transport
	udp  *net.UDPConn
}

func (c *h3Conn) Close() error {
	err := c.quic.CloseWithError(0, "")
	c.tr.Close()
	c.udp.Close()
	return err
}

// dialH3 opens one QUIC connection, from a UDP socket of its own as a
// browser's would be, and returns it with its TLS state.
func (l *load) dialH3(ctx context.Context, host string) (muxConn, tls.ConnectionState, error) {
	var none tls.ConnectionState
	raddr, err := net.ResolveUDPAddr("udp", host)
	if err != nil {
		return nil, none, err
	}
	laddr := &net.UDPAddr{IP: l.dialer.udpSource()}
	if laddr.IP == nil && raddr.IP.IsLoopback() {
		laddr.IP = raddr.IP // stay on the loopback address
	}
	udp, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, none, err
	}
	tr := &quic.Transport{Conn: udp}
	cfg := l.cfg.tls.Clone()
	cfg.NextProtos = []string{http3.NextProtoH3}
	if cfg.ServerName == "" {
		cfg.ServerName = l.cfg.target.Hostname()
	}
	qc, err := tr.Dial(ctx, raddr, cfg, &quic.Config{
		MaxIncomingStreams: -1,               // the server opens no request streams
		KeepAlivePeriod:    10 * time.Second, // an idle stream (W4) outlives the idle timeout
	})
	if err != nil {
		tr.Close()
		udp.Close()
		return nil, none, err
	}
	c := &h3Conn{ClientConn: l.h3.NewClientConn(qc), quic: qc, tr: tr, udp: udp}
	return c, qc.ConnectionState().TLS, nil
}

// openStream opens c's stream on its group's connection, opening that
// first if c is the group's first stream. It returns the response body.
func (l *load) openStream(ctx context.Context, c *client) (io.Reader, error) {
	if c.first {
		if err := l.takeDialSlot(ctx); err != nil {
			c.group.err = err
			close(c.group.ready)
			return nil, err
		}
		l.openGroup(ctx, c.group)
	} else {
		select {
		case <-c.group.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if err := l.takeDialSlot(ctx); err != nil {
			return nil, err
		}
	}
	defer func() { <-l.dialSlots }()
	g := c.group
	if g.err != nil {
		return nil, g.err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.targets[c.target].raw, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "sseload")
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if l.cfg.acceptEncoding != "" {
		req.Header.Set("Accept-Encoding", l.cfg.acceptEncoding)
	}
	resp, err := g.conn.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if !c.setCloser(ctx, resp.Body) {
		return nil, ctx.Err()
	}
	switch {
	case resp.StatusCode != http.StatusOK:
		resp.Body.Close()
		return nil, fmt.Errorf("status %s", resp.Status)
	case resp.ProtoMajor != wantProtoMajor(l.cfg.proto):
		resp.Body.Close()
		l.streamsWrong.Add(1)
		return nil, fmt.Errorf("response came over %s", resp.Proto)
	}
	return l.bodyOf(resp, c)
}

// takeDialSlot waits for one of the slots that bound the connects in
// flight; the caller gives it back with <-l.dialSlots.
func (l *load) takeDialSlot(ctx context.Context) error {
	select {
	case l.dialSlots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
