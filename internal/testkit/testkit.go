// Package testkit holds what the tests of the sse_fanout plugin and of its
// e2e module share: a scriptable SSE origin, Caddy run in the test
// process, and an SSE client that reads a stream with the plugin's own
// parser. Everything listens on 127.0.0.1, every wait is bounded by
// WaitTimeout, and everything a test starts, its cleanup stops.
package testkit

import (
	"bytes"
	"cmp"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// WaitTimeout bounds every wait in the tests; nothing waits forever.
const WaitTimeout = 10 * time.Second

// LogLevel is the tests' Caddy log level; SSEFANOUT_TEST_LOG=DEBUG shows more.
var LogLevel = cmp.Or(os.Getenv("SSEFANOUT_TEST_LOG"), "ERROR")

// logFile is where the tests' in-process Caddy logs, so that a passing run
// prints nothing and a failing one prints its failures first: Main shows
// the end of this file after them. With SSEFANOUT_TEST_LOG set, Caddy logs
// to stderr as it goes instead.
func logFile() string { return filepath.Join(storage, "caddy.log") }

// LogOptions is the global log block of the tests' Caddy: LogLevel, to
// logFile unless SSEFANOUT_TEST_LOG asks for stderr.
func LogOptions() string {
	output := "output file " + logFile()
	if os.Getenv("SSEFANOUT_TEST_LOG") != "" {
		output = "output stderr"
	}
	return fmt.Sprintf("log {\n\t\t%s\n\t\tlevel %s\n\t}", output, LogLevel)
}

// quietCaddysFirstLogger has Caddy's default logger, which writes to
// stderr at INFO until a config says otherwise, log errors only. The first
// config that sends the log elsewhere says so on the logger it replaces,
// at INFO: a line on stderr that a failing run would show before its
// failures.
func quietCaddysFirstLogger() {
	if os.Getenv("SSEFANOUT_TEST_LOG") != "" {
		return
	}
	quiet := `{"admin": {"disabled": true}, "logging": {"logs": {"default": {"writer": {"output": "stderr"}, "level": "ERROR"}}}}`
	if err := LoadJSON([]byte(quiet)); err != nil {
		panic(err)
	}
}

// ExpectQuietRun runs this test binary again on the tests that the
// -test.run pattern run matches, and fails t unless that run prints
// exactly PASS: so that a failing run's first line is its first failure.
func ExpectQuietRun(t *testing.T, run string) {
	t.Helper()
	if os.Getenv("SSEFANOUT_TEST_LOG") != "" {
		t.Skip("SSEFANOUT_TEST_LOG has Caddy log to stderr")
	}
	out, err := exec.Command(os.Args[0], "-test.run="+run, "-test.count=1").CombinedOutput()
	if err != nil || string(out) != "PASS\n" {
		t.Fatalf("a passing run printed %q (%v), want only PASS", out, err)
	}
}

// logTailLines is how much of Caddy's log a failing run shows.
const logTailLines = 40

// storage is where the tests' Caddy keeps its state, instead of the user's
// data directory; Main makes it.
var storage string

// Storage returns the directory where the tests' Caddy keeps its state.
func Storage() string { return storage }

// Main runs a package's tests, as TestMain: with a storage directory of
// their own for Caddy, removed at the end, and a check that the tests left
// no goroutine of this module's code or of Caddy's running.
func Main(m *testing.M) {
	dir, err := os.MkdirTemp("", "ssefanout-caddy-")
	if err != nil {
		panic(err)
	}
	storage = dir
	if err := writeTestCert(); err != nil {
		panic(err)
	}
	quietCaddysFirstLogger()
	code := m.Run()
	if code != 0 {
		printLogTail()
	}
	if code == 0 {
		if leaked := leakedGoroutines(); leaked != "" {
			fmt.Fprintf(os.Stderr, "the tests left goroutines running:\n%s\n", leaked)
			code = 1
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// printLogTail writes the last lines of Caddy's log to stderr, after the
// failures, for a run that failed.
func printLogTail() {
	data, err := os.ReadFile(logFile())
	if err != nil || len(data) == 0 {
		return
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	from := max(0, len(lines)-logTailLines)
	fmt.Fprintf(os.Stderr, "--- the last %d of %d lines of Caddy's log (SSEFANOUT_TEST_LOG=DEBUG logs all to stderr):\n%s\n",
		len(lines)-from, len(lines), strings.Join(lines[from:], "\n"))
}

// leakIgnored are goroutines that end on their own after the tests: the
// HTTP client's keep-alive loops, and Caddy's storage lock keeper, which
// holds a lock file for a moment after a config starts.
var leakIgnored = []string{
	"net/http.(*persistConn).readLoop",
	"net/http.(*persistConn).writeLoop",
	"certmagic.keepLockfileFresh",
}

// leakedGoroutines waits, for a bounded time, until no goroutine but the
// caller's runs code of this module or of Caddy, and returns the stacks of
// those that still do.
func leakedGoroutines() string {
	deadline := time.Now().Add(5 * time.Second)
	buf := make([]byte, 4<<20)
	for {
		n := runtime.Stack(buf, true)
		var leaked []string
		for i, g := range bytes.Split(buf[:n], []byte("\n\n")) {
			stack := string(g)
			if i == 0 || !strings.Contains(stack, "sse-fanout/caddy-sse-fanout") && !strings.Contains(stack, "caddyserver/caddy/v2") {
				continue // the caller's, or none of ours
			}
			ignored := false
			for _, pattern := range leakIgnored {
				ignored = ignored || strings.Contains(stack, pattern)
			}
			if !ignored {
				leaked = append(leaked, stack)
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Eventually polls cond until it holds or WaitTimeout passes.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(WaitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago,
// and that no earlier FreePort or origin of this process was given.
func FreePort(t testing.TB) int {
	t.Helper()
	ln := listenFresh(t)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// givenPorts holds every port listenFresh has given in this process.
var givenPorts struct {
	sync.Mutex
	ports map[int]bool
}

// listenFresh listens on a port of 127.0.0.1 that it has never given
// before in this process. The kernel soon hands a closed port out again,
// and the proxy's metrics are the process's, labelled by upstream URL: an
// origin at an earlier origin's address would inherit its counts.
func listenFresh(t testing.TB) net.Listener {
	t.Helper()
	givenPorts.Lock()
	defer givenPorts.Unlock()
	if givenPorts.ports == nil {
		givenPorts.ports = make(map[int]bool)
	}
	var taken []net.Listener // held while looking, so the kernel skips them
	defer func() {
		for _, ln := range taken {
			ln.Close()
		}
	}()
	for range 1000 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		if !givenPorts.ports[port] {
			givenPorts.ports[port] = true
			return ln
		}
		taken = append(taken, ln)
	}
	t.Fatal("1,000 listeners in a row got ports given before")
	return nil
}
