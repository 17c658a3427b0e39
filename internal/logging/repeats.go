// Package logging holds the slog handler every Ferry logger goes through:
// it keeps repeated messages from flooding the log, so that an outage
// (a broker down, every client dialing it) stays readable.
package logging

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// detailKeys are attributes that vary between repeats of one event (the
// error text, the call or record it happened to) and so do not tell two
// events apart; so do durations and times (a backoff, an age). The first
// record of a window shows them; the summary counts the rest.
var detailKeys = map[string]bool{"err": true, "error": true, "correlation_id": true, "offset": true}

// maxKinds bounds the kinds of message tracked at once. Past it, records
// that start a new kind are written without tracking, so memory stays
// bounded when messages differ in every line (ids, offsets).
const maxKinds = 4096

// Repeats is a slog.Handler that writes the first record of each kind in a
// window and counts the rest. A kind is the level, the message, the
// logger's own attributes and groups, and the record's attributes except
// err, error, durations and times. When a window in which repeats were counted ends, one
// summary record is written: the last repeat, with repeated=N (how many
// were not written) and in_last=the window. Records below info are never
// held back: debug logging is asked for to see everything.
//
// Close writes the pending summaries and stops the timers; records handled
// after it pass through.
type Repeats struct {
	inner  slog.Handler
	prefix string // the logger's attributes and groups, as text
	st     *repeatState
}

type repeatState struct {
	window time.Duration
	now    func() time.Time

	mu     sync.Mutex
	kinds  map[string]*kind
	closed bool
	// swept is when kinds was last swept: at most once a second, so a
	// flood of records that each start a kind does not scan every kind
	// on every line.
	swept time.Time
	// writing counts summaries being written by timers.
	writing sync.WaitGroup
}

// kind is one kind of record within its window.
type kind struct {
	start    time.Time
	repeated int
	last     slog.Record
	inner    slog.Handler // the handler the last repeat goes to
	timer    *time.Timer
}

var _ slog.Handler = (*Repeats)(nil)

// NewRepeats returns a handler that writes to inner at most one record of
// each kind per window, followed by a summary of the repeats.
func NewRepeats(inner slog.Handler, window time.Duration) *Repeats {
	return &Repeats{inner: inner, st: &repeatState{window: window, now: time.Now, kinds: map[string]*kind{}}}
}

// Enabled reports whether inner handles the level.
func (h *Repeats) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

// WithAttrs returns a handler whose attributes are part of every kind it
// sees, sharing h's windows.
func (h *Repeats) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.prefix)
	for _, a := range as {
		writeAttr(&b, "", a)
	}
	return &Repeats{inner: h.inner.WithAttrs(as), prefix: b.String(), st: h.st}
}

// WithGroup returns a handler whose group is part of every kind it sees.
func (h *Repeats) WithGroup(name string) slog.Handler {
	return &Repeats{inner: h.inner.WithGroup(name), prefix: h.prefix + "[" + name + "]", st: h.st}
}

// Handle writes r unless a record of its kind was written less than a
// window ago; then it counts r for that window's summary.
func (h *Repeats) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelInfo {
		return h.inner.Handle(ctx, r)
	}
	key := h.key(r)
	st := h.st
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return h.inner.Handle(ctx, r)
	}
	now := st.now()
	if k := st.kinds[key]; k != nil && now.Sub(k.start) < st.window {
		k.repeated++
		k.last, k.inner = r.Clone(), h.inner
		if k.timer == nil {
			// The summary is due when the window ends, whether or not
			// another repeat comes.
			k.timer = time.AfterFunc(k.start.Add(st.window).Sub(now), func() { st.flush(key, k) })
		}
		st.mu.Unlock()
		return nil
	}
	// A window that ended with repeats whose timer has not run yet is
	// summarized here, before the record that opens the next one.
	var (
		due      slog.Record
		dueInner slog.Handler
	)
	if k := st.kinds[key]; k != nil && k.repeated > 0 {
		k.timer.Stop()
		due, dueInner = summary(k, st.window), k.inner
	}
	delete(st.kinds, key)
	if len(st.kinds) >= maxKinds && now.Sub(st.swept) >= time.Second {
		st.sweepLocked(now)
		st.swept = now
	}
	if len(st.kinds) < maxKinds {
		st.kinds[key] = &kind{start: now}
	}
	st.mu.Unlock()
	if dueInner != nil {
		_ = dueInner.Handle(ctx, due)
	}
	return h.inner.Handle(ctx, r)
}

// flush writes k's summary if k is still the current window of key.
func (st *repeatState) flush(key string, k *kind) {
	st.mu.Lock()
	if st.kinds[key] != k || k.repeated == 0 {
		st.mu.Unlock()
		return
	}
	delete(st.kinds, key)
	r, inner := summary(k, st.window), k.inner
	// Close waits for this write, so nothing is written after it returned.
	st.writing.Add(1)
	st.mu.Unlock()
	defer st.writing.Done()
	_ = inner.Handle(context.Background(), r)
}

// sweepLocked forgets the kinds whose window ended without repeats; the
// timers of the others still write their summaries.
func (st *repeatState) sweepLocked(now time.Time) {
	for key, k := range st.kinds {
		if k.timer == nil && now.Sub(k.start) >= st.window {
			delete(st.kinds, key)
		}
	}
}

// Close writes every pending summary and stops tracking: later records
// pass through. It is safe to call more than once.
func (h *Repeats) Close() {
	st := h.st
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return
	}
	st.closed = true
	var pending []*kind
	for key, k := range st.kinds {
		if k.timer != nil {
			k.timer.Stop()
		}
		if k.repeated > 0 {
			pending = append(pending, k)
		}
		delete(st.kinds, key)
	}
	st.mu.Unlock()
	st.writing.Wait()
	for _, k := range pending {
		_ = k.inner.Handle(context.Background(), summary(k, st.window))
	}
}

// summary is the last repeat of k, saying how many were held back.
func summary(k *kind, window time.Duration) slog.Record {
	r := k.last.Clone()
	r.AddAttrs(slog.Int("repeated", k.repeated), slog.Duration("in_last", window))
	return r
}

// key names r's kind.
func (h *Repeats) key(r slog.Record) string {
	var b strings.Builder
	b.WriteString(r.Level.String())
	b.WriteByte(0)
	b.WriteString(r.Message)
	b.WriteByte(0)
	b.WriteString(h.prefix)
	r.Attrs(func(a slog.Attr) bool {
		writeAttr(&b, "", a)
		return true
	})
	return b.String()
}

// writeAttr appends a's key and value, unless a is a detail.
func writeAttr(b *strings.Builder, group string, a slog.Attr) {
	if group == "" && detailKeys[a.Key] {
		return
	}
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindDuration, slog.KindTime:
		return
	case slog.KindGroup:
		for _, ga := range v.Group() {
			writeAttr(b, group+a.Key+".", ga)
		}
		return
	}
	fmt.Fprintf(b, "%s%s=%v\x00", group, a.Key, v.Any())
}
