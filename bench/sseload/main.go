// Command sseload opens many Server-Sent Events clients against one URL
// and measures what they receive: how many clients the server holds, how
// many events reach them and how many are lost, how long each event took
// from the origin to the client, and what the server processes spent.
//
//	go run -C bench ./sseload -url http://127.0.0.1:8080/events -clients 10000 \
//	    -duration 20s -pid server=$(pidof caddy) -pid origin=$(pidof sseorigin)
//
// It expects the events of bench/sseorigin, whose data begins with the
// event's sequence number and its send time in Unix nanoseconds
// ("data: 42 1767225600123456789 …"); a gap in a client's sequence numbers
// is a lost event, and now minus the send time is the event's latency. The
// origin and the clients must share a clock, so this is for one machine.
//
// A run connects the clients at most -ramp per second, waits -warmup once
// they are all connected (or -connect-timeout has passed), then measures for
// -duration: events, latency, and the CPU time of every -pid. At the end of
// the window it reads every -pid's RSS, and -origin-stats if given. The
// report is text, or JSON with -json.
//
// -accept-encoding sends an Accept-Encoding header (such as gzip or zstd);
// a body in gzip or zstd is decoded, and the report counts the bytes that
// came over the wire (before decompression) per event delivered.
//
// -members makes each client a page of several streams, its members, read
// multiplexed on one stream (sse_fanout's multiplex_param, nchan's
// multiplexed channels) or with -split on a stream each: -clients counts
// pages, a delivery is one member's event reaching a page, loss is counted
// per member, and the report's per-client figures are per page (page.go).
//
// -proto picks the protocol: h1 (plain HTTP/1.1, the default), h1tls
// (HTTP/1.1 over TLS, offering only http/1.1 in ALPN), h2 (HTTP/2 over
// TLS) or h3 (HTTP/3 over QUIC); all but h1 take an https:// URL, and a
// self-signed certificate is accepted with -cacert (or -insecure). Over h2
// and h3, -streams-per-conn streams share each connection, as the tabs of
// one browser do; every connection is checked to have negotiated the
// protocol asked for (see proto.go). -clients counts streams, and -ramp
// bounds the streams opened per second.
//
// With -table, it instead reads the JSON reports named as arguments and
// prints them as a markdown table, the median of each workload and system
// over its rounds, with the ratios of the first system to each other one.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/quic-go/quic-go/http3"
)

// maxClients bounds -clients, so that a typo cannot exhaust the machine.
const maxClients = 100_000

// pidFlag collects -pid values: "name=pid" or a bare pid, repeatable, and
// comma-separated lists of either.
type pidFlag []proc

func (p *pidFlag) String() string {
	var parts []string
	for _, pr := range *p {
		parts = append(parts, fmt.Sprintf("%s=%d", pr.Name, pr.PID))
	}
	return strings.Join(parts, ",")
}

func (p *pidFlag) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		name, num, ok := strings.Cut(part, "=")
		if !ok {
			name, num = "server", part
		}
		var pid int
		if _, err := fmt.Sscan(num, &pid); err != nil || pid <= 0 {
			return fmt.Errorf("bad pid %q", part)
		}
		*p = append(*p, proc{Name: name, PID: pid})
	}
	return nil
}

func main() {
	var cfg config
	flag.StringVar(&cfg.url, "url", "", "event stream `URL`: http:// for -proto h1, https:// for the others (required); several, separated by commas, spread the clients over them in turn")
	flag.StringVar(&cfg.sourceAddrs, "source-addrs", "", "local `addresses` to connect from, in turn, such as 127.0.0.1-127.0.0.8 or 127.0.0.1,127.0.0.2: each gives its own ephemeral ports")
	flag.BoolVar(&cfg.reconnect, "reconnect", false, "with -proto h1 or h1tls: reopen a stream that ends, with its cursor (Last-Event-ID), on the next -url, after -retry")
	flag.DurationVar(&cfg.retry, "retry", time.Second, "with -reconnect: the wait before reopening, spread by ±50%")
	flag.DurationVar(&cfg.reconnectEvery, "reconnect-every", 0, "with -proto h1 or h1tls: every this `long`, close -reconnect-fraction of the clients, in turn, and reopen them with their cursor at once")
	flag.Float64Var(&cfg.reconnectFraction, "reconnect-fraction", 0.1, "the `share` of the clients -reconnect-every closes each time")
	flag.StringVar(&cfg.membersList, "members", "", "`names` of the members of a page, comma-separated, such as s0,s1,s2: each client is a page of these streams, read on one stream of -url with {members} replaced by the names joined by commas, or with -split on a stream each; -clients and -streams-per-conn count pages")
	flag.BoolVar(&cfg.split, "split", false, "with -members: a page reads each member on a stream of its own, -url with {member} replaced by its name, all on the page's connection over h2 and h3")
	flag.IntVar(&cfg.readRate, "read-rate", 0, "with -proto h1 or h1tls: each client reads at most this many `bytes` a second (a slow client); 0 reads as fast as it can")
	flag.DurationVar(&cfg.progress, "progress", 0, "print a progress line to stderr every this `long`; 0 prints none")
	flag.IntVar(&cfg.clients, "clients", 1000, "`number` of clients (event streams; pages with -members) to open")
	flag.Float64Var(&cfg.ramp, "ramp", 2000, "most new streams per `second`")
	flag.StringVar(&cfg.proto, "proto", protoH1, "`protocol`: h1 (HTTP/1.1), h1tls (HTTP/1.1 over TLS), h2 (HTTP/2 over TLS) or h3 (HTTP/3)")
	flag.IntVar(&cfg.streamsPerConn, "streams-per-conn", 1, "with -proto h2 or h3: event streams (pages with -members) sharing one connection (the server's limit on concurrent streams must allow them)")
	flag.StringVar(&cfg.acceptEncoding, "accept-encoding", "", "`value` of the Accept-Encoding header, such as gzip or zstd; none by default. gzip and zstd bodies are decoded")
	flag.StringVar(&cfg.cacert, "cacert", "", "PEM `file` of the certificate (or its CA) to trust for TLS")
	flag.BoolVar(&cfg.insecure, "insecure", false, "accept any TLS certificate (prefer -cacert)")
	flag.DurationVar(&cfg.duration, "duration", 20*time.Second, "how long to measure")
	flag.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "wait after the clients are connected, before measuring")
	flag.DurationVar(&cfg.connectTimeout, "connect-timeout", 60*time.Second, "how long connecting may take; then the run goes on with the clients it has")
	flag.Var(&cfg.pids, "pid", "`name=pid` of a process to measure (CPU and RSS); repeatable. The names origin and publisher are reported apart from the server's")
	flag.StringVar(&cfg.originStats, "origin-stats", "", "`URL` of the origin's JSON stats, fetched at the end of the window")
	flag.StringVar(&cfg.labels.Workload, "workload", "", "workload `label` for the report")
	flag.StringVar(&cfg.labels.System, "system", "", "system `label` for the report")
	flag.IntVar(&cfg.labels.Round, "round", 0, "round `number` for the report")
	jsonOut := flag.Bool("json", false, "print the report as JSON")
	table := flag.Bool("table", false, "print the JSON reports named as arguments as a markdown table")
	text := flag.Bool("text", false, "print the JSON reports named as arguments as text")
	merge := flag.Bool("merge", false, "print the JSON reports named as arguments, of sseload processes that ran side by side, as one JSON report")
	charts := flag.String("charts", "", "write SVG charts of the JSON reports named as arguments into this `directory`: p99 latency and memory per client against clients, a line per system and workload")
	order := flag.String("order", "sse_fanout", "with -table: space-separated `systems` to list first, in this order; the ratio rows compare the first with each other")
	flag.Parse()

	if *table {
		if err := printTable(os.Stdout, flag.Args(), *order); err != nil {
			log.Fatalf("sseload: %v", err)
		}
		return
	}
	if *text {
		for _, name := range flag.Args() {
			r, err := readReport(name)
			if err != nil {
				log.Fatalf("sseload: %v", err)
			}
			r.writeText(os.Stdout)
		}
		return
	}
	if *merge {
		var rs []*report
		for _, name := range flag.Args() {
			r, err := readReport(name)
			if err != nil {
				log.Fatalf("sseload: %v", err)
			}
			rs = append(rs, r)
		}
		m, err := mergeReports(rs)
		if err != nil {
			log.Fatalf("sseload: %v", err)
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(m); err != nil {
			log.Fatalf("sseload: %v", err)
		}
		return
	}
	if *charts != "" {
		if err := writeCurveCharts(*charts, flag.Args()); err != nil {
			log.Fatalf("sseload: %v", err)
		}
		return
	}
	if err := cfg.check(); err != nil {
		fmt.Fprintf(os.Stderr, "sseload: %v\n", err)
		flag.Usage()
		os.Exit(2)
	}
	raiseFileLimit(cfg.streams())

	ctx, stop := signalContext()
	defer stop()
	rep, err := run(ctx, &cfg)
	if err != nil {
		log.Fatalf("sseload: %v", err)
	}
	if *jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			log.Fatalf("sseload: %v", err)
		}
		return
	}
	rep.writeText(os.Stdout)
}

// config is a run's flags.
type config struct {
	url            string
	clients        int
	ramp           float64
	proto          string
	streamsPerConn int
	acceptEncoding string
	cacert         string
	insecure       bool
	duration       time.Duration
	warmup         time.Duration
	connectTimeout time.Duration
	pids           pidFlag
	originStats    string
	labels         labels

	sourceAddrs       string
	reconnect         bool
	retry             time.Duration
	reconnectEvery    time.Duration
	reconnectFraction float64
	readRate          int
	progress          time.Duration

	membersList string   // -members
	split       bool     // -split
	members     []string // -members, parsed

	target  *url.URL   // the first of targets
	targets []*url.URL // -url
	sources []netip.Addr
	tls     *tls.Config // nil for h1
}

// check validates the flags and derives target and tls from them.
func (cfg *config) check() error {
	switch cfg.proto {
	case protoH1, protoH1TLS, protoH2, protoH3:
	default:
		return fmt.Errorf("-proto must be h1, h1tls, h2 or h3, got %q", cfg.proto)
	}
	scheme := "https"
	if cfg.proto == protoH1 {
		scheme = "http"
	}
	if err := cfg.checkPages(); err != nil {
		return err
	}
	raws, err := pageURLs(cfg.url, cfg.members, cfg.split)
	if err != nil {
		return fmt.Errorf("-url: %v", err)
	}
	targets, err := parseTargets(raws, scheme)
	if err != nil {
		return fmt.Errorf("-proto %s -url: %v", cfg.proto, err)
	}
	cfg.targets, cfg.target = targets, targets[0]
	if cfg.sources, err = parseSourceAddrs(cfg.sourceAddrs); err != nil {
		return err
	}
	switch {
	case cfg.clients < 1 || cfg.streams() > maxClients:
		return fmt.Errorf("-clients must be 1 to %d, streams with -split", maxClients)
	case cfg.ramp <= 0:
		return errors.New("-ramp must be positive")
	case cfg.duration <= 0:
		return errors.New("-duration must be positive")
	case cfg.streamsPerConn < 1 || cfg.streamsPerConn*cfg.streamsPerPage() > maxStreamsPerConn:
		return fmt.Errorf("-streams-per-conn must be 1 to %d, streams with -split", maxStreamsPerConn)
	case cfg.streamsPerConn > 1 && !multiplexed(cfg.proto):
		return fmt.Errorf("-streams-per-conn needs -proto h2 or h3: HTTP/1.1 carries one stream per connection")
	case (cfg.reconnect || cfg.reconnectEvery > 0 || cfg.readRate > 0) && multiplexed(cfg.proto):
		return errors.New("-reconnect, -reconnect-every and -read-rate are for -proto h1 and h1tls")
	case cfg.reconnectEvery < 0 || cfg.reconnectFraction < 0 || cfg.reconnectFraction > 1:
		return errors.New("-reconnect-every must not be negative, -reconnect-fraction must be 0 to 1")
	case cfg.readRate < 0 || cfg.progress < 0 || cfg.retry < 0:
		return errors.New("-read-rate, -progress and -retry must not be negative")
	case strings.ContainsAny(cfg.acceptEncoding, "\r\n"):
		return errors.New("-accept-encoding cannot hold a line end")
	case cfg.proto == protoH1 && (cfg.cacert != "" || cfg.insecure):
		return errors.New("-cacert and -insecure are for TLS: -proto h1 has none")
	}
	if cfg.proto != protoH1 {
		if cfg.tls, err = tlsConfig(cfg.cacert, cfg.insecure); err != nil {
			return err
		}
	}
	return nil
}

// conns is how many connections the run's streams need: over h2 and h3
// one per -streams-per-conn clients (pages with -members), over HTTP/1.1
// one per stream.
func (cfg *config) conns() int {
	if !multiplexed(cfg.proto) {
		return cfg.streams()
	}
	return (cfg.clients + cfg.streamsPerConn - 1) / cfg.streamsPerConn
}

// raiseFileLimit raises the soft limit on open files to the hard limit,
// and warns if that is still too few for n clients.
func raiseFileLimit(n int) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			log.Printf("sseload: raising the open-file limit: %v", err)
		}
	}
	if lim.Cur < uint64(n)+64 {
		log.Printf("sseload: warning: the open-file limit is %d, too few for %d clients", lim.Cur, n)
	}
}

// signalContext is canceled by SIGINT or SIGTERM.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case <-ch:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// run does one measurement.
func run(ctx context.Context, cfg *config) (*report, error) {
	rep := &report{
		Labels:         cfg.labels,
		URL:            cfg.url,
		Proto:          cfg.proto,
		StreamsPerConn: cfg.streamsPerConn,
		Clients:        clientCounts{Wanted: cfg.streams()},
		Duration:       cfg.duration.Seconds(),
		Date:           time.Now().UTC().Format(time.RFC3339),
	}
	before := sampleProcs(cfg.pids)
	sock0 := readSockstat()
	l := newLoad(cfg)
	defer l.closeTransports()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Connect, at most ramp per second.
	start := time.Now()
	if cfg.progress > 0 {
		go l.printProgress(ctx, start)
	}
	if cfg.reconnectEvery > 0 {
		go l.cycleReconnects(ctx)
	}
	l.wg.Add(len(l.clients))
	interval := time.Duration(float64(time.Second) / cfg.ramp)
	for i, c := range l.clients {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			l.wg.Add(i - len(l.clients)) // the ones never started
			break
		}
		l.started.Add(1)
		go l.runClient(ctx, c)
	}
	deadline := time.Now().Add(cfg.connectTimeout)
	for ctx.Err() == nil && time.Now().Before(deadline) &&
		l.connected.Load()+l.failed.Load() < int64(len(l.clients)) {
		time.Sleep(10 * time.Millisecond)
	}
	rep.Clients.ConnectSeconds = time.Since(start).Seconds()
	if ctx.Err() == nil {
		sleep(ctx, cfg.warmup)
	}

	// Measure.
	cpu0 := sampleProcs(cfg.pids)
	self0 := selfCPU()
	t0 := time.Now()
	l.measuring.Store(true)
	sleep(ctx, cfg.duration)
	l.measuring.Store(false)
	elapsed := time.Since(t0)
	cpu1 := sampleProcs(cfg.pids)
	self1 := selfCPU()
	rep.Duration = elapsed.Seconds()
	rep.Clients.Held = l.open.Load()
	rep.Pages = l.pageReport(elapsed.Seconds())
	held, _ := rep.held()
	rep.Sockets = sockstatReport(sock0, readSockstat(), held)
	if cfg.originStats != "" {
		rep.Origin = fetchJSON(cfg.originStats, cfg.tls)
	}

	rep.Clients.Connected = l.connected.Load()
	rep.Clients.Failed = l.failed.Load()
	rep.Clients.Ended = l.ended.Load()
	rep.Clients.WrongProto = l.streamsWrong.Load()
	rep.Conns = connCounts{
		Wanted:     cfg.conns(),
		Opened:     l.connsOpened.Load(),
		Failed:     l.connsFailed.Load(),
		WrongProto: l.connsWrong.Load(),
	}
	rep.Conns.ALPN, rep.Conns.TLS = l.tlsCounts()
	rep.Encodings = l.encodingCounts()
	for _, c := range l.clients {
		rep.Events.WireBytes += c.wire.Load()
		rep.Events.Delivered += c.delivered.Load()
		rep.Events.Lost += c.lost.Load()
		rep.Events.Duplicate += c.dup.Load()
		if c.connected.Load() && c.delivered.Load() == 0 {
			rep.Clients.Silent++
		}
	}
	rep.Events.Foreign = l.foreign.Load()
	rep.Events.Comments = l.comments.Load()
	rep.Reconnects = l.resume.counts()
	rep.Events.PerSecond = float64(rep.Events.Delivered) / elapsed.Seconds()
	if rep.Events.Delivered > 0 {
		rep.Events.WirePerEvent = float64(rep.Events.WireBytes) / float64(rep.Events.Delivered)
	}
	rep.Latency = l.hist.summary()
	rep.LatencyHist = l.hist.sparse()
	rep.Errors = l.errorSamples()
	for i, p := range cfg.pids {
		rep.Procs = append(rep.Procs, procReport(p, before[i], cpu0[i], cpu1[i], held, rep.Events.Delivered))
	}
	rep.LoadCPU = (self1 - self0).Seconds()

	// Disconnect everyone, and wait a little for the readers to end.
	cancel()
	l.closeAll()
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
	return rep, nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// load is the state shared by a run's clients.
type load struct {
	cfg       *config
	targets   []*target   // -url, with their raw GET requests
	h1TLS     *tls.Config // h1tls: offers http/1.1 only
	h2        *http.Transport
	h3        *http3.Transport
	dialer    sourceCounter // -source-addrs, in turn
	dialSlots chan struct{} // bounds the connects in flight

	clients   []*client      // all of them, made before the first starts; with -split a page's streams are consecutive
	members   map[string]int // -members: each name's place
	started   atomic.Int64   // clients whose goroutine has started: clients[:started]
	groups    []*connGroup   // h2 and h3: the connections, in order
	resume    resumeStats    // -reconnect and -reconnect-every
	events    atomic.Uint64  // events received, in the window or not (for -progress)
	comments  atomic.Uint64  // comment lines (": keepalive") received in the window
	wg        sync.WaitGroup // one per client started
	measuring atomic.Bool
	hist      histogram

	connected atomic.Int64  // clients that got their 200
	failed    atomic.Int64  // clients that never did
	open      atomic.Int64  // clients connected now
	ended     atomic.Int64  // connected clients whose stream ended early
	foreign   atomic.Uint64 // data lines not in sseorigin's format

	connsOpened  atomic.Int64 // connections opened (TCP, TLS or QUIC handshake done)
	connsFailed  atomic.Int64 // connections that could not be opened
	connsWrong   atomic.Int64 // opened, but not with the protocol asked for
	streamsWrong atomic.Int64 // responses that came in another HTTP version

	errMu     sync.Mutex
	errors    map[string]int   // a few error messages and their counts
	alpn      map[string]int64 // TLS connections by negotiated protocol
	tlsKinds  map[string]int64 // TLS connections by version and cipher suite
	encodings map[string]int64 // responses by Content-Encoding
}

func newLoad(cfg *config) *load {
	l := &load{
		cfg:       cfg,
		dialer:    sourceCounter{dialers: dialers(cfg.sources)},
		dialSlots: make(chan struct{}, 256),
		errors:    make(map[string]int),
		alpn:      make(map[string]int64),
		tlsKinds:  make(map[string]int64),
		encodings: make(map[string]int64),
	}
	for _, u := range cfg.targets {
		l.targets = append(l.targets, newTarget(u, cfg.acceptEncoding))
	}
	cfg.target = l.targets[0].url
	if len(cfg.members) > 0 {
		l.members = make(map[string]int, len(cfg.members))
		for m, name := range cfg.members {
			l.members[name] = m
		}
	}
	// The clients (pages with -members) go to the -url targets in turn;
	// with -split the page's member m goes to its URL's m-th target. Over
	// h2 and h3 every streamsPerConn-th page opens a connection for its
	// streams and those of the pages after it, so a connection's streams
	// share its host.
	per := cfg.streamsPerPage()
	urls := len(l.targets) / per
	l.clients = make([]*client, cfg.streams())
	for i := range l.clients {
		page, m := i/per, i%per
		c := &client{index: i}
		if cfg.muxPage() {
			c.lasts = make([]uint64, len(cfg.members))
			c.memberDelivered = make([]atomic.Uint64, len(cfg.members))
		}
		if multiplexed(cfg.proto) {
			if i%(cfg.streamsPerConn*per) == 0 {
				l.groups = append(l.groups, &connGroup{ready: make(chan struct{}), target: len(l.groups) % urls * per})
				c.first = true
			}
			c.group = l.groups[len(l.groups)-1]
			c.target = c.group.target + m
		} else {
			c.target = page%urls*per + m
		}
		l.clients[i] = c
	}
	switch cfg.proto {
	case protoH1TLS:
		l.h1TLS = cfg.tls.Clone()
		l.h1TLS.NextProtos = []string{"http/1.1"}
		if l.h1TLS.ServerName == "" {
			l.h1TLS.ServerName = cfg.target.Hostname()
		}
	case protoH2:
		l.h2 = l.newH2Transport()
	case protoH3:
		l.h3 = &http3.Transport{DisableCompression: true}
	}
	return l
}

// closeTransports releases what the transports hold once the run is over.
func (l *load) closeTransports() {
	if l.h2 != nil {
		l.h2.CloseIdleConnections()
	}
	if l.h3 != nil {
		l.h3.Close()
	}
}

// client is one stream's counters.
type client struct {
	connected atomic.Bool
	delivered atomic.Uint64 // events received in the window
	lost      atomic.Uint64 // sequence numbers skipped in the window
	dup       atomic.Uint64 // events that repeated or went back in the window
	wire      atomic.Uint64 // bytes of its body over the wire in the window, before decoding

	group  *connGroup // h2 and h3: the connection the stream is on
	first  bool       // h2 and h3: the stream opens its group's connection
	target int        // the index of the -url it connects to; -reconnect moves it on
	index  int        // its place among the clients: where -reconnect sends it after an end (nextTarget)
	last   uint64     // the highest sequence number seen: its cursor; only its goroutine touches it

	// A page multiplexed on this stream (-members without -split): each
	// member's highest sequence number, touched by its goroutine only,
	// and its events delivered in the window.
	lasts           []uint64
	memberDelivered []atomic.Uint64

	streaming atomic.Bool // its stream is open now

	mu      sync.Mutex
	closer  io.Closer // ends the stream: its connection (h1, h1tls) or its body
	release func()    // frees its decoder once its reader is done; nil if none
	cutting bool      // cut closed the stream, to be reopened at once
}

// setCloser records what ends c's stream, for closeAll. If ctx has ended,
// closeAll may have run already: it then closes it at once and reports
// false.
func (c *client) setCloser(ctx context.Context, closer io.Closer) bool {
	c.mu.Lock()
	c.closer = closer
	c.mu.Unlock()
	if ctx.Err() != nil {
		closer.Close()
		return false
	}
	return true
}

// runClient connects one client and reads its stream until ctx ends.
// With -reconnect it reopens the stream when it ends, or when opening it
// fails, on the next -url, with its cursor; a stream closed by cut is
// reopened at once, on the same one.
func (l *load) runClient(ctx context.Context, c *client) {
	defer l.wg.Done()
	var (
		everConnected bool
		countedFailed bool      // counted in l.failed, until it connects
		endedAt       time.Time // when the stream being reopened ended unasked
	)
	next := func(ended bool) {
		c.target = nextTarget(c.target, c.index, len(l.targets), ended)
		sleep(ctx, retryDelay(l.cfg.retry))
	}
	for ctx.Err() == nil {
		body, err := l.dialStream(ctx, c)
		if err != nil {
			if c.takeCut() {
				continue
			}
			if ctx.Err() == nil {
				l.noteError(err)
			}
			if !everConnected && !countedFailed {
				l.failed.Add(1)
				countedFailed = true
			}
			if ctx.Err() != nil || !l.cfg.reconnect {
				return
			}
			l.resume.failed()
			next(false)
			continue
		}
		if countedFailed {
			l.failed.Add(-1)
			countedFailed = false
		}
		if everConnected {
			l.resume.resumed(endedAt, time.Now())
		} else {
			everConnected = true
			c.connected.Store(true)
			l.connected.Add(1)
		}
		endedAt = time.Time{}
		l.open.Add(1)
		c.streaming.Store(true)
		err = l.read(body, c)
		c.streaming.Store(false)
		if c.release != nil {
			c.release()
			c.release = nil
		}
		c.mu.Lock()
		c.closer.Close()
		c.closer = nil
		c.mu.Unlock()
		l.open.Add(-1)
		if ctx.Err() != nil {
			return
		}
		if c.takeCut() {
			continue
		}
		l.ended.Add(1)
		if err == nil {
			err = io.EOF
		}
		l.noteError(fmt.Errorf("stream ended: %w", err))
		if !l.cfg.reconnect {
			return
		}
		endedAt = time.Now()
		l.resume.ended(endedAt)
		next(true)
	}
}

// nextTarget is the -url a client reconnects to, of n, from target, the
// one it was on: after its stream ended, one of the others chosen by its
// index, so that the clients of a server that went away spread evenly
// over the rest, as a load balancer would spread them; after a failed
// attempt, the next one, so that it tries each in turn.
func nextTarget(target, index, n int, ended bool) int {
	if n == 1 {
		return 0
	}
	step := 1
	if ended {
		step += index % (n - 1)
	}
	return (target + step) % n
}

// dialStream opens c's stream: on a connection of its own for h1 and
// h1tls, on its group's for h2 and h3.
func (l *load) dialStream(ctx context.Context, c *client) (io.Reader, error) {
	if multiplexed(l.cfg.proto) {
		return l.openStream(ctx, c)
	}
	return l.openConn(ctx, c)
}

// openConn opens an h1 or h1tls client's connection in one of the dial
// slots, and connects it.
func (l *load) openConn(ctx context.Context, c *client) (io.Reader, error) {
	if err := l.takeDialSlot(ctx); err != nil {
		return nil, err
	}
	defer func() { <-l.dialSlots }()
	return l.connect(ctx, c)
}

// connect dials, makes the TLS handshake for h1tls, sends the request and
// reads the response head. It returns the response body, which is
// de-chunked as needed; closing c.closer ends it.
func (l *load) connect(ctx context.Context, c *client) (io.Reader, error) {
	t := l.targets[c.target]
	raw, err := l.dialer.dial(ctx, "tcp", t.url.Host)
	if err != nil {
		l.connsFailed.Add(1)
		return nil, err
	}
	// Closing the TCP connection ends a TLS one too, without a
	// close_notify write that could wait on a full socket.
	if !c.setCloser(ctx, raw) {
		return nil, ctx.Err()
	}
	if tc, ok := raw.(*net.TCPConn); ok && l.cfg.readRate > 0 {
		// A slow client's small receive window, so that the server, not
		// the kernel's buffers, holds what it has not read.
		_ = tc.SetReadBuffer(4096)
	}
	_ = raw.SetDeadline(time.Now().Add(dialTimeout))
	conn := raw
	if l.h1TLS != nil {
		tc := tls.Client(raw, l.h1TLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			l.connsFailed.Add(1)
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		cs := tc.ConnectionState()
		if !l.noteConn(&cs) {
			raw.Close()
			return nil, fmt.Errorf("connection negotiated %s, not http/1.1", alpnName(cs.NegotiatedProtocol))
		}
		conn = tc
	} else {
		l.noteConn(nil)
	}
	if _, err := conn.Write(t.requestBytes(c.last)); err != nil {
		raw.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 2048), nil)
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("reading response: %w", err)
	}
	_ = raw.SetDeadline(time.Time{})
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		raw.Close()
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	body, err := l.bodyOf(resp, c)
	if err == nil && l.cfg.readRate > 0 {
		body = &slowReader{r: body, rate: l.cfg.readRate}
	}
	return body, err
}

// closeAll closes every stream and connection, ending the readers.
func (l *load) closeAll() {
	for _, c := range l.clients {
		c.mu.Lock()
		if c.closer != nil {
			c.closer.Close()
		}
		c.mu.Unlock()
	}
	for _, g := range l.groups {
		g.close()
	}
}

// noteError counts an error by its message, keeping at most a few kinds.
func (l *load) noteError(err error) {
	msg := err.Error()
	// Strip the addresses, which differ per connection.
	if i := strings.LastIndex(msg, ": "); i >= 0 && strings.Contains(msg, "127.0.0.1") {
		msg = msg[i+2:]
	}
	l.errMu.Lock()
	defer l.errMu.Unlock()
	if _, ok := l.errors[msg]; ok || len(l.errors) < 10 {
		l.errors[msg]++
	}
}

// encodingCounts is the responses by Content-Encoding.
func (l *load) encodingCounts() map[string]int64 {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	return maps.Clone(l.encodings)
}

// tlsCounts is the TLS connections by negotiated protocol, and by
// version and cipher suite; nil for h1.
func (l *load) tlsCounts() (alpn, kinds map[string]int64) {
	if l.cfg.proto == protoH1 {
		return nil, nil
	}
	l.errMu.Lock()
	defer l.errMu.Unlock()
	return maps.Clone(l.alpn), maps.Clone(l.tlsKinds)
}

func (l *load) errorSamples() map[string]int {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	if len(l.errors) == 0 {
		return nil
	}
	out := make(map[string]int, len(l.errors))
	for k, v := range l.errors {
		out[k] = v
	}
	return out
}

// fetchJSON GETs a JSON document, over TLS with tlsCfg if the URL is
// https, or returns nil.
func fetchJSON(u string, tlsCfg *tls.Config) map[string]any {
	tr := &http.Transport{TLSClientConfig: tlsCfg}
	defer tr.CloseIdleConnections()
	client := &http.Client{Timeout: 5 * time.Second, Transport: tr}
	resp, err := client.Get(u)
	if err != nil {
		log.Printf("sseload: fetching %s: %v", u, err)
		return nil
	}
	defer resp.Body.Close()
	var v map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		log.Printf("sseload: decoding %s: %v", u, err)
		return nil
	}
	return v
}
