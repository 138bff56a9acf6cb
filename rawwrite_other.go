//go:build !unix

package ssefanout

import (
	"errors"
	"net"
	"syscall"
)

// This file is the write that never waits, where there is none: a
// detached client's writes all go to its drain.

// rawConnOf returns nil: writes that never wait are implemented on Unix
// only, so elsewhere every batch for a detached client goes to a drain.
func rawConnOf(net.Conn) syscall.RawConn { return nil }

// nonblockingWriter is unused where rawConnOf returns nil.
type nonblockingWriter struct{}

func (w *nonblockingWriter) init() {}

func (w *nonblockingWriter) write(syscall.RawConn, []byte) (int, error) {
	return 0, errors.ErrUnsupported
}
