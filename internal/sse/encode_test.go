package sse

import "testing"

func TestEncodeEvent(t *testing.T) {
	tests := []struct {
		name   string
		ev     Event
		withID bool
		want   string
	}{
		{"data", Event{Data: "x", HasData: true}, false, "data: x\n\n"},
		{"type", Event{Type: "t", Data: "x", HasData: true}, false, "event: t\ndata: x\n\n"},
		{"empty data", Event{Data: "", HasData: true}, false, "data:\n\n"},
		{"multi-line data", Event{Data: "a\n\nb\n", HasData: true}, false, "data: a\ndata:\ndata: b\ndata:\n\n"},
		{"leading space kept", Event{Type: " t", Data: " x", HasData: true, ID: " i"}, true, "event:  t\ndata:  x\nid:  i\n\n"},
		{"id", Event{Data: "x", HasData: true, ID: "7"}, true, "data: x\nid: 7\n\n"},
		{"empty id", Event{Data: "x", HasData: true}, true, "data: x\nid:\n\n"},
		{"id only block", Event{ID: "7", HasID: true}, true, "id: 7\n\n"},
		{"retry not written", Event{Data: "x", HasData: true, Retry: 5, HasRetry: true}, false, "data: x\n\n"},
		{"type without data kept for lenient clients", Event{Type: "t", ID: "1", HasID: true}, true, "event: t\nid: 1\n\n"},
		{"type only block", Event{Type: "t"}, false, "event: t\n\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(AppendEvent([]byte("prefix"), &tc.ev, tc.withID)); got != "prefix"+tc.want {
				t.Errorf("AppendEvent = %q, want %q", got, "prefix"+tc.want)
			}
		})
	}
	if got := string(AppendRetry(nil, 3000)); got != "retry: 3000\n\n" {
		t.Errorf("AppendRetry = %q", got)
	}
}
