package main

// This file is -members: clients that are pages of several streams, the
// members, as a browser's page that follows ten streams is (issue 22's
// bench, bench/run.sh's workload M1). -clients counts pages, a delivery
// is one member's event reaching a page (a page of ten members at 1 event
// a second gets ten deliveries a second), and the sequence numbers, so
// loss and duplicates, are followed per member.
//
// A page reads its members in one of two ways:
//
//   - multiplexed (the default): one stream of -url, in which {members} is
//     replaced by the members' names joined by commas, such as
//     /events/?streams={members}. Each event's member is told by its type,
//     "name" or "name:type", as sse_fanout's multiplex_param renames them,
//     or, for an event without a type, by nchan's multiplexed id,
//     "<time>:<tag>,[<tag>],<tag>…": one part per channel, in the order
//     of the request's list, the event's own in brackets. An event whose
//     member cannot be told is counted as foreign, not delivered.
//   - split (-split): a stream per member, -url with {member} replaced by
//     the member's name, as a page with an EventSource per stream; over h2
//     and h3 a page's streams share its connection, as a browser's would.
//
// -streams-per-conn counts pages per connection with -members.

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// The placeholders of -url with -members.
const (
	membersPlaceholder = "{members}" // multiplexed: the names, comma-separated
	memberPlaceholder  = "{member}"  // -split: one member's name
)

// maxMembers bounds -members: sse_fanout's multiplex_max is at most 64,
// nchan's multiplexed channels at most 255.
const maxMembers = 255

var (
	eventField = []byte("event:")
	idField    = []byte("id:")
)

// parseMembers reads -members: names separated by commas, each non-empty,
// without a colon (which ends a name in an event type), and listed once.
func parseMembers(s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	names := strings.Split(s, ",")
	if len(names) > maxMembers {
		return nil, fmt.Errorf("-members: at most %d", maxMembers)
	}
	seen := make(map[string]bool, len(names))
	for _, n := range names {
		switch {
		case n == "" || strings.ContainsAny(n, ": \t\r\n{}"):
			return nil, fmt.Errorf("-members: bad name %q", n)
		case seen[n]:
			return nil, fmt.Errorf("-members: %q listed twice", n)
		}
		seen[n] = true
	}
	return names, nil
}

// pageURLs is -url's URLs, separated by commas, with the placeholders of
// -members replaced: for -split, each URL once per member, in the order
// of the members (the i-th URL's member m is at i*len(members)+m).
func pageURLs(s string, members []string, split bool) ([]string, error) {
	var out []string
	for _, raw := range strings.Split(s, ",") {
		raw = strings.TrimSpace(raw)
		hasOne, hasAll := strings.Contains(raw, memberPlaceholder), strings.Contains(raw, membersPlaceholder)
		switch {
		case len(members) == 0:
			if hasOne || hasAll {
				return nil, fmt.Errorf("%s and %s are for -members", memberPlaceholder, membersPlaceholder)
			}
			out = append(out, raw)
		case split:
			if !hasOne || hasAll {
				return nil, fmt.Errorf("-split needs %s in every -url, for each member's name, and no %s", memberPlaceholder, membersPlaceholder)
			}
			for _, m := range members {
				out = append(out, strings.ReplaceAll(raw, memberPlaceholder, m))
			}
		default:
			if !hasAll || hasOne {
				return nil, fmt.Errorf("-members needs %s in every -url, for the list of members (or -split and %s)", membersPlaceholder, memberPlaceholder)
			}
			out = append(out, strings.ReplaceAll(raw, membersPlaceholder, strings.Join(members, ",")))
		}
	}
	return out, nil
}

// checkPages checks the flags of -members.
func (cfg *config) checkPages() error {
	var err error
	if cfg.members, err = parseMembers(cfg.membersList); err != nil {
		return err
	}
	switch {
	case len(cfg.members) == 0 && cfg.split:
		return errors.New("-split needs -members")
	case len(cfg.members) > 0 && (cfg.reconnect || cfg.reconnectEvery > 0):
		return errors.New("-reconnect and -reconnect-every resume with one cursor: not with -members")
	}
	return nil
}

// streamsPerPage is how many streams a client opens: its members with
// -split, else one.
func (cfg *config) streamsPerPage() int {
	if cfg.split {
		return len(cfg.members)
	}
	return 1
}

// streams is how many streams the run opens.
func (cfg *config) streams() int { return cfg.clients * cfg.streamsPerPage() }

// muxPage reports whether each client is a page that reads its members
// multiplexed on one stream.
func (cfg *config) muxPage() bool { return len(cfg.members) > 0 && !cfg.split }

// memberOfType is the member that an event type names: the type itself,
// or what precedes its first colon ("s3" in "s3:tick"), looked up in
// index; -1 if it names none. v is the field's value, after "event:".
func memberOfType(v []byte, index map[string]int) int {
	v = bytes.TrimPrefix(v, []byte(" "))
	if i := bytes.IndexByte(v, ':'); i >= 0 {
		v = v[:i]
	}
	if m, ok := index[string(v)]; ok {
		return m
	}
	return -1
}

// memberOfNchanID is the member that nchan's multiplexed id names:
// "<time>:<tag>,<tag>,…" has one tag per channel of the request, in its
// order, "-" for a channel without a message yet, and the event's own in
// brackets ("1796655004:0,-,[1],-" is the third channel's). -1 if v is
// not such an id of n channels with one in brackets. v is the field's
// value, after "id:".
func memberOfNchanID(v []byte, n int) int {
	v = bytes.TrimPrefix(v, []byte(" "))
	i := bytes.IndexByte(v, ':')
	if i <= 0 {
		return -1
	}
	found, k := -1, 0
	for part := range bytes.SplitSeq(v[i+1:], []byte(",")) {
		if len(part) >= 2 && part[0] == '[' && part[len(part)-1] == ']' {
			if found >= 0 {
				return -1
			}
			found = k
		}
		k++
	}
	if k != n {
		return -1
	}
	return found
}

// memberEvent records event seq of the member m of c's page; m < 0 is an
// event whose member could not be told.
func (l *load) memberEvent(c *client, m int, seq uint64, stamp int64) {
	if m < 0 {
		l.foreign.Add(1)
		return
	}
	if l.measuring.Load() {
		c.memberDelivered[m].Add(1)
	}
	l.event(c, seq, stamp, &c.lasts[m])
}

// pageCounts is what -members adds to a report: the clients counted as
// pages. The report's per-client figures (RSS, kernel socket memory) are
// per page held, and its clients section counts streams.
type pageCounts struct {
	Members int  `json:"members"`         // streams per page
	Split   bool `json:"split,omitempty"` // a stream per member; else one stream per page
	Wanted  int  `json:"wanted"`
	// Held is the pages whose every stream was open at the end of the
	// window.
	Held int64 `json:"held"`
	// SilentMembers is the members of connected pages that delivered
	// nothing in the window.
	SilentMembers int64 `json:"silent_members"`
	// PerPagePerSecond is the deliveries (member events) per page held
	// per second: the members times their rate when nothing is lost.
	PerPagePerSecond float64 `json:"deliveries_per_page_per_second"`
}

// pageReport counts the pages of a run of -members at the end of its
// window of elapsed seconds; nil without -members.
func (l *load) pageReport(elapsed float64) *pageCounts {
	cfg := l.cfg
	if len(cfg.members) == 0 {
		return nil
	}
	p := &pageCounts{Members: len(cfg.members), Split: cfg.split, Wanted: cfg.clients}
	per := cfg.streamsPerPage()
	var delivered uint64
	for i := 0; i < len(l.clients); i += per {
		held := true
		for _, c := range l.clients[i : i+per] {
			held = held && c.streaming.Load()
			delivered += c.delivered.Load()
			if !c.connected.Load() {
				continue
			}
			if c.memberDelivered == nil {
				if c.delivered.Load() == 0 {
					p.SilentMembers++
				}
				continue
			}
			for m := range c.memberDelivered {
				if c.memberDelivered[m].Load() == 0 {
					p.SilentMembers++
				}
			}
		}
		if held {
			p.Held++
		}
	}
	if p.Held > 0 && elapsed > 0 {
		p.PerPagePerSecond = float64(delivered) / elapsed / float64(p.Held)
	}
	return p
}

// held is the clients held at the end of the window, and those wanted:
// pages for a run of -members, streams for any other. The per-client
// figures are per one of these.
func (r *report) held() (held int64, wanted int) {
	if r.Pages != nil {
		return r.Pages.Held, r.Pages.Wanted
	}
	return r.Clients.Held, r.Clients.Wanted
}
