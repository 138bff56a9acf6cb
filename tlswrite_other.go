//go:build !linux

package ssefanout

import (
	"net"
	"syscall"
)

// This file is the write of a TLS record that never waits, where there is
// none: a detached TLS client's batches all go to its drain.

// tlsRoom is unused where the room in a socket cannot be measured.
type tlsRoom struct{}

func newTLSRoom(syscall.RawConn) *tlsRoom { return &tlsRoom{} }

func (t *tlsRoom) write(net.Conn, net.Conn, []byte) (int, error) { return 0, nil }

func (t *tlsRoom) forget() {}
