package node

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht/record"
)

// rawAPI sends one request to a unix socket (or http://addr) and returns
// the status code and the answer's "error" (or its whole body).
func rawAPI(t testing.TB, addr, method, path, body string, hdr ...string) (int, string) {
	t.Helper()
	code, msg, err := tryAPI(addr, method, path, body, hdr...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return code, msg
}

func tryAPI(addr, method, path, body string, hdr ...string) (int, string, error) {
	network, target, host := "unix", addr, "cellnode"
	if rest, ok := strings.CutPrefix(addr, "http://"); ok {
		network, target, host = "tcp", rest, rest
	}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, target)
	}}}
	req, err := http.NewRequest(method, "http://"+host+path, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct{ Error string }
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return resp.StatusCode, e.Error, nil
	}
	return resp.StatusCode, string(b), nil
}

// delegation signs a delegation of name to node by a fresh publisher key
// and returns it as PEM text, with the publisher's public key.
func delegation(t testing.TB, name string, node ed25519.PublicKey, notAfter time.Time) (string, ed25519.PublicKey) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(nil)
	d, err := record.SignDelegation(priv, record.Delegation{Name: name, Node: node, Issued: time.Now().Add(-time.Hour), NotAfter: notAfter})
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: DelegationPEM, Bytes: d.Bytes()})), pub
}

func jsonString(s string) string { b, _ := json.Marshal(s); return string(b) }

// TestAgentBadRegistrations: every bad registration is a 400 that says
// what is wrong, and changes nothing: the cell registered before is still
// announced as it was.
func TestAgentBadRegistrations(t *testing.T) {
	c := newCluster(t, nil)
	a := c.agent(c.agentConfig())
	api := a.APIAddr()
	keep := service(t).Addr().String()
	if code, msg := rawAPI(t, api, "PUT", "/v1/cells/acme/keep", `{"endpoint":"`+keep+`","check":{"interval":"50ms"}}`); code != 201 {
		t.Fatalf("good registration: %d %s", code, msg)
	}
	waitFor(t, "the first publish", func() bool { c, _ := a.Cell("acme/keep"); return c.Status.Announcing })
	other, _ := delegation(t, "acme/keep", c.boot.PublicKey(), time.Now().Add(time.Hour))
	wrongCell, _ := delegation(t, "acme/other", a.Node().PublicKey(), time.Now().Add(time.Hour))
	expired, _ := delegation(t, "acme/keep", a.Node().PublicKey(), time.Now().Add(-time.Minute))
	for _, tc := range []struct {
		name, path, body, want string
	}{
		{"endpoint not host:port", "/v1/cells/acme/keep", `{"endpoint":"nope"}`, "want HOST:PORT"},
		{"port 0", "/v1/cells/acme/keep", `{"endpoint":"127.0.0.1:0"}`, "bad port"},
		{"empty unix path", "/v1/cells/acme/keep", `{"endpoint":"unix:"}`, "empty socket path"},
		{"no endpoint", "/v1/cells/acme/keep", `{}`, "endpoint is required"},
		{"unknown field", "/v1/cells/acme/keep", `{"endpoint":"127.0.0.1:9","port":9}`, `unknown field "port"`},
		{"not JSON", "/v1/cells/acme/keep", `endpoint=127.0.0.1:9`, "want a JSON registration"},
		{"two names", "/v1/cells/acme/keep", `{"name":"acme/other","endpoint":"127.0.0.1:9"}`, "the body names acme/other, the path acme/keep"},
		{"bad name", "/v1/cells/ACME/keep", `{"endpoint":"127.0.0.1:9"}`, "invalid cell name"},
		{"delegation for another node", "/v1/cells/acme/keep", `{"endpoint":"127.0.0.1:9","delegation":` + jsonString(other) + `}`,
			"is for node " + c.boot.ID().String() + ", not this agent's node " + a.Node().ID().String()},
		{"delegation for another cell", "/v1/cells/acme/keep", `{"endpoint":"127.0.0.1:9","delegation":` + jsonString(wrongCell) + `}`, "it is for acme/other, not acme/keep"},
		{"expired delegation", "/v1/cells/acme/keep", `{"endpoint":"127.0.0.1:9","delegation":` + jsonString(expired) + `}`, "expired"},
		{"delegation not base64", "/v1/cells/acme/keep", `{"endpoint":"127.0.0.1:9","delegation":"%%%"}`, "want a CELLNODE DELEGATION PEM block or base64"},
		{"delegation not a delegation", "/v1/cells/acme/keep", `{"endpoint":"127.0.0.1:9","delegation":"AAAA"}`, "invalid delegation"},
		{"delegation_file", "/v1/cells/acme/keep", `{"endpoint":"127.0.0.1:9","delegation_file":"/etc/passwd"}`, "delegation_file is for config files"},
		{"check too often", "/v1/cells/acme/keep", `{"endpoint":"127.0.0.1:9","check":{"interval":"1ms"}}`, "check interval 1ms"},
		{"check not a duration", "/v1/cells/acme/keep", `{"endpoint":"127.0.0.1:9","check":{"interval":"soon"}}`, "want a duration string"},
		{"check a number", "/v1/cells/acme/keep", `{"endpoint":"127.0.0.1:9","check":{"interval":2}}`, "want a duration string"},
		{"region too long", "/v1/cells/acme/keep", `{"endpoint":"127.0.0.1:9","region":"` + strings.Repeat("r", 65) + `"}`, "region longer than"},
		{"manifest not a commit", "/v1/cells/acme/keep", `{"endpoint":"127.0.0.1:9","manifest":"nope"}`, "manifest"},
		{"body too large", "/v1/cells/acme/keep", `{"endpoint":"127.0.0.1:9","region":"` + strings.Repeat("r", 70<<10) + `"}`, "at most 65536 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, msg := rawAPI(t, api, "PUT", tc.path, tc.body)
			if code != 400 || !strings.Contains(msg, tc.want) {
				t.Fatalf("got %d %q, want 400 saying %q", code, msg, tc.want)
			}
		})
	}
	cells := a.Cells()
	if len(cells) != 1 || cells[0].Endpoint != keep || !cells[0].Status.Announcing {
		t.Fatalf("the good registration did not survive the bad ones: %+v", cells)
	}
	if code, _ := rawAPI(t, api, "DELETE", "/v1/cells/acme/nothing", ""); code != 404 {
		t.Fatalf("deregister a cell never registered: %d", code)
	}
	if code, _ := rawAPI(t, api, "POST", "/v1/agent/reload", ""); code != 400 {
		t.Fatalf("reload with no config directory: %d", code)
	}

	// A delegation for this node and cell is taken, and shown.
	good, pub := delegation(t, "acme/keep", a.Node().PublicKey(), time.Now().Add(time.Hour))
	code, msg := rawAPI(t, api, "PUT", "/v1/cells/acme/keep", `{"endpoint":"`+keep+`","check":{"interval":"50ms"},"delegation":`+jsonString(good)+`}`)
	if code != 200 || !strings.Contains(msg, `"result":"replaced"`) || !strings.Contains(msg, base64.StdEncoding.EncodeToString(pub)) {
		t.Fatalf("delegated registration: %d %s", code, msg)
	}
}

// TestAgentWatchBadInput: bad watch parameters are 400s that say why; an
// index the agent never gave returns the current set at once.
func TestAgentWatchBadInput(t *testing.T) {
	c := newCluster(t, nil)
	a := c.agent(c.agentConfig())
	api := a.APIAddr()
	for _, tc := range []struct{ query, want string }{
		{"", "invalid cell name"},
		{"name=ACME/x", "invalid cell name"},
		{"name=acme/x&index=abc", `index "abc": want the index of an earlier answer`},
		{"name=acme/x&index=-1", `index "-1"`},
		{"name=acme/x&index=1e3", `index "1e3"`},
		{"name=acme/x&index=99999999999999999999999", "want the index"},
		{"name=acme/x&wait=forever", `wait "forever"`},
		{"name=acme/x&wait=-1s", `wait "-1s"`},
		{"name=acme/x&idx=3", `unknown parameter "idx"`},
		{"name=acme/x&publisher=zz", "publisher"},
	} {
		if code, msg := rawAPI(t, api, "GET", "/v1/watch?"+tc.query, ""); code != 400 || !strings.Contains(msg, tc.want) {
			t.Errorf("watch?%s: %d %q, want 400 saying %q", tc.query, code, msg, tc.want)
		}
	}
	an := announce(t, c.node(nil, t.TempDir()), "acme/x", service(t).Addr().String())
	defer an.Stop(context.Background())
	cl := dialAgent(t, a)
	var cur *WatchResult
	waitFor(t, "the instance", func() bool {
		var err error
		cur, err = cl.Watch(context.Background(), "acme/x", 0, 0, FindOptions{})
		return err == nil && len(cur.Instances) == 1
	})
	// An index the agent never gave (a bogus one, or one from before a
	// restart with another set) returns at once.
	bogus, err := cl.Watch(context.Background(), "acme/x", cur.Index^1, time.Hour, FindOptions{})
	if err != nil || bogus.Index != cur.Index {
		t.Fatalf("bogus index: %+v, %v", bogus, err)
	}
	// The current index with a short wait: the same set once it passes.
	same, err := cl.Watch(context.Background(), "acme/x", cur.Index, 20*time.Millisecond, FindOptions{})
	if err != nil || same.Index != cur.Index || len(same.Instances) != 1 {
		t.Fatalf("timed-out watch: %+v, %v", same, err)
	}
}

// TestAgentManyWatches: 1,000 watches block at once on the agent's limit;
// the next is refused with 429 while every other request is answered;
// one change wakes all 1,000, and their slots come back.
func TestAgentManyWatches(t *testing.T) {
	const watches = 1000
	c := newCluster(t, nil)
	cfg := c.agentConfig()
	cfg.MaxWatches = watches
	a := c.agent(cfg)
	cl := dialAgent(t, a)
	ctx := context.Background()
	first, err := cl.Watch(ctx, "acme/busy", 0, 0, FindOptions{})
	if err != nil || len(first.Instances) != 0 {
		t.Fatalf("first watch: %+v, %v", first, err)
	}
	results := make(chan *WatchResult, watches)
	var wg sync.WaitGroup
	// In batches of 100: a unix socket's listen backlog refuses (EAGAIN)
	// connections past it, and a client would have to retry.
	for b := range watches / 100 {
		for range 100 {
			wg.Go(func() {
				c, err := DialAPI(a.APIAddr()) // a connection each
				if err != nil {
					t.Error(err)
					return
				}
				res, err := c.Watch(ctx, "acme/busy", first.Index, 5*time.Minute, FindOptions{})
				if err != nil {
					t.Error(err)
					return
				}
				results <- res
			})
		}
		waitFor(t, "a batch of watches to block", func() bool { return a.Info().Watches == (b+1)*100 })
	}
	waitFor(t, "1,000 blocked watches", func() bool { return a.Info().Watches == watches })
	if code, msg := rawAPI(t, a.APIAddr(), "GET", "/v1/watch?name=acme/other", ""); code != 429 || !strings.Contains(msg, "1000 watches are blocked already") {
		t.Fatalf("watch past the limit: %d %q", code, msg)
	}
	if code, _ := rawAPI(t, a.APIAddr(), "GET", "/v1/status", ""); code != 200 {
		t.Fatalf("status while 1,000 watches block: %d", code)
	}
	if code, _ := rawAPI(t, a.APIAddr(), "GET", "/v1/find?name=acme/busy&timeout=5s", ""); code != 200 {
		t.Fatalf("find while 1,000 watches block: %d", code)
	}
	if a.Info().Watched != 1 {
		t.Fatalf("1,000 watches of one name keep %d names fresh, want 1", a.Info().Watched)
	}
	an := announce(t, c.node(nil, t.TempDir()), "acme/busy", service(t).Addr().String())
	defer an.Stop(ctx)
	wg.Wait()
	close(results)
	n := 0
	for res := range results {
		if res.Index == first.Index || len(res.Instances) != 1 {
			t.Fatalf("woken watch: %+v", res)
		}
		n++
	}
	if n != watches || a.Info().Watches != 0 {
		t.Fatalf("%d watches returned, %d still counted", n, a.Info().Watches)
	}
}

// TestAgentSlowReader: a client that sends requests and never reads the
// answers loses its connection once a write has waited WriteTimeout; the
// agent answers everyone else meanwhile.
func TestAgentSlowReader(t *testing.T) {
	c := newCluster(t, nil)
	cfg := c.agentConfig()
	cfg.WriteTimeout = 200 * time.Millisecond
	a := c.agent(cfg)
	conn, err := net.Dial("unix", a.APIAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	done := make(chan error, 1)
	go func() {
		w := bufio.NewWriter(conn)
		for {
			if _, err := w.WriteString("GET /v1/agent HTTP/1.1\r\nHost: cellnode\r\n\r\n"); err != nil {
				done <- err
				return
			}
			if err := w.Flush(); err != nil {
				done <- err
				return
			}
		}
	}()
	for range 20 {
		if code, _ := rawAPI(t, a.APIAddr(), "GET", "/v1/status", ""); code != 200 {
			t.Fatalf("status beside a client that never reads: %d", code)
		}
	}
	if err := <-done; !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the stalled connection ended with %v, want it closed by the agent", err)
	}
}

// TestAgentTCPAPI: the loopback TCP API reads and never writes, and only
// for requests that name a loopback host.
func TestAgentTCPAPI(t *testing.T) {
	c := newCluster(t, nil)
	cfg := c.agentConfig()
	cfg.APITCP = "127.0.0.1:0"
	a := c.agent(cfg)
	addr := "http://" + a.APITCPAddr()
	if code, msg := rawAPI(t, addr, "GET", "/v1/status", ""); code != 200 || !strings.Contains(msg, a.Node().ID().String()) {
		t.Fatalf("status over TCP: %d %s", code, msg)
	}
	if code, msg := rawAPI(t, addr, "PUT", "/v1/cells/acme/x", `{"endpoint":"127.0.0.1:9"}`); code != 403 || !strings.Contains(msg, "read-only") {
		t.Fatalf("write over TCP: %d %s", code, msg)
	}
	if code, msg := rawAPI(t, addr, "GET", "/v1/status", "", "Host", "evil.example:8640"); code != 403 || !strings.Contains(msg, "loopback host") {
		t.Fatalf("a foreign Host over TCP: %d %s", code, msg)
	}
	cl, err := DialAPI(addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Cells(context.Background()); err != nil {
		t.Fatalf("the client over TCP: %v", err)
	}
	for _, bad := range []string{"0.0.0.0:8640", "192.0.2.1:80", "localhost"} {
		cfg := c.agentConfig()
		cfg.APITCP = bad
		if _, err := NewAgent(cfg); err == nil {
			t.Errorf("TCP API on %s accepted", bad)
		}
	}
}

// TestAgentPermissions: the shared socket lets another user read and
// refuses its writes (SO_PEERCRED); with a group, only its members can
// connect. It runs a copy of this test binary as other users, so it needs
// root.
func TestAgentPermissions(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a client as another user")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(sockDir(t), "node.test")
	os.Chmod(filepath.Dir(bin), 0o755)
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	asUser := func(sock string, uid, gid uint32) string {
		cmd := exec.Command(bin, "-test.run=^TestHelperAPIClient$")
		cmd.Env = []string{"CELLNODE_TEST_HELPER=" + sock}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("client as uid %d: %v\n%s", uid, err, out)
		}
		line, _, _ := strings.Cut(string(out), "\n")
		return line
	}

	c := newCluster(t, nil)
	a := c.agent(c.agentConfig())
	fi, err := os.Stat(a.APIAddr())
	if err != nil || fi.Mode().Perm() != 0o666 {
		t.Fatalf("shared socket mode %v, %v", fi.Mode().Perm(), err)
	}
	if got := asUser(a.APIAddr(), 65534, 65534); got != "read 200 write 403" {
		t.Fatalf("another user: %s", got)
	}
	if code, _ := rawAPI(t, a.APIAddr(), "PUT", "/v1/cells/acme/x", `{"endpoint":"127.0.0.1:9"}`); code != 201 {
		t.Fatalf("the agent's own user cannot write: %d", code)
	}

	cfg := c.agentConfig()
	cfg.APIGroup = "nogroup"
	g := c.agent(cfg)
	fi, _ = os.Stat(g.APIAddr())
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o660 || st.Gid != 65534 {
		t.Fatalf("group socket: mode %v gid %d", fi.Mode().Perm(), st.Gid)
	}
	if got := asUser(g.APIAddr(), 65534, 65534); got != "read 200 write 403" {
		t.Fatalf("a member of the group: %s", got)
	}
	if got := asUser(g.APIAddr(), 65533, 65533); !strings.HasPrefix(got, "connect failed") {
		t.Fatalf("a user outside the group: %s", got)
	}
}

// TestHelperAPIClient is the client TestAgentPermissions runs as another
// user; it does nothing in a normal run.
func TestHelperAPIClient(t *testing.T) {
	sock := os.Getenv("CELLNODE_TEST_HELPER")
	if sock == "" {
		t.Skip("helper for TestAgentPermissions")
	}
	rc, _, err := tryAPI(sock, "GET", "/v1/status", "")
	if err != nil {
		fmt.Println("connect failed:", err)
		os.Exit(0)
	}
	wc, msg, err := tryAPI(sock, "PUT", "/v1/cells/acme/intruder", `{"endpoint":"127.0.0.1:9"}`)
	if err != nil {
		fmt.Println("write failed:", err)
		os.Exit(0)
	}
	fmt.Printf("read %d write %d\n%s\n", rc, wc, msg)
	os.Exit(0)
}
