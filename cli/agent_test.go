package cli

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/cellnode/cellnode/node"
)

// TestAgentCommand runs `cellnode agent` with a config directory: its cells
// are announced, `find` goes through the agent's shared socket, SIGHUP
// reads the directory again, and cancelling withdraws and exits 0.
func TestAgentCommand(t *testing.T) {
	isolate(t)
	boot, _ := startNetwork(t)
	sock, err := os.MkdirTemp("", "cn")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sock)
	api := filepath.Join(sock, "api.sock")
	t.Setenv(node.APIEnv, api)
	dir := t.TempDir()
	one, _ := listenService()
	defer one.Close()
	two, _ := listenService()
	defer two.Close()
	writeFile := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeFile("one.json", `{"cells": [{"name": "acme/one", "endpoint": "`+one.Addr().String()+`", "check": {"interval": "100ms"}}]}`)

	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	var wg sync.WaitGroup
	wg.Go(func() {
		if code := Run(ctx, []string{"agent", "--config-dir", dir, "--home", t.TempDir(), "--dns", "127.0.0.1:0",
			"--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", boot, "--dht-mode", "server"}, &out, &errb); code != 0 {
			t.Errorf("agent: exit %d: %s", code, errb.String())
		}
	})
	defer wg.Wait()
	defer cancel()
	waitUntil(t, func() bool { return strings.Contains(out.String(), "cells    1 registered") })
	for _, want := range []string{"api      unix:" + api, "dns      127.0.0.1:"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("agent output lacks %q:\n%s", want, out.String())
		}
	}
	// find with no --bootstrap goes through the agent ($CELLNODE_API).
	waitUntil(t, func() bool {
		code, o, _ := run(t, "find", "acme/one", "--json", "--timeout", "5s")
		var res struct{ Instances []map[string]any }
		return code == 0 && json.Unmarshal([]byte(o), &res) == nil && len(res.Instances) == 1
	})

	writeFile("two.json", `{"cells": [{"name": "acme/two", "endpoint": "`+two.Addr().String()+`"}]}`)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	cl, err := node.DialAPI(api)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool {
		cells, err := cl.Cells(ctx)
		return err == nil && len(cells) == 2
	})
	writeFile("two.json", `{"cells": [`)
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitUntil(t, func() bool { return strings.Contains(errb.String(), "config directory not reloaded; nothing changed") })
	if cells, err := cl.Cells(ctx); err != nil || len(cells) != 2 {
		t.Fatalf("a broken file changed the cells: %v, %v", cells, err)
	}
	cancel()
	wg.Wait()
	if _, err := os.Stat(api); !os.IsNotExist(err) {
		t.Fatalf("the shared socket outlived the agent: %v", err)
	}
}

func TestAgentCommandErrors(t *testing.T) {
	isolate(t)
	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, "x.json"), []byte(`{"cells": [{"name": "acme/x", "endpoint": "nope"}]}`), 0o644)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"agent", "--config-dir", bad}, ExitUsage, "want HOST:PORT"},
		{[]string{"agent", "--config-dir", filepath.Join(bad, "missing")}, ExitUsage, "no such file"},
		{[]string{"agent", "--dns", "0.0.0.0:53"}, ExitFailure, "not a loopback address"},
		{[]string{"agent", "--dns", "off", "--api-tcp", "192.0.2.1:8640"}, ExitFailure, "not a loopback address"},
		{[]string{"agent", "--dns", "off", "--api-tcp", ln.Addr().String()}, ExitFailure, "address already in use"},
		{[]string{"agent", "--dns", "off", "--api-group", "no-such-group-here"}, ExitFailure, "API group"},
		{[]string{"agent", "--dht-mode", "sometimes"}, ExitUsage, "--dht-mode"},
		{[]string{"agent", "extra"}, ExitUsage, "no arguments"},
	} {
		code, _, stderr := run(t, append(tc.args, "--home", t.TempDir(), "--listen", "/ip4/127.0.0.1/tcp/0")...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, %q; want exit %d saying %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
}
