package testkit

import (
	"testing"

	_ "github.com/caddyserver/caddy/v2/modules/standard" // the Caddyfile and respond
)

func TestMain(m *testing.M) { Main(m) }

// TestPassingRunPrintsNothing runs this test binary again on a test that
// starts Caddy, and checks that it prints nothing but its PASS: so a
// failing run's first line is its first failure. Caddy's first logger
// wrote a line to stderr when the first config moved the log to a file.
func TestPassingRunPrintsNothing(t *testing.T) {
	ExpectQuietRun(t, "^TestCaddyStartsAndStops$")
}

// TestCaddyStartsAndStops starts Caddy with a site under the tests'
// global options, and stops it.
func TestCaddyStartsAndStops(t *testing.T) {
	StartCaddy(t, "respond ok")
}
