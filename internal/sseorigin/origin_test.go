package sseorigin

import (
	"slices"
	"testing"
	"time"
)

// TestPublishDropsFullQueue checks that Publish never waits for a
// connection: one whose queue is full is dropped, keeping what it had
// queued, and the others go on.
func TestPublishDropsFullQueue(t *testing.T) {
	o := New(Options{Queue: 2})
	defer o.Close()
	_, slow := o.subscribe(0)
	_, fast := o.subscribe(0)
	var fastGot []uint64
	for seq := uint64(1); seq <= 3; seq++ {
		o.Publish(NewStamped(seq, time.Now(), 0))
		fastGot = append(fastGot, (<-fast).Seq())
	}
	var slowGot []uint64
	for ev := range slow { // ends: the slow queue was closed when it was dropped
		slowGot = append(slowGot, ev.Seq())
	}
	if want := []uint64{1, 2}; !slices.Equal(slowGot, want) {
		t.Errorf("the dropped connection got %v, want %v", slowGot, want)
	}
	if want := []uint64{1, 2, 3}; !slices.Equal(fastGot, want) {
		t.Errorf("the connection that kept up got %v, want %v", fastGot, want)
	}
	if got, want := o.Stats(), (Stats{Dropped: 1, Events: 3}); got != want {
		t.Errorf("stats are %+v, want %+v", got, want)
	}
}

// TestSubscribeReplay checks which kept events a connection is given for
// its Last-Event-ID.
func TestSubscribeReplay(t *testing.T) {
	o := New(Options{Queue: 1, History: 3})
	defer o.Close()
	for seq := uint64(1); seq <= 5; seq++ {
		o.Publish(NewStamped(seq, time.Now(), 0))
	}
	o.Publish(tickEvent{}) // no sequence number: not kept
	for _, tc := range []struct {
		after uint64
		want  []uint64
	}{
		{0, nil},               // no Last-Event-ID: nothing
		{1, []uint64{3, 4, 5}}, // older than the history: all of it
		{3, []uint64{4, 5}},
		{5, nil},
		{9, nil},
	} {
		replay, ch := o.subscribe(tc.after)
		var got []uint64
		for _, ev := range replay {
			got = append(got, ev.Seq())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("after %d: replayed %v, want %v", tc.after, got, tc.want)
		}
		o.unsubscribe(ch)
	}
}

// TestSubscribeAfterClose checks that a closed origin takes no connection,
// and that Close can be called again.
func TestSubscribeAfterClose(t *testing.T) {
	o := New(Options{})
	_, ch := o.subscribe(0)
	o.Close()
	if _, ok := <-ch; ok {
		t.Error("an open queue got an event after Close")
	}
	if _, ch := o.subscribe(0); ch != nil {
		t.Error("subscribe after Close returned a queue")
	}
	o.Close()
	o.Publish(tickEvent{}) // no one to send it to, and no panic
}

// tickEvent is an event without a sequence number, the same on every
// stream.
type tickEvent struct{}

// Seq returns 0: a tick has no id.
func (tickEvent) Seq() uint64 { return 0 }

// AppendWire appends the tick.
func (tickEvent) AppendWire(dst []byte, _ string) []byte {
	return append(dst, "event: tick\ndata: tick\n\n"...)
}

// streamEvent is an event whose data is the stream it is sent on.
type streamEvent struct{ seq uint64 }

// Seq returns the event's sequence number.
func (e streamEvent) Seq() uint64 { return e.seq }

// AppendWire appends the event, whose data is stream.
func (e streamEvent) AppendWire(dst []byte, stream string) []byte {
	dst = append(dst, "data: "...)
	dst = append(dst, stream...)
	return append(dst, "\n\n"...)
}
