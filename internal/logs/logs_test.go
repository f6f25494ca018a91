package logs

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"

	golog "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/gologshim"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// lines decodes JSON lines.
func lines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(s), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON line: %q", l)
		}
		out = append(out, m)
	}
	return out
}

func TestParseLevels(t *testing.T) {
	for _, tc := range []struct {
		in      string
		def     slog.Level
		sub     map[string]slog.Level
		wantErr bool
	}{
		{"", slog.LevelError, nil, false},
		{"info", slog.LevelInfo, nil, false},
		{"warn,dht=debug", slog.LevelWarn, map[string]slog.Level{"dht": slog.LevelDebug}, false},
		{"dht=debug, swarm2=info", slog.LevelError, map[string]slog.Level{"dht": slog.LevelDebug, "swarm2": slog.LevelInfo}, false},
		{"loud", 0, nil, true},
		{"dht=loud", 0, nil, true},
	} {
		lv, err := ParseLevels(tc.in)
		if (err != nil) != tc.wantErr {
			t.Fatalf("%q: err %v", tc.in, err)
		}
		if err != nil {
			continue
		}
		if lv.Default != tc.def || len(lv.Subsystem) != len(tc.sub) {
			t.Fatalf("%q: %+v", tc.in, lv)
		}
		for k, v := range tc.sub {
			if lv.Subsystem[k] != v {
				t.Fatalf("%q: %s at %v", tc.in, k, lv.Subsystem[k])
			}
		}
	}
}

func TestNewHandlerBadFormat(t *testing.T) {
	if _, err := NewHandler(&bytes.Buffer{}, "xml", slog.LevelInfo); err == nil || !strings.Contains(err.Error(), "text or json") {
		t.Fatalf("format xml: %v", err)
	}
}

// TestSwitch: a logger made from the switch before Set writes where Set
// points it, with its attributes; levels apply by subsystem; fx lines go.
func TestSwitch(t *testing.T) {
	var first, second bytes.Buffer
	h1, _ := NewHandler(&first, "json", slog.LevelDebug)
	sw := NewSwitch(h1, Levels{Default: slog.LevelError, Subsystem: map[string]slog.Level{"dht": slog.LevelDebug}})
	swarm := slog.New(sw).With("logger", "swarm2")
	dht := slog.New(sw).With("logger", "dht").WithGroup("q")
	fx := slog.New(sw).With("logger", "p2p-config").With("system", "fx")

	swarm.Error("one", "peer", "12D3")
	h2, _ := NewHandler(&second, "json", slog.LevelDebug)
	sw.Set(h2)
	swarm.Warn("below the default level")
	swarm.Error("two")
	dht.Debug("three", "key", "k")
	fx.Error("OnStart hook failed")

	if got := lines(t, first.String()); len(got) != 1 || got[0]["msg"] != "one" || got[0]["logger"] != "swarm2" || got[0]["peer"] != "12D3" {
		t.Fatalf("before Set: %v", got)
	}
	got := lines(t, second.String())
	if len(got) != 2 || got[0]["msg"] != "two" || got[1]["msg"] != "three" || got[1]["logger"] != "dht" {
		t.Fatalf("after Set: %v", got)
	}
	if q, _ := got[1]["q"].(map[string]any); q["key"] != "k" {
		t.Fatalf("group lost: %v", got[1])
	}
}

// TestRoute: once routed, go-log's loggers (kad-dht's) and go-libp2p's
// write JSON lines with the logger's name under "logger" into the
// switch's handler, and a failing libp2p.New leaves no fx lines.
func TestRoute(t *testing.T) {
	var buf syncBuf
	h, _ := NewHandler(&buf, "json", slog.LevelDebug)
	sw := NewSwitch(h, Levels{Default: slog.LevelError})
	Route(sw)
	if Routed() != sw {
		t.Fatal("Routed does not return the routed switch")
	}
	golog.Logger("dht").Errorw("lookup failed", "peer", "12D3KooW", "attempts", 3)
	golog.Logger("dht").Debugw("not shown at level error")
	gologshim.Logger("swarm2").Error("dial failed", "err", "refused")
	if _, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/udp/0/quic")); err == nil {
		t.Fatal("libp2p listened on the old QUIC draft")
	}
	got := lines(t, buf.String())
	if len(got) != 2 {
		t.Fatalf("want 2 lines, got %d:\n%s", len(got), buf.String())
	}
	if got[0]["logger"] != "dht" || got[0]["msg"] != "lookup failed" || got[0]["peer"] != "12D3KooW" || got[0]["level"] != "ERROR" {
		t.Fatalf("go-log line: %v", got[0])
	}
	if got[1]["logger"] != "swarm2" || got[1]["msg"] != "dial failed" || got[1]["err"] != "refused" {
		t.Fatalf("gologshim line: %v", got[1])
	}
}
