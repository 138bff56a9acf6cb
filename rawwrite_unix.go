//go:build unix

package ssefanout

import (
	"net"
	"syscall"
)

// This file is the write that never waits, on Unix: one write(2) of what
// the socket's send buffer takes now.

// rawConnOf returns conn's raw connection, for writes that never wait, or
// nil if it has none (a connection wrapped by a listener wrapper).
func rawConnOf(conn net.Conn) syscall.RawConn {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// nonblockingWriter writes to a socket as much as its send buffer takes
// now. Its callback is bound once, so a write allocates nothing.
type nonblockingWriter struct {
	buf      []byte
	n        int
	err      error
	callback func(fd uintptr) bool
}

func (w *nonblockingWriter) init() { w.callback = w.writeFD }

// write writes what of b the socket takes now and returns how much.
func (w *nonblockingWriter) write(raw syscall.RawConn, b []byte) (int, error) {
	w.buf = b
	err := raw.Write(w.callback)
	n, werr := w.n, w.err
	w.buf, w.n, w.err = nil, 0, nil
	if err != nil {
		return 0, err
	}
	return n, werr
}

// writeFD is the callback: one write(2), never a wait (it reports done
// whatever happened), retried only when a signal interrupted it.
func (w *nonblockingWriter) writeFD(fd uintptr) bool {
	for {
		n, err := syscall.Write(int(fd), w.buf)
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			n, err = 0, nil // full: the rest goes to a drain
		}
		w.n, w.err = max(n, 0), err
		return true
	}
}
