// Package logs builds cellnode's log handlers (text or JSON, on log/slog)
// and routes the logs of go-libp2p and of go-log's users, such as kad-dht,
// into them, so that one process writes one stream in one format with
// stable keys: time, level, msg, logger (the library's subsystem, for
// libp2p's and kad-dht's lines), then the record's own attributes (ours:
// "peer", "cell", "cid", "err").
//
// libp2p's loggers are process-wide and pick their handler once, on their
// first line; Route therefore installs a Switch, a handler whose
// destination can be changed later (when the command line has been
// parsed), and Routed returns it. That Switch is the package's only
// state, as process-wide as the loggers it serves.
package logs

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Formats are the values of --log-format.
var Formats = []string{"text", "json"}

// NewHandler returns a handler writing to w in format ("text", the
// default for "", or "json") at level.
func NewHandler(w io.Writer, format string, level slog.Leveler) (slog.Handler, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "", "text":
		return slog.NewTextHandler(w, opts), nil
	case "json":
		return slog.NewJSONHandler(w, opts), nil
	}
	return nil, fmt.Errorf("logs: format %q: want text or json", format)
}

// Levels are the levels at which libraries' subsystems log: Default, or
// the level named for the subsystem (the "logger" attribute).
type Levels struct {
	Default   slog.Level
	Subsystem map[string]slog.Level
}

// ParseLevels reads levels in go-log's GOLOG_LOG_LEVEL syntax:
// "error,dht=debug,swarm2=info" (a bare level sets Default). "" means
// Default error.
func ParseLevels(s string) (Levels, error) {
	lv := Levels{Default: slog.LevelError}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, level, found := strings.Cut(item, "=")
		if !found {
			name, level = "", item
		}
		var l slog.Level
		if err := l.UnmarshalText([]byte(level)); err != nil {
			return Levels{}, fmt.Errorf("logs: level %q: want debug, info, warn or error", item)
		}
		if name == "" {
			lv.Default = l
			continue
		}
		if lv.Subsystem == nil {
			lv.Subsystem = map[string]slog.Level{}
		}
		lv.Subsystem[name] = l
	}
	return lv, nil
}

func (lv Levels) enabled(subsystem string, l slog.Level) bool {
	if min, ok := lv.Subsystem[subsystem]; ok {
		return l >= min
	}
	return l >= lv.Default
}

// Switch is a slog.Handler that forwards to a handler that Set can
// replace at any time; handlers derived from it with WithAttrs and
// WithGroup follow the replacement. It drops records below the Levels of
// their subsystem, and the lines of go-libp2p's dependency injection
// (system=fx), which only repeat the error that libp2p.New returns. It is
// safe for concurrent use.
type Switch struct {
	cur    atomic.Pointer[slog.Handler]
	levels atomic.Pointer[Levels]
}

// NewSwitch returns a Switch forwarding to h, at levels.
func NewSwitch(h slog.Handler, levels Levels) *Switch {
	s := &Switch{}
	s.Set(h)
	s.SetLevels(levels)
	return s
}

// Set makes the switch forward to h from now on.
func (s *Switch) Set(h slog.Handler) { s.cur.Store(&h) }

// SetLevels replaces the levels.
func (s *Switch) SetLevels(lv Levels) { s.levels.Store(&lv) }

func (s *Switch) Enabled(ctx context.Context, l slog.Level) bool {
	return view{s: s}.Enabled(ctx, l)
}
func (s *Switch) Handle(ctx context.Context, r slog.Record) error { return view{s: s}.Handle(ctx, r) }
func (s *Switch) WithAttrs(as []slog.Attr) slog.Handler           { return view{s: s}.WithAttrs(as) }
func (s *Switch) WithGroup(name string) slog.Handler              { return view{s: s}.WithGroup(name) }

// view is a Switch with attributes and groups added, applied to the
// current destination on each record.
type view struct {
	s         *Switch
	ops       []op
	subsystem string
	drop      bool
}

type op struct {
	attrs []slog.Attr
	group string
}

func (v view) Enabled(_ context.Context, l slog.Level) bool {
	return !v.drop && v.s.levels.Load().enabled(v.subsystem, l)
}

func (v view) Handle(ctx context.Context, r slog.Record) error {
	if v.drop {
		return nil
	}
	h := *v.s.cur.Load()
	for _, o := range v.ops {
		if o.group != "" {
			h = h.WithGroup(o.group)
		} else {
			h = h.WithAttrs(o.attrs)
		}
	}
	if !h.Enabled(ctx, r.Level) {
		return nil
	}
	return h.Handle(ctx, r)
}

func (v view) WithAttrs(as []slog.Attr) slog.Handler {
	for _, a := range as {
		switch {
		case a.Key == "logger":
			v.subsystem = a.Value.String()
		case a.Key == "system" && a.Value.String() == "fx":
			v.drop = true
		}
	}
	v.ops = append(slices.Clip(v.ops), op{attrs: as})
	return v
}

func (v view) WithGroup(name string) slog.Handler {
	if name == "" {
		return v
	}
	v.ops = append(slices.Clip(v.ops), op{group: name})
	return v
}

var (
	routeOnce sync.Once
	routed    atomic.Pointer[Switch]
)

// Route sends go-libp2p's loggers (gologshim) and go-log's (kad-dht's,
// zap underneath) to s, at the levels of GOLOG_LOG_LEVEL (go-log's own
// variable; default error, as libp2p's warnings are mostly about peers
// going away, which is routine). It must run before libp2p logs anything
// (main does it first); later calls do nothing.
func Route(s *Switch) {
	routeOnce.Do(func() {
		if lv, err := ParseLevels(os.Getenv("GOLOG_LOG_LEVEL")); err == nil {
			s.SetLevels(lv)
		}
		routeLibraries(s)
		routed.Store(s)
	})
}

// Routed returns the Switch that Route installed, nil before.
func Routed() *Switch { return routed.Load() }
