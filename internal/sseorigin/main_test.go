package sseorigin

import (
	"testing"

	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// TestMain checks, after the tests, that they left no goroutine of this
// module running.
func TestMain(m *testing.M) { testkit.Main(m) }
