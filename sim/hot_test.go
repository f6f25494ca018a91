package sim

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// smallHot shrinks sim/testdata/hot-name.json: 30 nodes, k = 8, links of
// 2 ms, 100 finds/s for 4 simulated seconds, a find cache of 1 s and a
// bound of 50 requests per server per second.
func smallHot(t *testing.T) Scenario {
	t.Helper()
	sc, err := LoadScenario(filepath.Join("testdata", "hot-name.json"))
	if err != nil {
		t.Fatal(err)
	}
	h := *sc.Hot
	sc.Nodes, sc.BucketSize, sc.Latency = 30, 8, 2*time.Millisecond
	h.FindsPerSecond, h.Duration, h.Parallel, h.FindCache, h.MaxServerRate = 100, 4*time.Second, 16, time.Second, 50
	sc.Hot = &h
	return sc
}

// TestHotName runs the hot-name scenario, shrunk, with and without the
// caches. With them, every find succeeds and no server takes more than the
// bound in any simulated second after the cold start, whether the finds
// come from every node or from one. Without them, the same finds from
// every node break the bound, and from one node they run into the
// storers' per-peer rate limit (some then fail; how many depends on how
// many other storers the finder finds in time): the caches are what the
// figures measure.
func TestHotName(t *testing.T) {
	if testing.Short() {
		t.Skip("builds four 30-node networks")
	}
	run := func(t *testing.T, finders int, caches bool) *HotReport {
		t.Helper()
		sc := smallHot(t)
		sc.Hot.Finders = finders
		if !caches {
			sc.Hot.FindCache, sc.Hot.PathCache = 0, false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		rep, err := Run(ctx, sc)
		if err != nil {
			t.Fatal(err)
		}
		h := rep.Hot
		if h == nil || h.Finds != 400 || h.Seconds != 4 || h.FindsPerSecond != 100 {
			t.Fatalf("hot report %+v, want 400 finds over 4 simulated seconds", h)
		}
		t.Logf("finders %d, caches %v: success %.3f, %d network finds, %d cache hits, %d path-cache records; storer GETs/s %+v; steady peak %g msgs/s; %d rate-limited",
			h.Finders, caches, h.Success, h.NetworkFinds, h.CacheHits, h.PathCacheStored, h.StorerGets, h.SteadyPeakMessages, h.RateLimited)
		return h
	}
	t.Run("every node", func(t *testing.T) {
		h := run(t, 0, true)
		if h.Success != 1 || !h.WithinBound || h.CacheHits == 0 || h.NetworkFinds+int(h.CacheHits) != h.Finds {
			t.Errorf("with caches: success %g, steady peak %g msgs/s (bound %g), %d cache hits of %d finds",
				h.Success, h.SteadyPeakMessages, h.Bound, h.CacheHits, h.Finds)
		}
		if off := run(t, 0, false); off.WithinBound {
			t.Errorf("without caches the bound held (steady peak %g msgs/s): it measures nothing", off.SteadyPeakMessages)
		}
	})
	t.Run("one node", func(t *testing.T) {
		h := run(t, 1, true)
		if h.Success != 1 || h.RateLimited != 0 || !h.WithinBound {
			t.Errorf("with caches: success %g, %d rate-limited, steady peak %g msgs/s", h.Success, h.RateLimited, h.SteadyPeakMessages)
		}
		if off := run(t, 1, false); off.RateLimited == 0 {
			t.Errorf("without caches, no request of one node's 100 finds/s was rate-limited: the storers' limit did not bite")
		}
	})
}

// TestHotValidate: each bad value of the hot-name fields is refused with
// an error naming it.
func TestHotValidate(t *testing.T) {
	for _, tc := range []struct {
		name, json, want string
	}{
		{"no rate", `{"hot":{}}`, "hot.finds_per_second 0"},
		{"rate too high", `{"hot":{"finds_per_second":100001}}`, "hot.finds_per_second 100001"},
		{"fractional duration", `{"hot":{"finds_per_second":10,"duration":"1500ms"}}`, "hot.duration 1.5s"},
		{"duration too long", `{"hot":{"finds_per_second":10,"duration":"11m"}}`, "hot.duration 11m0s"},
		{"negative parallel", `{"hot":{"finds_per_second":10,"parallel":-1}}`, "hot.parallel -1"},
		{"too many finders", `{"nodes":10,"hot":{"finds_per_second":10,"finders":11}}`, "hot.finders 11"},
		{"negative find cache", `{"hot":{"finds_per_second":10,"find_cache":"-1s"}}`, "hot.find_cache -1s"},
		{"find cache past a record's life", `{"hot":{"finds_per_second":10,"find_cache":"61s"}}`, "hot.find_cache 1m1s"},
		{"negative bound", `{"hot":{"finds_per_second":10,"max_server_rate":-1}}`, "hot.max_server_rate -1"},
		{"baseline", `{"baseline":true,"hot":{"finds_per_second":10}}`, "set store alone"},
		{"unknown field", `{"hot":{"finds_per_second":10,"rate":3}}`, "unknown field"},
		{"duration not a string", `{"hot":{"finds_per_second":10,"duration":5}}`, "duration string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseScenario([]byte(tc.json))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one containing %q", err, tc.want)
			}
			if strings.HasPrefix(tc.want, "hot.") && !errors.Is(err, ErrBadScenario) {
				t.Errorf("err %v is not ErrBadScenario", err)
			}
		})
	}
	sc, err := LoadScenario(filepath.Join("testdata", "hot-name.json"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := sc.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseScenario(b)
	if err != nil || *back.Hot != *sc.Hot {
		t.Fatalf("round trip: %+v, %v; want %+v", back.Hot, err, sc.Hot)
	}
}
