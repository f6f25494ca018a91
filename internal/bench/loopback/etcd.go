package loopback

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// InstallEtcd runs the install script (internal/bench/etcd.sh), which
// installs Debian's etcd-server and etcd-client with apt-get when etcd or
// etcdctl is missing. Its error says why they could not be installed.
func InstallEtcd(ctx context.Context, script string) error {
	out, err := exec.CommandContext(ctx, "sh", script).CombinedOutput()
	if err != nil {
		return fmt.Errorf("loopback: %s: %w\n%s", script, err, tail(string(out), 2000))
	}
	for _, bin := range []string{"etcd", "etcdctl"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("loopback: %s ran, but %w", script, err)
		}
	}
	return nil
}

// Etcd is a single-member etcd on two free loopback ports, its data in a
// directory of its own, and a Go client connected to it.
type Etcd struct {
	Proc     *Proc
	Endpoint string // http://127.0.0.1:PORT, the client URL
	Client   *clientv3.Client
	Version  string // what `etcd --version` printed first
}

// StartEtcd starts etcd with its data and log under dir and waits until
// it answers a get. etcd runs with its defaults otherwise (its write-ahead
// log is synced to disk on every write).
func StartEtcd(ctx context.Context, dir string) (*Etcd, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	e := &Etcd{Endpoint: client}
	if out, err := exec.CommandContext(ctx, "etcd", "--version").Output(); err == nil {
		e.Version, _, _ = strings.Cut(strings.TrimSpace(string(out)), "\n")
	}
	args := []string{
		"--name", "bench", "--data-dir", filepath.Join(dir, "etcd-data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "bench=" + peer, "--initial-cluster-state", "new",
	}
	if e.Proc, err = StartProc("etcd", "etcd", args, nil, filepath.Join(dir, "etcd.log")); err != nil {
		return nil, err
	}
	e.Client, err = clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		e.Proc.Stop(time.Second)
		return nil, fmt.Errorf("loopback: etcd client: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		gctx, gcancel := context.WithTimeout(wctx, time.Second)
		_, err := e.Client.Get(gctx, "/")
		gcancel()
		if err == nil {
			return e, nil
		}
		select {
		case <-e.Proc.Done():
			e.Client.Close()
			return nil, fmt.Errorf("loopback: etcd exited: %v\n%s", err, e.Proc.Tail(2000))
		case <-wctx.Done():
			e.Close()
			return nil, fmt.Errorf("loopback: etcd not answering: %w\n%s", err, e.Proc.Tail(2000))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Register is what a sidecar does with etcd: grant a lease of ttl, put
// key=value under it, then get key to see it visible. It returns the lease
// and how long the three calls took.
func (e *Etcd) Register(ctx context.Context, key, value string, ttl time.Duration) (clientv3.LeaseID, time.Duration, error) {
	t0 := time.Now()
	l, err := e.Client.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return 0, 0, fmt.Errorf("loopback: etcd lease grant: %w", err)
	}
	if _, err := e.Client.Put(ctx, key, value, clientv3.WithLease(l.ID)); err != nil {
		return 0, 0, fmt.Errorf("loopback: etcd put: %w", err)
	}
	g, err := e.Client.Get(ctx, key)
	d := time.Since(t0)
	if err != nil {
		return 0, 0, fmt.Errorf("loopback: etcd get: %w", err)
	}
	if len(g.Kvs) != 1 || string(g.Kvs[0].Value) != value {
		return 0, 0, fmt.Errorf("loopback: etcd get %s after put: %d keys", key, len(g.Kvs))
	}
	return l.ID, d, nil
}

// Deregister revokes lease (deleting the keys under it) and gets key until
// it is gone; it returns how long that took.
func (e *Etcd) Deregister(ctx context.Context, key string, lease clientv3.LeaseID) (time.Duration, error) {
	t0 := time.Now()
	if _, err := e.Client.Revoke(ctx, lease); err != nil {
		return 0, fmt.Errorf("loopback: etcd lease revoke: %w", err)
	}
	for {
		g, err := e.Client.Get(ctx, key)
		if err != nil {
			return 0, fmt.Errorf("loopback: etcd get: %w", err)
		}
		if len(g.Kvs) == 0 {
			return time.Since(t0), nil
		}
		if ctx.Err() != nil {
			return 0, fmt.Errorf("loopback: etcd key %s still there after revoke: %w", key, ctx.Err())
		}
	}
}

// GetPrefix gets every key under prefix through the Go client and returns
// how long it took and how many keys it got.
func (e *Etcd) GetPrefix(ctx context.Context, prefix string) (time.Duration, int, error) {
	t0 := time.Now()
	g, err := e.Client.Get(ctx, prefix, clientv3.WithPrefix())
	d := time.Since(t0)
	if err != nil {
		return 0, 0, fmt.Errorf("loopback: etcd get --prefix: %w", err)
	}
	return d, len(g.Kvs), nil
}

// CtlGetPrefix runs `etcdctl --endpoints URL get --prefix prefix` (a fresh
// process) and returns how long the process took, start to exit, and the
// keys it printed.
func (e *Etcd) CtlGetPrefix(ctx context.Context, prefix string) (time.Duration, []KV, error) {
	cmd := exec.CommandContext(ctx, "etcdctl", "--endpoints", e.Endpoint, "get", "--prefix", prefix)
	cmd.Env = childEnv([]string{"ETCDCTL_API=3"})
	var stderr strings.Builder
	cmd.Stderr = &stderr
	t0 := time.Now()
	out, err := cmd.Output()
	d := time.Since(t0)
	if err != nil {
		return d, nil, fmt.Errorf("loopback: etcdctl get --prefix: %w\n%s", err, stderr.String())
	}
	kvs, err := EtcdctlGet(out)
	return d, kvs, err
}

// Close closes the client and stops etcd.
func (e *Etcd) Close() {
	if e.Client != nil {
		e.Client.Close()
	}
	e.Proc.Stop(5 * time.Second)
}

// freePorts returns n distinct TCP ports on 127.0.0.1 that were free a
// moment ago.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("loopback: free port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
