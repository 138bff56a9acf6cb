package sseorigin

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func TestStampedJSON(t *testing.T) {
	sent := time.Unix(1767225600, 123456789)
	for _, size := range []int{0, 1024, 4096} {
		for seq := uint64(1); seq <= 50; seq++ {
			ev := NewStampedJSON(seq, sent, size)
			wire := ev.AppendWire(nil, "/s")
			if size >= 1024 && (len(wire) > size || len(wire) < size-20) {
				t.Errorf("size %d, event %d: %d bytes on the wire", size, seq, len(wire))
			}
			seqGot, stamp, doc, ok := splitData(ev.Data())
			if !ok || seqGot != seq || stamp != sent.UnixNano() {
				t.Fatalf("size %d, event %d: data %q does not begin with its seq and stamp", size, seq, ev.Data())
			}
			var v struct {
				Seq   uint64 `json:"seq"`
				Order struct {
					Items []struct{ SKU string } `json:"items"`
				} `json:"order"`
			}
			if err := json.Unmarshal(doc, &v); err != nil || v.Seq != seq || len(v.Order.Items) == 0 {
				t.Fatalf("size %d, event %d: not the order JSON (%v): %s", size, seq, err, doc)
			}
			if !bytes.Equal(NewStampedJSON(seq, sent, size).AppendWire(nil, ""), wire) {
				t.Fatalf("size %d, event %d: not the same document twice", size, seq)
			}
		}
	}
}

// splitData splits "seq nanos doc".
func splitData(data []byte) (seq uint64, stamp int64, doc []byte, ok bool) {
	fields := bytes.SplitN(data, []byte(" "), 3)
	if len(fields) != 3 {
		return 0, 0, nil, false
	}
	if err := json.Unmarshal(fields[0], &seq); err != nil {
		return 0, 0, nil, false
	}
	if err := json.Unmarshal(fields[1], &stamp); err != nil {
		return 0, 0, nil, false
	}
	return seq, stamp, fields[2], true
}
