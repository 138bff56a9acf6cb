package main

// This file is where the clients connect to and from: the -url targets,
// which the clients are spread over in turn (the edges of a fleet), and
// the -source-addrs their connections are bound to, so that a run of more
// than about 28,000 connections to one address does not run out of
// ephemeral ports.

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxSourceAddrs bounds the addresses of -source-addrs.
const maxSourceAddrs = 256

// target is one URL the clients connect to.
type target struct {
	url     *url.URL // Host always has its port
	raw     string   // the URL as given
	request string   // the raw HTTP/1.1 GET for h1 and h1tls, without its final blank line
}

// parseTargets reads -url's URLs (pageURLs), all of the given scheme.
func parseTargets(raws []string, scheme string) ([]*url.URL, error) {
	var out []*url.URL
	for _, part := range raws {
		u, err := url.Parse(part)
		if err != nil || u.Scheme != scheme || u.Host == "" {
			return nil, fmt.Errorf("needs %s:// URLs, got %q", scheme, part)
		}
		out = append(out, u)
	}
	return out, nil
}

// newTarget prepares u for connecting: its Host gets its port, and the
// raw request is written once.
func newTarget(u *url.URL, acceptEncoding string) *target {
	host := u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		host = net.JoinHostPort(u.Hostname(), port)
	}
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\n" +
		"Host: " + u.Host + "\r\n" +
		"User-Agent: sseload\r\n" +
		"Accept: text/event-stream\r\n" +
		"Cache-Control: no-cache\r\n"
	if acceptEncoding != "" {
		req += "Accept-Encoding: " + acceptEncoding + "\r\n"
	}
	raw := u.String()
	u2 := *u
	u2.Host = host
	return &target{url: &u2, raw: raw, request: req}
}

// requestBytes is t's raw request, resuming after cursor if it is not 0.
func (t *target) requestBytes(cursor uint64) []byte {
	b := make([]byte, 0, len(t.request)+40)
	b = append(b, t.request...)
	if cursor > 0 {
		b = fmt.Appendf(b, "Last-Event-ID: %d\r\n", cursor)
	}
	return append(b, "\r\n"...)
}

// parseSourceAddrs reads -source-addrs: addresses and ranges separated by
// commas, such as "127.0.0.1-127.0.0.8" or "127.0.0.1,127.0.0.5". A range
// counts up its last bytes. Empty gives none: the system picks.
func parseSourceAddrs(s string) ([]netip.Addr, error) {
	if s == "" {
		return nil, nil
	}
	var out []netip.Addr
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		first, err := netip.ParseAddr(lo)
		if err != nil {
			return nil, fmt.Errorf("-source-addrs: %v", err)
		}
		last := first
		if isRange {
			if last, err = netip.ParseAddr(hi); err != nil {
				return nil, fmt.Errorf("-source-addrs: %v", err)
			}
			if last.BitLen() != first.BitLen() || last.Less(first) {
				return nil, fmt.Errorf("-source-addrs: range %q does not count up", part)
			}
		}
		for a := first; ; a = a.Next() {
			if len(out) == maxSourceAddrs {
				return nil, fmt.Errorf("-source-addrs: more than %d addresses", maxSourceAddrs)
			}
			out = append(out, a)
			if a == last {
				break
			}
		}
	}
	return out, nil
}

// dialers makes one dialer per source address (one with none if there
// are none). Each binds its address with IP_BIND_ADDRESS_NO_PORT, so the
// port is picked at connect time for the whole four-tuple, as for an
// unbound socket: an address then gives about 28,000 ports to each
// destination, rather than 28,000 in all.
func dialers(sources []netip.Addr) []*net.Dialer {
	if len(sources) == 0 {
		return []*net.Dialer{{Timeout: 10 * time.Second}}
	}
	out := make([]*net.Dialer, len(sources))
	for i, a := range sources {
		out[i] = &net.Dialer{
			Timeout:   10 * time.Second,
			LocalAddr: &net.TCPAddr{IP: a.AsSlice()},
			Control:   bindNoPort,
		}
	}
	return out
}

// bindNoPort sets IP_BIND_ADDRESS_NO_PORT on a socket about to be bound.
func bindNoPort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// sourceCounter hands out the dialers in turn.
type sourceCounter struct {
	dialers []*net.Dialer
	next    atomic.Uint64
}

// dial connects to addr from the next source address.
func (s *sourceCounter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d := s.dialers[(s.next.Add(1)-1)%uint64(len(s.dialers))]
	return d.DialContext(ctx, network, addr)
}

// udpSource is the next source address for a QUIC socket, or the zero
// Addr if there are none.
func (s *sourceCounter) udpSource() net.IP {
	d := s.dialers[(s.next.Add(1)-1)%uint64(len(s.dialers))]
	if a, ok := d.LocalAddr.(*net.TCPAddr); ok {
		return a.IP
	}
	return nil
}
