package ssefanout

// A fleet of separate Caddy processes: origin → shield → two edges, with
// nodes killed and restarted. The test binary doubles as the caddy
// command, built as cmd/caddy is (Caddy's standard modules and this one).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// runCaddyEnv, set to 1, makes the test binary the caddy command, with
// the arguments after "--".
const runCaddyEnv = "SSEFANOUT_RUN_CADDY"

// runCaddyIfAsked runs caddy instead of the tests when runCaddyEnv asks
// for it; TestMain calls it first.
func runCaddyIfAsked() {
	if os.Getenv(runCaddyEnv) != "1" {
		return
	}
	for i, arg := range os.Args {
		if arg == "--" {
			os.Args = append([]string{"caddy"}, os.Args[i+1:]...)
			break
		}
	}
	caddycmd.Main()
	os.Exit(0)
}

// fleetNode is one Caddy process of a fleet, on 127.0.0.1.
type fleetNode struct {
	name      string
	base      string // its site's base URL
	adminPort int
	cmd       *exec.Cmd
	out       *lockedBuffer // its stdout and stderr
	exited    chan struct{} // closed once the process is reaped
}

// lockedBuffer is a bytes.Buffer that a process writes while a test reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startNode runs a Caddy process whose one site, on port, is
// "sse_fanout <upstream>", and waits until it accepts connections. The
// test's cleanup kills it, and fails the test if it reported a data race.
func startNode(t *testing.T, name string, port int, upstream string) *fleetNode {
	t.Helper()
	dir := t.TempDir()
	n := &fleetNode{
		name:      name,
		base:      fmt.Sprintf("http://127.0.0.1:%d", port),
		adminPort: testkit.FreePort(t),
		out:       &lockedBuffer{},
		exited:    make(chan struct{}),
	}
	config := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	auto_https off
	storage file_system %s
	log {
		level %s
	}
}
%s {
	bind 127.0.0.1
	sse_fanout %s
}
`, n.adminPort, filepath.Join(dir, "data"), testkit.LogLevel, n.base, upstream)
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	n.cmd = exec.Command(os.Args[0], "-test.run=^$", "--", "run", "--config", path, "--adapter", "caddyfile")
	n.cmd.Env = append(os.Environ(), runCaddyEnv+"=1", "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		n.cmd.Wait()
		close(n.exited)
	}()
	t.Cleanup(func() {
		n.kill(t)
		if out := n.out.String(); strings.Contains(out, "DATA RACE") || t.Failed() {
			t.Errorf("%s's output:\n%s", name, out)
		}
	})
	deadline := time.Now().Add(testkit.WaitTimeout)
	for {
		conn, err := net.Dial("tcp", strings.TrimPrefix(n.base, "http://"))
		if err == nil {
			conn.Close()
			return n
		}
		select {
		case <-n.exited:
			t.Fatalf("%s exited: %s", name, n.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not accept connections: %v", name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill stops the process by its pid with SIGKILL, as a crash would, and
// waits until it is reaped.
func (n *fleetNode) kill(t *testing.T) {
	t.Helper()
	select {
	case <-n.exited:
		return
	default:
	}
	if err := n.cmd.Process.Kill(); err != nil {
		t.Errorf("killing %s (pid %d): %v", n.name, n.cmd.Process.Pid, err)
	}
	select {
	case <-n.exited:
	case <-time.After(testkit.WaitTimeout):
		t.Fatalf("%s (pid %d) did not exit", n.name, n.cmd.Process.Pid)
	}
}

// streams returns the node's open streams, from its admin API.
func (n *fleetNode) streams(t *testing.T) []streamStatus {
	t.Helper()
	resp, err := testkit.HTTPClient.Get(fmt.Sprintf("http://127.0.0.1:%d/sse_fanout/streams", n.adminPort))
	if err != nil {
		t.Fatalf("%s's admin API: %v", n.name, err)
	}
	defer resp.Body.Close()
	var statuses []streamStatus
	if err := json.NewDecoder(resp.Body).Decode(&statuses); err != nil {
		t.Fatal(err)
	}
	return statuses
}

// waitStream waits until the node's stream at key satisfies cond.
func (n *fleetNode) waitStream(t *testing.T, key, what string, cond func(streamStatus) bool) streamStatus {
	t.Helper()
	var found streamStatus
	testkit.Eventually(t, n.name+": "+what, func() bool {
		for _, st := range n.streams(t) {
			if st.Key == key && cond(st) {
				found = st
				return true
			}
		}
		return false
	})
	return found
}

var nodeIDPattern = regexp.MustCompile(`^[0-9a-f]{8}$`)

func TestFleetOfProcesses(t *testing.T) {
	origin := testkit.NewOrigin(t)
	shieldPort := testkit.FreePort(t)
	shield := startNode(t, "shield", shieldPort, origin.URL())
	edges := []*fleetNode{
		startNode(t, "edge-1", testkit.FreePort(t), shield.base),
		startNode(t, "edge-2", testkit.FreePort(t), shield.base),
	}

	// Two browsers on each edge; the shield serves the two edges over one
	// origin connection.
	clients := map[*fleetNode][]*testkit.Client{}
	for _, e := range edges {
		for range 2 {
			clients[e] = append(clients[e], testkit.OpenClient(t, e.base+"/live", nil))
		}
	}
	up := origin.NextConn(t)
	shieldStream := shield.waitStream(t, "/live", "both edges as clients", func(st streamStatus) bool { return st.Clients == 2 })
	if !nodeIDPattern.MatchString(shieldStream.Node) || shieldStream.UpstreamTier != "" {
		t.Fatalf("the shield's stream: node %q upstream_tier %q, want a random name and an origin", shieldStream.Node, shieldStream.UpstreamTier)
	}
	for _, e := range edges {
		st := e.waitStream(t, "/live", "its upstream to be the shield", func(st streamStatus) bool { return st.UpstreamTier != "" })
		if st.UpstreamTier != shieldStream.Node || st.Node == shieldStream.Node {
			t.Fatalf("%s: node %q upstream_tier %q, want its own name and the shield's %q", e.name, st.Node, st.UpstreamTier, shieldStream.Node)
		}
	}

	// Every client gets the origin's exact sequence, through two tiers.
	up.Send("retry: 100\n\n") // the smallest floor, so that the edges retry soon when the shield goes
	want := testkit.SendScript(up, 50)
	for _, e := range edges {
		for _, c := range clients[e] {
			if err := readAll(t, c, want); err != nil {
				t.Fatalf("a client of %s: %v", e.name, err)
			}
		}
	}

	// The shield dies and comes back: the edges resume from their cursor.
	// The restarted shield opens the stream for its live events, and
	// serves the edges' cursor by a catch-up from the origin, at most one
	// per edge; the clients, who stayed connected to their edges, miss
	// nothing and see nothing twice.
	shield.kill(t)
	up.WaitClosed(t)
	shield = startNode(t, "shield (restarted)", shieldPort, origin.URL())
	live := make(chan *testkit.OriginConn, 1)
	published, stop := make(chan struct{}), make(chan struct{})
	var catchUps atomic.Int64
	var badCursor atomic.Value
	var serving sync.WaitGroup
	serving.Add(1)
	go func() { // every request of the restarted shield
		defer serving.Done()
		for conn := origin.NextConnOr(stop); conn != nil; conn = origin.NextConnOr(stop) {
			cursor := conn.Header.Get("Last-Event-ID")
			if cursor == "" {
				live <- conn
				continue
			}
			catchUps.Add(1)
			if cursor != "n50" {
				badCursor.Store(cursor)
			}
			serving.Add(1)
			go func() { // the origin's answer to n50: what the live stream sent since
				defer serving.Done()
				select {
				case <-published:
					testkit.SendIDs(conn, 51, 70)
				case <-stop:
				}
			}()
		}
	}()
	defer func() { close(stop); serving.Wait() }()
	var resumed *testkit.OriginConn
	select {
	case resumed = <-live:
	case <-time.After(testkit.WaitTimeout):
		t.Fatal("the restarted shield did not open the stream")
	}
	testkit.SendIDs(resumed, 51, 70)
	shield.waitStream(t, "/live", "the live events", func(st streamStatus) bool { return st.LastID == "70" })
	close(published)
	for _, e := range edges {
		for _, c := range clients[e] {
			c.ExpectIDs(t, 51, 70)
		}
	}
	if n := catchUps.Load(); n < 1 || n > int64(len(edges)) {
		t.Fatalf("the restarted shield made %d catch-ups, want one per edge at most", n)
	}
	if bad, _ := badCursor.Load().(string); bad != "" {
		t.Fatalf("a catch-up asked the origin with Last-Event-ID %q, want n50", bad)
	}

	// An edge dies: its clients move to the other edge with their cursor
	// and resume from its buffer, with what was sent meanwhile.
	dead, alive := edges[0], edges[1]
	dead.kill(t)
	for _, c := range clients[dead] {
		c.WaitEnded(t)
	}
	testkit.SendIDs(resumed, 71, 80)
	for _, c := range clients[alive] {
		c.ExpectIDs(t, 71, 80)
	}
	var moved []*testkit.Client
	for range clients[dead] {
		c := testkit.OpenClient(t, alive.base+"/live", testkit.LastEventID("70"))
		c.ExpectIDs(t, 71, 80)
		moved = append(moved, c)
	}
	testkit.SendIDs(resumed, 81, 85)
	for _, c := range append(moved, clients[alive]...) {
		c.ExpectIDs(t, 81, 85)
	}
	origin.NoNewConn(t)
	if n, want := origin.Total.Load(), 2+catchUps.Load(); n != want {
		t.Fatalf("origin saw %d requests, want %d: one, one after the shield's restart, and its catch-ups", n, want)
	}
	if st := alive.waitStream(t, "/live", "the restarted shield as its upstream", func(st streamStatus) bool { return st.UpstreamTier != shieldStream.Node }); !nodeIDPattern.MatchString(st.UpstreamTier) {
		t.Errorf("upstream_tier %q after the shield's restart, want its new random name", st.UpstreamTier)
	}
}
