package node

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	"github.com/miekg/dns"
)

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// unixService listens on a unix socket until the test ends.
func unixService(t *testing.T) string {
	t.Helper()
	path := filepath.Join(sockDir(t), "svc.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go acceptAndClose(ln)
	return path
}

func sources(a *Agent) map[string]string {
	m := map[string]string{}
	for _, c := range a.Cells() {
		m[c.Name] = filepath.Base(c.Source)
	}
	return m
}

// TestAgentConfigDir: the cells of a config directory are announced at
// start; the API cannot change them; a reload applies a changed
// directory, and a directory with any error changes nothing.
func TestAgentConfigDir(t *testing.T) {
	c := newCluster(t, nil)
	dir := t.TempDir()
	cfg := c.agentConfig()
	cfg.ConfigDir = dir
	// The delegation needs the agent's node key: make its identity first.
	sk, err := LoadIdentity(cfg.Node.Home)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := sk.GetPublic().Raw()
	deleg, pub := delegation(t, "acme/three", raw, time.Now().Add(time.Hour))
	writeFile(t, filepath.Join(dir, "three.delegation"), deleg)
	one, two, three := service(t).Addr().String(), unixService(t), service(t).Addr().String()
	writeFile(t, filepath.Join(dir, "a.json"), `{"cells": [
		{"name": "acme/one", "endpoint": "`+one+`", "check": {"interval": "50ms"}},
		{"name": "acme/two", "endpoint": "unix:`+two+`", "region": "here"}]}`)
	writeFile(t, filepath.Join(dir, "b.json"), `{"cells": [{"name": "acme/three", "endpoint": "`+three+`", "delegation_file": "three.delegation"}]}`)
	writeFile(t, filepath.Join(dir, "README.txt"), "not a config file")
	writeFile(t, filepath.Join(dir, ".editor.json"), "{broken")
	a := c.agent(cfg)
	if got := sources(a); len(got) != 3 || got["acme/one"] != "a.json" || got["acme/two"] != "a.json" || got["acme/three"] != "b.json" {
		t.Fatalf("cells at start: %v", got)
	}
	if ci, _ := a.Cell("acme/three"); ci.Publisher != base64.StdEncoding.EncodeToString(pub) {
		t.Fatalf("acme/three's delegation: %+v", ci)
	}
	api := a.APIAddr()
	if code, msg := rawAPI(t, api, "PUT", "/v1/cells/acme/one", `{"endpoint":"127.0.0.1:9"}`); code != 409 || !strings.Contains(msg, "a.json") {
		t.Fatalf("API over a config cell: %d %s", code, msg)
	}
	if code, _ := rawAPI(t, api, "DELETE", "/v1/cells/acme/one", ""); code != 409 {
		t.Fatalf("API deregistering a config cell: %d", code)
	}
	apiCell := service(t).Addr().String()
	if code, _ := rawAPI(t, api, "PUT", "/v1/cells/acme/api", `{"endpoint":"`+apiCell+`"}`); code != 201 {
		t.Fatalf("API cell: %d", code)
	}
	// A unix-socket cell is announced (and watched) but has no DNS record.
	waitFor(t, "acme/two announced", func() bool { ci, _ := a.Cell("acme/two"); return ci.Status.Announcing })
	r := dnsQuery(t, a.DNSAddr(), "_two._tcp.acme.cell.", dns.TypeSRV)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Fatalf("DNS for a unix-socket cell: %v", r)
	}

	ctx := context.Background()
	before := sources(a)
	for _, tc := range []struct{ name, file, body, want string }{
		{"syntax", "b.json", `{"cells": [`, "b.json"},
		{"unknown field", "b.json", `{"cell": []}`, `unknown field "cell"`},
		{"two values", "b.json", `{} {}`, "more than one JSON value"},
		{"defined twice", "c.json", `{"cells": [{"name": "acme/one", "endpoint": "127.0.0.1:9"}]}`, "acme/one is defined in"},
		{"bad endpoint", "c.json", `{"cells": [{"name": "acme/x", "endpoint": "nowhere"}]}`, "want HOST:PORT"},
		{"missing delegation file", "c.json", `{"cells": [{"name": "acme/x", "endpoint": "127.0.0.1:9", "delegation_file": "none"}]}`, "delegation_file"},
		{"delegation for another node", "c.json", `{"cells": [{"name": "acme/three", "endpoint": "127.0.0.1:9", "delegation": ` +
			jsonString(func() string {
				d, _ := delegation(t, "acme/three", c.boot.PublicKey(), time.Now().Add(time.Hour))
				return d
			}()) + `}]}`,
			"not this agent's node"},
		{"bad publisher key", "c.json", `{"trust": {"acme/one": ["nope"]}}`, "trust: acme/one"},
		{"no publisher key", "c.json", `{"trust": {"acme/one": []}}`, "lists no publisher key"},
		{"bad trusted name", "c.json", `{"trust": {"Acme": ["` + base64.StdEncoding.EncodeToString(pub) + `"]}}`, "invalid cell name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.file)
			old, _ := os.ReadFile(path)
			writeFile(t, path, tc.body)
			defer func() {
				if old != nil {
					writeFile(t, path, string(old))
				} else {
					os.Remove(path)
				}
			}()
			_, err := a.Reload(ctx)
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("reload: %v, want ErrConfig saying %q", err, tc.want)
			}
			if got := sources(a); !mapsEqual(got, before) {
				t.Fatalf("a failed reload changed the cells: %v, was %v", got, before)
			}
			if code, msg := rawAPI(t, api, "POST", "/v1/agent/reload", ""); code != 400 || !strings.Contains(msg, tc.want) {
				t.Fatalf("reload through the API: %d %s", code, msg)
			}
		})
	}

	// acme/one changes, acme/two goes, acme/three stays, acme/api is now
	// defined by a file (which wins), acme/four is new.
	oneAgain, four := service(t).Addr().String(), service(t).Addr().String()
	writeFile(t, filepath.Join(dir, "a.json"), `{"cells": [{"name": "acme/one", "endpoint": "`+oneAgain+`"}]}`)
	writeFile(t, filepath.Join(dir, "c.json"), `{"cells": [{"name": "acme/api", "endpoint": "`+apiCell+`"},
		{"name": "acme/four", "endpoint": "`+four+`"}], "trust": {"acme/one": ["`+base64.StdEncoding.EncodeToString(pub)+`"]}}`)
	res, err := a.Reload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Created, []string{"acme/four"}) || !slices.Equal(res.Replaced, []string{"acme/one"}) ||
		!slices.Equal(res.Removed, []string{"acme/two"}) || !slices.Equal(res.Unchanged, []string{"acme/api", "acme/three"}) || res.Trusted != 1 {
		t.Fatalf("reload: %+v", res)
	}
	if got := sources(a); got["acme/api"] != "c.json" || got["acme/one"] != "a.json" || len(got) != 4 {
		t.Fatalf("cells after the reload: %v", got)
	}
	if ci, _ := a.Cell("acme/one"); ci.Endpoint != oneAgain {
		t.Fatalf("acme/one not replaced: %+v", ci)
	}
	if info := a.Info(); len(info.Trust["acme/one"]) != 1 {
		t.Fatalf("trust after the reload: %+v", info.Trust)
	}

	// An agent cannot start on a bad directory, and leaves nothing behind.
	bad := t.TempDir()
	writeFile(t, filepath.Join(bad, "x.json"), `{"cells": [{"name": "acme/x"}]}`)
	cfg2 := c.agentConfig()
	cfg2.ConfigDir = bad
	if _, err := NewAgent(cfg2); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "endpoint is required") {
		t.Fatalf("NewAgent on a bad directory: %v", err)
	}
	if _, err := os.Stat(cfg2.API); !os.IsNotExist(err) {
		t.Fatalf("a failed start left its socket: %v", err)
	}
	cfg2.ConfigDir = filepath.Join(bad, "missing")
	if _, err := NewAgent(cfg2); !errors.Is(err, ErrConfig) {
		t.Fatalf("NewAgent on a missing directory: %v", err)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestAgentTrust: with a cell's publishers pinned in the config
// directory, DNS and watches serve only the instances they delegated, as
// find --publisher does; unpinned, every valid instance; a watch can name
// its own publishers.
func TestAgentTrust(t *testing.T) {
	c := newCluster(t, nil)
	delegated, open := c.node(nil, t.TempDir()), c.node(nil, t.TempDir())
	deleg, pub := delegation(t, "acme/pay", delegated.PublicKey(), time.Now().Add(time.Hour))
	d, err := ParseDelegation(deleg)
	if err != nil {
		t.Fatal(err)
	}
	dl := service(t)
	a1, err := delegated.Announce(Announcement{Name: "acme/pay", Endpoint: dl.Addr().String(), Delegation: d, CheckInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer a1.Stop(context.Background())
	announce(t, open, "acme/pay", service(t).Addr().String())

	dir := t.TempDir()
	key := base64.StdEncoding.EncodeToString(pub)
	writeFile(t, filepath.Join(dir, "trust.json"), `{"trust": {"acme/pay": ["`+key+`"]}}`)
	cfg := c.agentConfig()
	cfg.ConfigDir = dir
	a := c.agent(cfg)
	cl := dialAgent(t, a)
	ctx := context.Background()
	var w *WatchResult
	waitFor(t, "the trusted instance", func() bool {
		w, err = cl.Watch(ctx, "acme/pay", 0, 0, FindOptions{})
		return err == nil && len(w.Instances) == 1 && w.Untrusted == 1
	})
	if in := w.Instances[0]; !w.Pinned || in.Peer != delegated.ID().String() || !in.Trusted || in.Publisher != key {
		t.Fatalf("pinned watch: %+v", w)
	}
	_, port, _ := net.SplitHostPort(dl.Addr().String())
	r := dnsQuery(t, a.DNSAddr(), "_pay._tcp.acme.cell.", dns.TypeSRV)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.SRV).Port != uint16(must(strconv.Atoi(port))) {
		t.Fatalf("pinned DNS: %v", r)
	}
	all, err := cl.Watch(ctx, "acme/pay", 0, 0, FindOptions{Publishers: []ed25519.PublicKey{pub}, All: true})
	if err != nil || len(all.Instances) != 2 {
		t.Fatalf("watch with publisher and all: %+v, %v", all, err)
	}
	// Unpinned by a reload: both instances, in DNS too.
	writeFile(t, filepath.Join(dir, "trust.json"), `{}`)
	if _, err := a.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both instances in DNS once unpinned", func() bool {
		return len(dnsQuery(t, a.DNSAddr(), "_pay._tcp.acme.cell.", dns.TypeSRV).Answer) == 2
	})
	// A cell nobody announces.
	if r := dnsQuery(t, a.DNSAddr(), "_nobody._tcp.acme.cell.", dns.TypeSRV); r.Rcode != dns.RcodeNameError {
		t.Fatalf("unknown cell: %v", r)
	}
}

// TestAgentWatchExpiry: an instance that dies without a withdrawal leaves
// the watched set when its record expires (60 s + skew on the node's
// clock), and the blocked watch wakes.
func TestAgentWatchExpiry(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	c := newCluster(t, clk.Now)
	victim := c.node(nil, t.TempDir())
	an := announce(t, victim, "acme/mortal", service(t).Addr().String())
	a := c.agent(c.agentConfig())
	cl := dialAgent(t, a)
	ctx := context.Background()
	var w *WatchResult
	waitFor(t, "the instance", func() bool {
		var err error
		w, err = cl.Watch(ctx, "acme/mortal", 0, 0, FindOptions{})
		return err == nil && len(w.Instances) == 1
	})
	freeze(victim, an)
	victim.Close()
	done := make(chan *WatchResult, 1)
	go func() {
		res, err := cl.Watch(ctx, "acme/mortal", w.Index, 5*time.Minute, FindOptions{})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	clk.Add(record.MaxLifetime + record.MaxSkew + time.Millisecond)
	if res := <-done; res == nil || len(res.Instances) != 0 {
		t.Fatalf("after expiry: %+v", res)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
