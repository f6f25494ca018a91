package node

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// python returns the python3 command, or skips the test.
func python(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	return p
}

// TestPythonExamples runs examples/python against a real agent: find,
// register and watch over the unix socket and over TCP, and DNS queries
// built by hand, all with Python's standard library only.
func TestPythonExamples(t *testing.T) {
	py := python(t)
	dir, _ := filepath.Abs("../examples/python")
	c := newCluster(t, nil)
	cfg := c.agentConfig()
	cfg.APITCP = "127.0.0.1:0"
	a := c.agent(cfg)
	env := append(os.Environ(), APIEnv+"="+a.APIAddr(), "CELLNODE_DNS="+a.DNSAddr())
	script := func(name string, env []string, args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(py, append([]string{filepath.Join(dir, name)}, args...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}

	ln := service(t)
	an := announce(t, c.node(nil, t.TempDir()), "acme/exchange", ln.Addr().String())
	ep := ln.Addr().String()
	waitFor(t, "find through the python client", func() bool {
		out, code := script("cellnode_api.py", env, "find", "acme/exchange")
		return code == 0 && strings.TrimSpace(out) == ep
	})
	if out, code := script("cellnode_api.py", append(env, APIEnv+"=http://"+a.APITCPAddr()), "find", "acme/exchange"); code != 0 || strings.TrimSpace(out) != ep {
		t.Fatalf("find over TCP: %d %s", code, out)
	}
	if out, code := script("cellnode_api.py", env, "register", "acme/py", service(t).Addr().String()); code != 0 || strings.TrimSpace(out) != "created" {
		t.Fatalf("register: %d %s", code, out)
	}
	if _, ok := a.Cell("acme/py"); !ok {
		t.Fatal("the python registration is not there")
	}
	if out, code := script("cellnode_api.py", env, "register", "acme/py", "nowhere"); code != 1 || !strings.Contains(out, "400") {
		t.Fatalf("bad registration: %d %s", code, out)
	}

	// DNS.
	if out, code := script("cellnode_dns.py", env, "srv", "acme/exchange"); code != 0 || !strings.HasPrefix(out, ep+" ttl=") {
		t.Fatalf("SRV: %d %s", code, out)
	}
	if out, code := script("cellnode_dns.py", env, "a", "acme/exchange"); code != 0 || strings.TrimSpace(out) != "127.0.0.1" {
		t.Fatalf("A: %d %s", code, out)
	}
	if out, code := script("cellnode_dns.py", env, "srv", "acme/nobody"); code != 1 || strings.TrimSpace(out) != "NXDOMAIN" {
		t.Fatalf("unknown cell: %d %s", code, out)
	}

	// A watch: the set, then the set without the withdrawn instance.
	cmd := exec.Command(py, filepath.Join(dir, "cellnode_api.py"), "watch", "acme/exchange", "--changes", "2")
	cmd.Env = env
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || !strings.Contains(lines.Text(), "instances=1 endpoints="+ep) {
		t.Fatalf("first watch line: %q", lines.Text())
	}
	an.Stop(context.Background())
	if !lines.Scan() || !strings.Contains(lines.Text(), "instances=0") {
		t.Fatalf("second watch line: %q", lines.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("watch: %v", err)
	}
}
