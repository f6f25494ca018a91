// Package buildinfo says which cellnode a binary is: the module version and
// the VCS revision that the Go toolchain stamped into it
// (runtime/debug.ReadBuildInfo). It holds no state.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Info describes a build. Fields the build did not record are empty.
type Info struct {
	Module    string `json:"module"`             // main module path, "github.com/cellnode/cellnode"
	Version   string `json:"version"`            // module version: "v1.2.3" from go install, "(devel)" from a work tree
	Revision  string `json:"revision,omitempty"` // VCS commit hash (vcs.revision)
	Time      string `json:"time,omitempty"`     // commit time, RFC 3339 (vcs.time)
	Modified  bool   `json:"modified,omitempty"` // the work tree had uncommitted changes (vcs.modified)
	GoVersion string `json:"go"`                 // toolchain, "go1.26.8"
}

// Read returns the running binary's build information. A binary built
// without module support (never the case for cellnode) reports only the Go
// version.
func Read() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{Version: "unknown", GoVersion: runtime.Version()}
	}
	return From(bi)
}

// From extracts Info from bi.
func From(bi *debug.BuildInfo) Info {
	in := Info{Module: bi.Main.Path, Version: bi.Main.Version, GoVersion: bi.GoVersion}
	if in.Version == "" {
		in.Version = "(devel)"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Revision = s.Value
		case "vcs.time":
			in.Time = s.Value
		case "vcs.modified":
			in.Modified = s.Value == "true"
		}
	}
	return in
}

// Short returns the version with the first 12 characters of the revision,
// "v1.2.3", "(devel) 0123456789ab", "(devel) 0123456789ab+dirty".
func (in Info) Short() string {
	s := in.Version
	if in.Revision != "" {
		s += " " + in.Revision[:min(12, len(in.Revision))]
		if in.Modified {
			s += "+dirty"
		}
	}
	return s
}

// String is the line `cellnode version` prints.
func (in Info) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cellnode %s", in.Version)
	switch {
	case in.Revision != "":
		fmt.Fprintf(&b, " (commit %s", in.Revision)
		if in.Time != "" {
			fmt.Fprintf(&b, ", %s", in.Time)
		}
		if in.Modified {
			b.WriteString(", with uncommitted changes")
		}
		b.WriteString(")")
	default:
		b.WriteString(" (no VCS revision recorded: built outside a git work tree, or with -buildvcs=false)")
	}
	fmt.Fprintf(&b, ", %s", in.GoVersion)
	return b.String()
}
