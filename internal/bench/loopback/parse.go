package loopback

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// FindResult is the part of a find's answer the benchmark reads: the
// /v1/find response of a node's local API, and what `cellnode find --json`
// prints (both are node.FindResult).
type FindResult struct {
	Name      string     `json:"name"`
	Instances []Instance `json:"instances"`
	Offline   bool       `json:"offline"`
	Asked     int        `json:"asked"`
	// Served and Age say how the local API answered (ServedBy): from its
	// find cache or from a find it waited on. Set by Sidecar.Find only.
	Served Served        `json:"-"`
	Age    time.Duration `json:"-"`
}

// Served is how a local API answered a find, from its response headers.
type Served int

const (
	ServedUnknown Served = iota // no or a malformed X-Cellnode-Age-Ms
	ServedMiss                  // age 0: the API waited on a network find
	ServedHit                   // from the cache, younger than the API's findFresh (100 ms)
	ServedStale                 // from the cache, older: the API started a background refresh
)

// findFresh is the age past which the API's cache answer starts a refresh
// (node.findFresh).
const findFresh = 100 * time.Millisecond

func (s Served) String() string {
	return [...]string{"unknown", "miss", "hit", "stale"}[s]
}

// ServedBy reads the local API's X-Cellnode-Age-Ms header: 0 is a find
// the API ran and waited on (a miss, or Cache-Control: no-cache), more is
// the age of the cached result it answered with.
func ServedBy(h http.Header) (Served, time.Duration) {
	v := h.Get("X-Cellnode-Age-Ms")
	f, err := strconv.ParseFloat(v, 64)
	if v == "" || err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
		return ServedUnknown, 0
	}
	age := time.Duration(f * float64(time.Millisecond))
	switch {
	case age == 0:
		return ServedMiss, 0
	case age < findFresh:
		return ServedHit, age
	}
	return ServedStale, age
}

// Instance is one instance in a FindResult.
type Instance struct {
	Peer      string   `json:"peer"`
	Endpoints []string `json:"endpoints"`
	Reachable bool     `json:"reachable"`
}

// DecodeFind parses a find's JSON answer. An answer without an
// "instances" array is an error: it is not a find result.
func DecodeFind(data []byte) (*FindResult, error) {
	var probe struct {
		Instances json.RawMessage `json:"instances"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("loopback: find answer: %w", err)
	}
	if len(probe.Instances) == 0 || bytes.Equal(probe.Instances, []byte("null")) {
		return nil, errors.New("loopback: find answer has no instances array")
	}
	var r FindResult
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("loopback: find answer: %w", err)
	}
	return &r, nil
}

// Lists reports whether some instance in r announces endpoint.
func (r *FindResult) Lists(endpoint string) bool {
	return slices.ContainsFunc(r.Instances, func(in Instance) bool { return slices.Contains(in.Endpoints, endpoint) })
}

// Count returns how many of endpoints r lists.
func (r *FindResult) Count(endpoints []string) int {
	n := 0
	for _, ep := range endpoints {
		if r.Lists(ep) {
			n++
		}
	}
	return n
}

// Status is the part of a node's /v1/status the benchmark reads.
type Status struct {
	Peer   string `json:"peer"`
	Server bool   `json:"dht_server"`
	Peers  int    `json:"routing_table"`
	// ConnectedPeers and Connections are the host's: more connections
	// than peers are peers reached over more than one (TCP beside QUIC).
	ConnectedPeers int `json:"connected_peers"`
	Connections    int `json:"connections"`
	Cells          []struct {
		Name       string `json:"name"`
		Announcing bool   `json:"announcing"`
		Publishes  int    `json:"publishes"`
		StoredAt   int    `json:"stored_at"`
	} `json:"cells"`
}

// DecodeStatus parses a /v1/status answer; one without a peer is an error.
func DecodeStatus(data []byte) (*Status, error) {
	var s Status
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("loopback: status answer: %w", err)
	}
	if s.Peer == "" {
		return nil, errors.New("loopback: status answer has no peer")
	}
	return &s, nil
}

// BootstrapAddrs picks, from the lines `cellnode bootstrap` prints, the
// full multiaddrs (with /p2p/) on loopback (127.0.0.0/8 or ::1), in the
// order printed. It is an error when there is none: the benchmark never
// dials another address.
func BootstrapAddrs(lines []string) ([]string, error) {
	var out []string
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "/") || !strings.Contains(l, "/p2p/") {
			continue
		}
		if strings.HasPrefix(l, "/ip4/127.") || strings.HasPrefix(l, "/ip6/::1/") {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("loopback: no loopback multiaddr with /p2p/ in the bootstrap's output %q", lines)
	}
	return out, nil
}

// KV is one key and its value, as etcdctl prints them.
type KV struct{ Key, Value string }

// EtcdctlGet parses what `etcdctl get` prints in its default (simple)
// format: each key on a line, its value on the next. Values in this
// benchmark are endpoints, one line each; an odd number of lines is an
// error.
func EtcdctlGet(out []byte) ([]KV, error) {
	text := strings.TrimRight(string(out), "\n")
	if text == "" {
		return nil, nil
	}
	lines := strings.Split(text, "\n")
	if len(lines)%2 != 0 {
		return nil, fmt.Errorf("loopback: etcdctl get printed %d lines, want key and value pairs: %q", len(lines), text)
	}
	kvs := make([]KV, 0, len(lines)/2)
	for i := 0; i < len(lines); i += 2 {
		if lines[i] == "" {
			return nil, fmt.Errorf("loopback: etcdctl get: empty key on line %d", i+1)
		}
		kvs = append(kvs, KV{lines[i], lines[i+1]})
	}
	return kvs, nil
}
