// Command sseendure is the benchmark's endurance run (issue 23): one Caddy
// with sse_fanout in front of bench/sseorigin, held for -duration under
// W1's traffic and churn, sampled all along, and judged at the end.
//
//	bench/run.sh with ENDURANCE=1h     # builds the binaries and runs it
//	sseendure -bin /tmp -out /tmp/endure -duration 1h
//
// During the run:
//   - the main cohort: -clients sseload clients on /events (W1: 10 events/s
//     of 256 B), of which -reconnect-fraction reconnect with their cursor
//     every -reconnect-every, and any whose stream ends come back with it;
//   - every -reload-every, `caddy reload` with a Caddyfile whose heartbeat
//     differs from the one before (15s, 14s, 15s, …);
//   - every -restart-every, the origin is stopped and started again, with
//     -state, so that its ids go on;
//   - a cohort of -slow clients that read -slow-rate bytes a second, which
//     sse_fanout cuts once they fall client_queue events behind;
//   - every -new-every, -new-streams clients open a stream each on a path
//     never used before, hold it -new-hold, and leave it idle;
//   - every -sample: the proxy's RSS and open files from /proc, its heap
//     and goroutines from Caddy's /metrics (go_memstats_heap_inuse_bytes,
//     go_goroutines), and the main cohort's delivered events.
//
// At the end it writes samples.csv, the charts (endurance-*.svg), the
// sseload reports, and verdict.json, and prints the verdict: PASS if the
// main cohort's resuming clients saw no gap and no duplicate, and RSS,
// heap, goroutines and file descriptors ended within -tolerance of where
// they were at -mark. It exits 1 on FAIL.
//
// Everything listens on 127.0.0.1; every process it starts is stopped by
// its pid, also on SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type config struct {
	bin, out          string
	duration, mark    time.Duration
	clients           int
	rate              float64
	size              int
	reconnectEvery    time.Duration
	reconnectFraction float64
	reloadEvery       time.Duration
	restartEvery      time.Duration
	slow, slowRate    int
	newEvery, newHold time.Duration
	newStreams        int
	sampleEvery       time.Duration
	tolerance         float64
	portBase          int
}

func main() {
	var c config
	flag.StringVar(&c.bin, "bin", "/tmp", "`directory` of the caddy, sseorigin and sseload binaries")
	flag.StringVar(&c.out, "out", "", "`directory` for the results (required)")
	flag.DurationVar(&c.duration, "duration", time.Hour, "how long the run lasts")
	flag.DurationVar(&c.mark, "mark", 5*time.Minute, "the time whose sample the end is compared with")
	flag.IntVar(&c.clients, "clients", 1000, "clients of the main cohort")
	flag.Float64Var(&c.rate, "rate", 10, "origin events per second")
	flag.IntVar(&c.size, "size", 256, "bytes per event")
	flag.DurationVar(&c.reconnectEvery, "reconnect-every", time.Minute, "how often a share of the main cohort reconnects with its cursor")
	flag.Float64Var(&c.reconnectFraction, "reconnect-fraction", 0.1, "that share")
	flag.DurationVar(&c.reloadEvery, "reload-every", time.Minute, "how often Caddy is reloaded with a changed heartbeat; 0: never")
	flag.DurationVar(&c.restartEvery, "restart-every", 10*time.Minute, "how often the origin is restarted; 0: never")
	flag.IntVar(&c.slow, "slow", 20, "clients of the slow cohort; 0: none")
	flag.IntVar(&c.slowRate, "slow-rate", 200, "`bytes` a second each slow client reads")
	flag.DurationVar(&c.newEvery, "new-every", time.Minute, "how often a cohort of new streams opens; 0: never")
	flag.IntVar(&c.newStreams, "new-streams", 10, "streams each such cohort opens, a client each")
	flag.DurationVar(&c.newHold, "new-hold", 10*time.Second, "how long a new stream's client stays before leaving it idle")
	flag.DurationVar(&c.sampleEvery, "sample", 10*time.Second, "how often the proxy is sampled")
	flag.Float64Var(&c.tolerance, "tolerance", 0.10, "how far from the mark's sample the end's may be, as a share")
	flag.IntVar(&c.portBase, "port-base", 19300, "the origin listens on it, Caddy on +80, its admin API on +81")
	flag.Parse()
	if c.out == "" || c.mark >= c.duration || c.clients < 1 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	pass, err := run(ctx, &c)
	if err != nil {
		log.Fatalf("sseendure: %v", err)
	}
	if !pass {
		os.Exit(1)
	}
}

// procs is every process the run started and has not stopped.
type procs struct {
	mu   sync.Mutex
	cmds map[int]*exec.Cmd
	done map[int]chan struct{}
}

// start starts a process with its output appended to log; its standard
// output goes to stdout instead if that is not nil, and its standard
// error to tap too if that is not nil.
func (p *procs) start(log string, stdout, tap io.Writer, name string, args ...string) (*exec.Cmd, error) {
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if tap != nil {
		cmd.Stderr = io.MultiWriter(f, tap)
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(done) }()
	p.mu.Lock()
	p.cmds[cmd.Process.Pid], p.done[cmd.Process.Pid] = cmd, done
	p.mu.Unlock()
	return cmd, nil
}

// wait waits for cmd to end, or ctx.
func (p *procs) wait(ctx context.Context, cmd *exec.Cmd) {
	p.mu.Lock()
	done := p.done[cmd.Process.Pid]
	p.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// stop ends cmd by its pid: SIGTERM, then SIGKILL after 5 s.
func (p *procs) stop(cmd *exec.Cmd) {
	pid := cmd.Process.Pid
	p.mu.Lock()
	done, ok := p.done[pid]
	delete(p.cmds, pid)
	delete(p.done, pid)
	p.mu.Unlock()
	if !ok {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func (p *procs) stopAll() {
	p.mu.Lock()
	var all []*exec.Cmd
	for _, c := range p.cmds {
		all = append(all, c)
	}
	p.mu.Unlock()
	for _, c := range all {
		p.stop(c)
	}
}

// waitPort waits until something accepts on 127.0.0.1:port.
func waitPort(port int) error {
	for range 200 {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on 127.0.0.1:%d after 10 s", port)
}

// caddyfile is the proxy's configuration, heartbeat set to hb.
func (c *config) caddyfile(hb string) string {
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	auto_https off
}

http://127.0.0.1:%d {
	sse_fanout http://127.0.0.1:%d {
		heartbeat %s
	}
}
`, c.portBase+81, c.portBase+80, c.portBase, hb)
}

var progressEvents = regexp.MustCompile(`; (\d+) events \(`)

// eventsTap reads the main cohort's -progress lines for the events
// delivered so far.
type eventsTap struct{ events atomic.Uint64 }

func (t *eventsTap) Write(p []byte) (int, error) {
	for _, m := range progressEvents.FindAllSubmatch(p, -1) {
		if n, err := strconv.ParseUint(string(m[1]), 10, 64); err == nil {
			t.events.Store(n)
		}
	}
	return len(p), nil
}

func run(ctx context.Context, c *config) (bool, error) {
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return false, err
	}
	p := &procs{cmds: make(map[int]*exec.Cmd), done: make(map[int]chan struct{})}
	defer p.stopAll()
	path := func(name string) string { return filepath.Join(c.out, name) }
	bin := func(name string) string { return filepath.Join(c.bin, name) }
	_ = os.Remove(path("origin.state"))

	originArgs := []string{"-listen", fmt.Sprintf("127.0.0.1:%d", c.portBase), "-rate", fmt.Sprint(c.rate),
		"-size", fmt.Sprint(c.size), "-state", path("origin.state")}
	origin, err := p.start(path("origin.log"), nil, nil, bin("sseorigin"), originArgs...)
	if err != nil {
		return false, err
	}
	if err := waitPort(c.portBase); err != nil {
		return false, err
	}
	hb := []string{"15s", "14s"}
	conf := path("Caddyfile")
	if err := os.WriteFile(conf, []byte(c.caddyfile(hb[0])), 0o644); err != nil {
		return false, err
	}
	caddy, err := p.start(path("caddy.log"), nil, nil, bin("caddy"), "run", "--config", conf, "--adapter", "caddyfile")
	if err != nil {
		return false, err
	}
	if err := waitPort(c.portBase + 80); err != nil {
		return false, err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/events", c.portBase+80)
	dur := fmt.Sprint(c.duration)
	tap := &eventsTap{}
	mainArgs := []string{"-url", url, "-clients", fmt.Sprint(c.clients), "-duration", dur, "-warmup", "0s",
		"-reconnect", "-reconnect-every", fmt.Sprint(c.reconnectEvery), "-reconnect-fraction", fmt.Sprint(c.reconnectFraction),
		"-progress", "10s", "-pid", fmt.Sprintf("server=%d", caddy.Process.Pid), "-workload", "endurance", "-system", "sse_fanout", "-json"}
	mainOut, err := os.Create(path("main.json"))
	if err != nil {
		return false, err
	}
	defer mainOut.Close()
	load, err := p.start(path("sseload.main.log"), mainOut, tap, bin("sseload"), mainArgs...)
	if err != nil {
		return false, err
	}
	var slow *exec.Cmd
	if c.slow > 0 {
		slowOut, err := os.Create(path("slow.json"))
		if err != nil {
			return false, err
		}
		defer slowOut.Close()
		slow, err = p.start(path("sseload.slow.log"), slowOut, nil, bin("sseload"), "-url", url+"?cohort=slow",
			"-clients", fmt.Sprint(c.slow), "-read-rate", fmt.Sprint(c.slowRate), "-duration", dur, "-warmup", "0s", "-json")
		if err != nil {
			return false, err
		}
	}

	start := time.Now()
	var samples []sample
	var logMu sync.Mutex
	events := path("events.log")
	note := func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		line := fmt.Sprintf("%6.0fs  %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
		fmt.Print(line)
		if f, err := os.OpenFile(events, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
			f.WriteString(line)
			f.Close()
		}
	}
	reloads, cohorts := 0, 0
	tasks := []task{
		{"sample", c.sampleEvery},
		{"reload", c.reloadEvery},
		{"restart-origin", c.restartEvery},
		{"new-streams", c.newEvery},
	}
	schedCtx, stopSched := context.WithCancel(ctx)
	go func() { p.wait(ctx, load); stopSched() }()
	runSchedule(schedCtx, realClock{}, tasks, c.duration+time.Minute, func(name string, at time.Duration) {
		switch name {
		case "sample":
			s := sampleProxy(caddy.Process.Pid, c.portBase+81)
			s.At, s.Events = at, tap.events.Load()
			samples = append(samples, s)
		case "reload":
			reloads++
			if err := os.WriteFile(conf, []byte(c.caddyfile(hb[reloads%2])), 0o644); err != nil {
				note("reload: %v", err)
				return
			}
			out, err := exec.Command(bin("caddy"), "reload", "--config", conf, "--adapter", "caddyfile",
				"--address", fmt.Sprintf("127.0.0.1:%d", c.portBase+81)).CombinedOutput()
			if err != nil {
				note("reload %d failed: %v: %s", reloads, err, strings.TrimSpace(string(out)))
				return
			}
			note("reload %d: heartbeat %s", reloads, hb[reloads%2])
		case "restart-origin":
			p.stop(origin)
			if origin, err = p.start(path("origin.log"), nil, nil, bin("sseorigin"), originArgs...); err != nil {
				note("origin restart: %v", err)
				return
			}
			if err := waitPort(c.portBase); err != nil {
				note("origin restart: %v", err)
				return
			}
			state, _ := os.ReadFile(path("origin.state"))
			note("origin restarted after id %s", strings.Fields(string(state) + " ?")[0])
		case "new-streams":
			cohorts++
			var urls []string
			for i := range c.newStreams {
				urls = append(urls, fmt.Sprintf("%s/new-%d-%d", url, cohorts, i))
			}
			cmd, err := p.start(path("sseload.new.log"), nil, nil, bin("sseload"), "-url", strings.Join(urls, ","),
				"-clients", fmt.Sprint(c.newStreams), "-duration", fmt.Sprint(c.newHold), "-warmup", "0s")
			if err != nil {
				note("new streams: %v", err)
				return
			}
			go func() { p.wait(ctx, cmd) }()
			note("cohort %d: %d new streams for %s", cohorts, c.newStreams, c.newHold)
		}
	})
	p.wait(ctx, load)
	if slow != nil {
		p.wait(ctx, slow)
	}
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	return finish(c, samples)
}
