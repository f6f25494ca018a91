package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestFrom(t *testing.T) {
	for _, tc := range []struct {
		name     string
		bi       debug.BuildInfo
		short    string
		contains []string
	}{
		{"go install", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/cellnode/cellnode", Version: "v1.2.3"}},
			"v1.2.3", []string{"cellnode v1.2.3", "no VCS revision", "go1.26.8"}},
		{"work tree", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.time", Value: "2026-11-01T10:00:00Z"}, {Key: "vcs.modified", Value: "true"}}},
			"(devel) 0123456789ab+dirty", []string{"commit 0123456789abcdef0123", "2026-11-01T10:00:00Z", "uncommitted changes"}},
		{"no version", debug.BuildInfo{GoVersion: "go1.26.8"}, "(devel)", []string{"cellnode (devel)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := From(&tc.bi)
			if in.Short() != tc.short {
				t.Fatalf("Short() = %q, want %q", in.Short(), tc.short)
			}
			for _, want := range tc.contains {
				if !strings.Contains(in.String(), want) {
					t.Fatalf("String() = %q, want %q in it", in.String(), want)
				}
			}
		})
	}
	if in := Read(); in.GoVersion == "" || in.Version == "" {
		t.Fatalf("Read() = %+v", in)
	}
}
