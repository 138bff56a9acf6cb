package ssefanout

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The browser tests: a real EventSource, in headless Chromium, reading
// streams through sse_fanout. Run them alone with
//
//	go test -race -run Browser ./...

// browserScript is an origin stream with every kind of block an
// EventSource distinguishes, in the line-end and field forms that trip
// parsers up. It ends with an "end" event.
const browserScript = "\xEF\xBB\xBF" + // a BOM at the stream start, dropped
	": a comment, invisible\n" +
	"data: plain\n\n" +
	"event: named\ndata: one\n\n" +
	"data: line 1\ndata: line 2\ndata:\ndata: line 4\n\n" + // multi-line, an empty line inside
	"data\n\n" + // a field without colon: empty data, which still fires
	"data:\n\n" +
	"id: 1\ndata: with id\n\n" +
	"data: inherits id 1\n\n" +
	"id: 2\n\n" + // moves the cursor, fires nothing
	"data: after an id-only block\n\n" +
	"event: named\n\n" + // no data: fires nothing, and the type is reset
	"data: ünïcødé ✓ 日本語 🎉\n\n" +
	"event: ünï\ndata: named in unicode\n\n" +
	"data: \xff\xfe invalid bytes\n\n" + // decoded as U+FFFD by the browser
	"retry: 500\n\n" +
	"data:  two leading spaces\n\n" +
	"data:no space\n\n" +
	"id: 3\r\nevent: named\r\ndata: crlf\r\n\r\n" +
	"id: 4\rdata: cr only\r\r" +
	"event: message\ndata: explicitly a message\n\n" +
	"unknown: field\ndata: a:b:c\n\n" +
	"id\ndata: the id is reset\n\n" +
	"id: 5\x00nul\ndata: an id with NUL is ignored\n\n" +
	"id: 6\n" +
	"event: end\ndata: end\n\n"

// browserScriptNames are the event types browserScript uses.
var browserScriptNames = []string{"named", "ünï", "end"}

// browserScriptWant is what the page's listeners must see of
// browserScript, by the WHATWG rules.
var browserScriptWant = []string{
	"src 0 open readyState=1",
	`src 0 message "message" data="plain" lastEventId="" readyState=1`,
	`src 0 named "named" data="one" lastEventId="" readyState=1`,
	`src 0 message "message" data="line 1\nline 2\n\nline 4" lastEventId="" readyState=1`,
	`src 0 message "message" data="" lastEventId="" readyState=1`,
	`src 0 message "message" data="" lastEventId="" readyState=1`,
	`src 0 message "message" data="with id" lastEventId="1" readyState=1`,
	`src 0 message "message" data="inherits id 1" lastEventId="1" readyState=1`,
	`src 0 message "message" data="after an id-only block" lastEventId="2" readyState=1`,
	`src 0 message "message" data="ünïcødé ✓ 日本語 🎉" lastEventId="2" readyState=1`,
	`src 0 named "ünï" data="named in unicode" lastEventId="2" readyState=1`,
	"src 0 message \"message\" data=\"\ufffd\ufffd invalid bytes\" lastEventId=\"2\" readyState=1",
	`src 0 message "message" data=" two leading spaces" lastEventId="2" readyState=1`,
	`src 0 message "message" data="no space" lastEventId="2" readyState=1`,
	`src 0 named "named" data="crlf" lastEventId="3" readyState=1`,
	`src 0 message "message" data="cr only" lastEventId="4" readyState=1`,
	`src 0 message "message" data="explicitly a message" lastEventId="4" readyState=1`,
	`src 0 message "message" data="a:b:c" lastEventId="4" readyState=1`,
	`src 0 message "message" data="the id is reset" lastEventId="" readyState=1`,
	`src 0 message "message" data="an id with NUL is ignored" lastEventId="" readyState=1`,
	`src 0 named "end" data="end" lastEventId="6" readyState=1`,
}

// TestBrowserSeesTheSameEventsThroughTheProxy has the browser read one
// stream with every kind of event from the origin directly, then through
// sse_fanout: its record must be the same, and the spec's.
func TestBrowserSeesTheSameEventsThroughTheProxy(t *testing.T) {
	origin := newTestOrigin(t)
	direct := directOrigin(t, origin)
	newProbe(t, t.Name())
	base := startCaddy(t, proxySite(t, t.Name(), origin.URL(), "heartbeat 1m"))
	tab := newBrowser(t)

	record := func(base string) []string {
		navigate(t, tab, recorderURL(base, browserScriptNames, "/s/all"))
		up := origin.nextConn(t)
		up.send(browserScript)
		waitPage(t, tab, "the end event", hasData("end"))
		return recordStrings(pageRecord(t, tab))
	}
	fromOrigin := record(direct)
	fromProxy := record(base)

	if !slices.Equal(fromOrigin, browserScriptWant) {
		t.Errorf("from the origin, the page saw:\n%s\nwant (the WHATWG rules):\n%s",
			strings.Join(fromOrigin, "\n"), strings.Join(browserScriptWant, "\n"))
	}
	if !slices.Equal(fromProxy, fromOrigin) {
		t.Errorf("through the proxy, the page saw:\n%s\nfrom the origin directly:\n%s",
			strings.Join(fromProxy, "\n"), strings.Join(fromOrigin, "\n"))
	}
}

// pageIDs returns the ids of the message events the page saw, and fails
// the test unless each event's data is "event <its id>".
func pageIDs(t *testing.T, rec []pageEntry) []int {
	t.Helper()
	var ids []int
	for _, e := range fired(rec) {
		n, err := strconv.Atoi(deref(e.LastEventID))
		if err != nil || deref(e.Data) != fmt.Sprintf("event %d", n) {
			t.Fatalf("unexpected event %s\nrecord:\n%s", e, fmtRecord(rec))
		}
		ids = append(ids, n)
	}
	return ids
}

// seq returns from, from+1, ..., to.
func seq(from, to int) []int {
	s := make([]int, 0, to-from+1)
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}
