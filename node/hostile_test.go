package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/internal/footprint"
	"github.com/cellnode/cellnode/internal/safefile"
	"github.com/libp2p/go-libp2p/core/peer"
)

// apiNode starts a node with the local API and no network.
func apiNode(t *testing.T) (*Node, string) {
	t.Helper()
	home := t.TempDir()
	n, err := New(Config{Home: home, API: true, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, RuntimeDir: t.TempDir(),
		DHT: dht.Config{Mode: dht.ModeServer, DisableAutoRefresh: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n, home
}

// hostileConns is how many idle connections the hostile local client
// opens: CELLNODE_HOSTILE_FULL=1 takes the 21,000 (raise the
// descriptor limit first).
func hostileConns() int {
	if os.Getenv("CELLNODE_HOSTILE_FULL") != "" {
		return 21000
	}
	return 2000
}

// TestHostileLocalClient: a local client opens thousands of connections to
// the API socket and leaves them idle. The node accepts at most
// apiMaxConns of them (the rest wait in the listen queue, holding no
// descriptor of the node's), so its descriptors stay bounded; once the
// client goes, the API answers again.
func TestHostileLocalClient(t *testing.T) {
	_, home := apiNode(t)
	sock := filepath.Join(home, APISocket)
	fds0, heap0 := footprint.FDs(), footprint.Heap()
	var rl syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	want := min(hostileConns(), int(rl.Cur)-fds0-200)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range want {
		c, err := net.DialTimeout("unix", sock, 100*time.Millisecond)
		if err != nil {
			continue // the listen queue is full: that is the bound working
		}
		conns = append(conns, c)
	}
	// Let the server accept what it will: wait until the descriptors stop
	// growing past what the client holds.
	var held int
	waitFor(t, "the server to accept its share", func() bool {
		prev := held
		held = footprint.FDs() - fds0 - len(conns)
		time.Sleep(50 * time.Millisecond)
		return held == footprint.FDs()-fds0-len(conns) && held == prev
	})
	heap := footprint.Heap()
	t.Logf("%d idle connections opened (%d asked): the node holds %d descriptors for them (cap %d); heap %d → %d MB",
		len(conns), want, held, apiMaxConns, heap0/footprint.MB, heap/footprint.MB)
	if held > apiMaxConns+16 {
		t.Errorf("the node holds %d descriptors for %d idle connections, cap %d", held, len(conns), apiMaxConns)
	}
	if heap > heap0+64*footprint.MB {
		t.Errorf("heap grew from %d to %d MB", heap0/footprint.MB, heap/footprint.MB)
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	cl, err := Dial(home)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the API to answer again", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := cl.Status(ctx)
		return err == nil
	})
}

// TestAPIPublisherCap: a find naming more publishers than a manifest may
// list is refused before any work, and one with thousands is refused by
// the header limit; neither costs the node memory.
func TestAPIPublisherCap(t *testing.T) {
	_, home := apiNode(t)
	cl, err := Dial(home)
	if err != nil {
		t.Fatal(err)
	}
	heap0 := footprint.Heap()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pubs := func(n int) []ed25519.PublicKey {
		out := make([]ed25519.PublicKey, n)
		for i := range out {
			out[i] = ed25519.PublicKey(fmt.Appendf(nil, "%032d", i))
		}
		return out
	}
	if _, err := cl.Find(ctx, "acme/exchange", FindOptions{Publishers: pubs(apiMaxPublishers + 1)}); err == nil || !strings.Contains(err.Error(), "at most 64") {
		t.Fatalf("65 publishers: err = %v", err)
	}
	for range 5 {
		if _, err := cl.Find(ctx, "acme/exchange", FindOptions{Publishers: pubs(9000)}); err == nil {
			t.Fatal("9,000 publishers accepted")
		}
	}
	if heap := footprint.Heap(); heap > heap0+32*footprint.MB {
		t.Errorf("heap grew from %d to %d MB", heap0/footprint.MB, heap/footprint.MB)
	}
	if _, err := cl.Find(ctx, "acme/exchange", FindOptions{Publishers: pubs(2)}); err != nil {
		t.Fatalf("2 publishers: %v", err)
	}
}

// TestAPIBusy: past apiMaxFinds running finds, a find waits for a slot
// until its timeout and then gets a clear "busy".
func TestAPIBusy(t *testing.T) {
	n, home := apiNode(t)
	for range apiMaxFinds {
		n.api.finds <- struct{}{}
	}
	cl, err := Dial(home)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var res FindResult
	err = cl.get(ctx, "/v1/find?name=acme/exchange&timeout=200ms", &res, false)
	if err == nil || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("find with every slot taken: %v", err)
	}
	<-n.api.finds
	if _, err := cl.Find(ctx, "acme/exchange", FindOptions{}); err != nil {
		t.Fatalf("find with a slot free: %v", err)
	}
}

// TestAPIRequestTimeout: a request's timeout parameter cannot exceed
// apiMaxTimeout.
func TestAPIRequestTimeout(t *testing.T) {
	for _, c := range []struct {
		q    string
		want time.Duration
	}{{"", apiMaxTimeout}, {"timeout=1s", time.Second}, {"timeout=1000h", apiMaxTimeout}, {"timeout=-1s", apiMaxTimeout}} {
		r, _ := http.NewRequest(http.MethodGet, "http://cellnode/v1/find?"+c.q, nil)
		ctx, cancel := requestContext(r)
		dl, _ := ctx.Deadline()
		cancel()
		if got := time.Until(dl); got > c.want || got < c.want-time.Minute/2 {
			t.Errorf("%q: deadline in %v, want %v", c.q, got, c.want)
		}
	}
}

// TestUnsafeHome: a home that others can write to, or that another user
// owns, is refused with its path and the fix; the API client refuses such
// a home's socket, and one another user owns.
func TestUnsafeHome(t *testing.T) {
	open := t.TempDir()
	os.Chmod(open, 0o777)
	_, err := New(Config{Home: open, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, NoRuntimeDir: true})
	if !errors.Is(err, safefile.ErrUnsafe) || !strings.Contains(err.Error(), open) || !strings.Contains(err.Error(), "chmod") {
		t.Fatalf("New with a 0777 home: %v", err)
	}
	if _, err := LoadIdentity(open); !errors.Is(err, safefile.ErrUnsafe) {
		t.Fatalf("LoadIdentity with a 0777 home: %v", err)
	}

	// A node's home made writable by others while it runs: the client
	// stops trusting its socket.
	_, home := apiNode(t)
	if _, err := Dial(home); err != nil {
		t.Fatal(err)
	}
	os.Chmod(home, 0o777)
	if _, err := Dial(home); !errors.Is(err, safefile.ErrUnsafe) || errors.Is(err, ErrNoLocalNode) {
		t.Fatalf("Dial into a 0777 home: %v", err)
	}
	os.Chmod(home, 0o700)
	if os.Getuid() != 0 {
		t.Skip("changing a socket's owner needs root")
	}
	sock := filepath.Join(home, APISocket)
	if err := os.Lchown(sock, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := Dial(home); !errors.Is(err, safefile.ErrUnsafe) || !strings.Contains(err.Error(), "uid 65534") {
		t.Fatalf("Dial to another user's socket: %v", err)
	}
	os.Lchown(sock, 0, 0)
	other := t.TempDir()
	os.Chown(other, 65534, 65534)
	if _, err := New(Config{Home: other, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, NoRuntimeDir: true}); !errors.Is(err, safefile.ErrUnsafe) {
		t.Fatalf("New with another user's home: %v", err)
	}
}

// TestIdentityRace: first runs racing on one new home agree on one
// identity (the issue saw different peer IDs 5 times in 30).
func TestIdentityRace(t *testing.T) {
	for round := range 30 {
		home := filepath.Join(t.TempDir(), "new")
		const racers = 3
		ids := make([]peer.ID, racers)
		errs := make([]error, racers)
		var wg sync.WaitGroup
		for i := range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sk, err := LoadIdentity(home)
				if err == nil {
					ids[i], err = peer.IDFromPrivateKey(sk)
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		for i := range racers {
			if errs[i] != nil {
				t.Fatalf("round %d: %v", round, errs[i])
			}
			if ids[i] != ids[0] {
				t.Fatalf("round %d: peer IDs %v", round, ids)
			}
		}
		sk, err := LoadIdentity(home)
		if id, _ := peer.IDFromPrivateKey(sk); err != nil || id != ids[0] {
			t.Fatalf("round %d: the key on disk is not the one printed", round)
		}
	}
}

// TestSpecialStateFiles: an identity.key or seq that is a FIFO or a
// device is refused at once, naming it.
func TestSpecialStateFiles(t *testing.T) {
	for _, name := range []string{KeyFile, SeqFile} {
		for _, kind := range []string{"fifo", "/dev/zero"} {
			home := t.TempDir()
			path := filepath.Join(home, name)
			if kind == "fifo" {
				syscall.Mkfifo(path, 0o600)
			} else {
				os.Symlink(kind, path)
			}
			var err error
			if name == KeyFile {
				_, err = LoadIdentity(home)
			} else {
				_, err = NewSequencer(path, nil)
			}
			if !errors.Is(err, safefile.ErrNotRegular) || !strings.Contains(err.Error(), path) {
				t.Errorf("%s as %s: %v", name, kind, err)
			}
		}
	}
}
