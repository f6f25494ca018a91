package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cellnode/cellnode/internal/poll"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// isProfile reports whether path holds a pprof profile (gzipped protobuf).
func isProfile(t *testing.T, path string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return len(b) > 2 && b[0] == 0x1f && b[1] == 0x8b
}

func TestProfileOff(t *testing.T) {
	var stderr bytes.Buffer
	startProfile(envOf(nil), &stderr)()
	if stderr.Len() != 0 {
		t.Fatalf("stderr: %s", stderr.String())
	}
}

func TestProfileWhole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	var stderr bytes.Buffer
	stop := startProfile(envOf(map[string]string{envCPUProfile: path}), &stderr)
	stop()
	if !isProfile(t, path) {
		t.Fatalf("%s is not a profile; stderr: %s", path, stderr.String())
	}
	if _, err := os.Stat(path + ".start"); !os.IsNotExist(err) {
		t.Fatalf("a profile without a split wrote %s.start (%v)", path, err)
	}
}

func TestProfileSplit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	var stderr bytes.Buffer
	stop := startProfile(envOf(map[string]string{envCPUProfile: path, envCPUProfileSplit: "1ms"}), &stderr)
	poll.T(t, "the second profile's file", func() bool { _, err := os.Stat(path); return err == nil })
	stop()
	if !isProfile(t, path+".start") || !isProfile(t, path) {
		t.Fatalf("want profiles in %s.start and %s; stderr: %s", path, path, stderr.String())
	}
}

func TestProfileStopBeforeSplit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	var stderr bytes.Buffer
	stop := startProfile(envOf(map[string]string{envCPUProfile: path, envCPUProfileSplit: time.Hour.String()}), &stderr)
	stop()
	if !isProfile(t, path+".start") {
		t.Fatalf("no profile in %s.start; stderr: %s", path, stderr.String())
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("stopped before the split, yet %s exists (%v)", path, err)
	}
}

func TestProfileBadSwitches(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{envCPUProfile: filepath.Join(dir, "cpu.pprof"), envCPUProfileSplit: "ten"}, envCPUProfileSplit},
		{map[string]string{envCPUProfile: filepath.Join(dir, "cpu.pprof"), envCPUProfileSplit: "-1s"}, envCPUProfileSplit},
		{map[string]string{envCPUProfile: filepath.Join(dir, "missing", "cpu.pprof")}, "no such file"},
	} {
		var stderr bytes.Buffer
		startProfile(envOf(c.env), &stderr)()
		if !strings.Contains(stderr.String(), c.want) || !strings.Contains(stderr.String(), "not profiling") {
			t.Errorf("%v: stderr %q, want %q and \"not profiling\"", c.env, stderr.String(), c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "cpu.pprof")); !os.IsNotExist(err) {
		t.Fatalf("a bad split wrote a profile (%v)", err)
	}
}
