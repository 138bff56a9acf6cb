//go:build linux

package ssefanout

import (
	"net"
	"syscall"
	"time"
	"unsafe"
)

// This file is the write of a TLS record that never waits, on Linux: a
// shared writer writes to a detached TLS client only what its socket has
// room for now, as the kernel counts it.

// tlsRoom tells how much a detached TLS connection's socket takes now. A
// write of crypto/tls cannot be made not to wait, and one that times out
// leaves the connection broken, so a shared writer writes a batch to it
// only when the socket has room for all of its records; otherwise the
// batch goes to a drain (sharedwriter.go).
type tlsRoom struct {
	raw      syscall.RawConn // the TCP connection's
	credit   int             // bytes the socket takes now: as last measured, less what was written since
	deadline time.Time       // the write deadline last armed on the TCP connection
	measure  func(fd uintptr)
}

func newTLSRoom(raw syscall.RawConn) *tlsRoom {
	t := &tlsRoom{raw: raw}
	t.measure = t.measureFD // bound once, so that measuring allocates nothing
	return t
}

// measureFD measures the room in the socket's send buffer: half of it, for
// the kernel counts each buffer's overhead too, less what is queued.
func (t *tlsRoom) measureFD(fd uintptr) {
	t.credit = 0
	sndbuf, err := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
	if err != nil {
		return
	}
	var queued int32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&queued))); errno != 0 {
		return
	}
	t.credit = max(sndbuf/2-int(queued), 0)
}

// tlsWriteGuard is how long a write that was measured not to wait may
// wait all the same before it fails, and its client with it: a safety
// net, so that a shared writer's pass cannot hang on one client. It is
// renewed when less than half of it is left, not at every write.
const tlsWriteGuard = 5 * time.Second

// write writes all of b to conn, a TLS connection over tcp, if tcp's
// socket has room for its records now, and returns len(b); otherwise it
// writes nothing.
func (t *tlsRoom) write(conn, tcp net.Conn, b []byte) (int, error) {
	need := tlsWireSize(len(b))
	if t.credit < need {
		if err := t.raw.Control(t.measure); err != nil {
			return 0, err
		}
		if t.credit < need {
			return 0, nil
		}
	}
	t.credit -= need
	if now := time.Now(); t.deadline.Sub(now) < tlsWriteGuard/2 {
		t.deadline = now.Add(tlsWriteGuard)
		if err := tcp.SetWriteDeadline(t.deadline); err != nil {
			return 0, err
		}
	}
	return conn.Write(b)
}

// forget drops the room last measured: a drain wrote to the connection.
func (t *tlsRoom) forget() {
	t.credit = 0
	t.deadline = time.Time{}
}

// tlsWireSize bounds what n bytes take on the wire as TLS records: crypto/tls
// writes records of at least about 1 KiB, with at most 32 bytes of header
// and tag each.
func tlsWireSize(n int) int { return n + 32*(n/1024+2) }
