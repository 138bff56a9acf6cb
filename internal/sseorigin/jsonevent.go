package sseorigin

import (
	"math/rand/v2"
	"strconv"
	"time"
)

// This file is the benchmark's realistic payload: events whose data is a
// JSON document, as applications send, so that compression can be
// measured on what it would meet in production rather than on padding.

// NewStampedJSON is NewStamped with a JSON document instead of padding:
//
//	id: 42
//	data: 42 1767225600123456789 {"event":"order.updated","seq":42,…}
//
// The document is an order update of a made-up shop: field names repeat
// from event to event, values come from small pools (names, cities,
// products, statuses) or are random (ids, prices, tracking numbers), and a
// free-text note of common words fills it up to the event's size on the
// wire. The same seq always gives the same document, sent aside.
func NewStampedJSON(seq uint64, sent time.Time, size int) *Stamped {
	b := make([]byte, 0, max(size, 64))
	b = append(b, "id: "...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, "\ndata: "...)
	data := len(b)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, sent.UnixNano(), 10)
	b = append(b, ' ')
	b = appendOrderJSON(b, seq, sent, size-len(b)-2)
	b = append(b, "\n\n"...)
	return &Stamped{seq: seq, wire: b, data: data}
}

// appendOrderJSON appends an order update of about room bytes (at least
// its fixed part, 400 to 800 bytes).
func appendOrderJSON(b []byte, seq uint64, sent time.Time, room int) []byte {
	rng := rand.New(rand.NewPCG(seq, 0x5eed))
	start := len(b)
	pick := func(pool []string) string { return pool[rng.IntN(len(pool))] }
	hex := func(n int) []byte {
		const digits = "0123456789abcdef"
		for range n {
			b = append(b, digits[rng.IntN(16)])
		}
		return b
	}
	str := func(key, value string) {
		b = append(b, '"')
		b = append(b, key...)
		b = append(b, `":"`...)
		b = append(b, value...)
		b = append(b, `",`...)
	}
	price := func() {
		b = strconv.AppendInt(b, int64(rng.IntN(300)+1), 10)
		b = append(b, '.')
		b = strconv.AppendInt(b, int64(10+rng.IntN(90)), 10)
	}

	b = append(b, `{"event":"order.`...)
	b = append(b, pick(orderEvents)...)
	b = append(b, `","seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"ts":"`...)
	b = sent.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z")
	b = append(b, `","order":{"id":"ord_`...)
	b = hex(12)
	b = append(b, `",`...)
	str("status", pick(orderStatuses))
	str("currency", pick(currencies))
	b = append(b, `"total":`...)
	price()
	b = append(b, `,"items":[`...)
	for i := range 1 + rng.IntN(4) {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"sku":"SKU-`...)
		b = strconv.AppendInt(b, int64(10000+rng.IntN(90000)), 10)
		b = append(b, `",`...)
		str("name", pick(products))
		b = append(b, `"qty":`...)
		b = strconv.AppendInt(b, int64(1+rng.IntN(5)), 10)
		b = append(b, `,"price":`...)
		price()
		b = append(b, '}')
	}
	b = append(b, `]},"customer":{"id":"cus_`...)
	b = hex(8)
	b = append(b, `",`...)
	str("name", pick(firstNames)+" "+pick(lastNames))
	str("city", pick(cities))
	b = append(b, `"tier":"`...)
	b = append(b, pick(tiers)...)
	b = append(b, `"},"shipping":{`...)
	str("carrier", pick(carriers))
	b = append(b, `"tracking":"`...)
	b = strconv.AppendInt(b, int64(rng.Uint32()), 10)
	b = strconv.AppendInt(b, int64(rng.Uint32()), 10)
	b = append(b, `","eta":"`...)
	b = sent.UTC().AddDate(0, 0, 1+rng.IntN(6)).AppendFormat(b, "2006-01-02")
	b = append(b, `"},"note":"`...)
	for first := true; len(b)-start+len(`"}`) < room; first = false {
		word := pick(noteWords)
		if !first {
			word = " " + word
		}
		if len(b)-start+len(word)+len(`"}`) > room && !first {
			break
		}
		b = append(b, word...)
	}
	return append(b, `"}`...)
}

var (
	orderEvents   = []string{"created", "updated", "paid", "shipped", "delivered", "refunded"}
	orderStatuses = []string{"pending", "paid", "packing", "shipped", "delivered", "cancelled"}
	currencies    = []string{"EUR", "USD", "GBP", "CHF"}
	tiers         = []string{"standard", "silver", "gold", "platinum"}
	carriers      = []string{"DHL", "UPS", "FedEx", "La Poste", "PostNL", "GLS"}
	products      = []string{
		"Walnut desk lamp", "Linen duvet cover", "Ceramic pour-over set", "Wool throw blanket",
		"Cast iron skillet", "Bamboo cutting board", "Glass water carafe", "Oak bookshelf",
		"Copper kettle", "Cotton bath towel", "Leather notebook", "Stoneware mug",
		"Standing desk mat", "Rattan floor basket", "Brass wall hook", "Velvet cushion",
		"Marble coaster set", "Enamel pie dish", "Steel chef knife", "Pine step stool",
		"Jute area rug", "Porcelain tea cup", "Silk pillowcase", "Cedar shoe rack",
	}
	firstNames = []string{
		"Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Dennis", "Margaret", "Donald",
		"Frances", "John", "Radia", "Tim", "Sophie", "Niklaus", "Leslie", "Hedy", "Katherine",
		"Linus", "Anita", "Guido", "Rob", "Bjarne", "Shafi", "Jean", "Karen", "Vint", "Lynn",
	}
	lastNames = []string{
		"Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Ritchie",
		"Hamilton", "Knuth", "Allen", "Backus", "Perlman", "Berners-Lee", "Wilson", "Wirth",
		"Lamport", "Lamarr", "Johnson", "Torvalds", "Borg", "van Rossum", "Pike",
		"Stroustrup", "Goldwasser", "Sammet", "Jones", "Cerf", "Conway",
	}
	cities = []string{
		"Lyon", "Porto", "Leipzig", "Ghent", "Bologna", "Krakow", "Utrecht", "Bilbao",
		"Malmo", "Graz", "Tampere", "Aarhus", "Brno", "Cork", "Nantes", "Basel",
	}
	noteWords = []string{
		"please", "leave", "the", "parcel", "at", "back", "door", "with", "neighbour",
		"ring", "bell", "twice", "before", "after", "noon", "morning", "evening", "gift",
		"wrap", "no", "invoice", "in", "box", "call", "on", "arrival", "fragile", "handle",
		"care", "deliver", "to", "reception", "office", "closed", "weekend", "monday",
		"friday", "thank", "you", "for", "your", "order", "we", "will", "ship", "as",
		"soon", "possible", "item", "is", "back", "ordered", "and", "expected", "next",
		"week", "customer", "asked", "about", "return", "policy", "replacement", "sent",
		"same", "day", "express", "upgrade", "applied", "loyalty", "discount", "code",
		"used", "address", "updated", "by", "support", "agent", "confirmed", "phone",
	}
)
