package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The packaging files under docs/deploy are checked here: the systemd units
// are parsed (and verified with systemd-analyze where it runs), the
// Containerfile is parsed, and every cellnode command line in them must
// parse with the real commands and flags.

const (
	deployDir  = "../docs/deploy"
	installBin = "/usr/local/bin/cellnode" // where docs/operations.md installs the binary
)

// unitFile is a parsed systemd unit: each section's directives in order.
type unitFile struct {
	sections map[string][][2]string // section → (key, value)
}

func (u *unitFile) get(section, key string) []string {
	var out []string
	for _, kv := range u.sections[section] {
		if kv[0] == key {
			out = append(out, kv[1])
		}
	}
	return out
}

// parseUnit parses systemd's unit syntax: [Section] headers, Key=Value
// lines, comments (# ;) and lines continued with a trailing backslash.
func parseUnit(name string, b []byte) (*unitFile, error) {
	u := &unitFile{sections: map[string][][2]string{}}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	lineNo, cont := 0, ""
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(sc.Text())
		if cont != "" {
			line = cont + " " + line
			cont = ""
		}
		if strings.HasSuffix(line, `\`) {
			cont = strings.TrimSuffix(line, `\`)
			continue
		}
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			if !strings.HasSuffix(line, "]") {
				return nil, fmt.Errorf("%s:%d: bad section header %q", name, lineNo, line)
			}
			section = line[1 : len(line)-1]
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || strings.TrimSpace(k) == "" {
				return nil, fmt.Errorf("%s:%d: want Key=Value, got %q", name, lineNo, line)
			}
			if section == "" {
				return nil, fmt.Errorf("%s:%d: %s outside any section", name, lineNo, k)
			}
			u.sections[section] = append(u.sections[section], [2]string{strings.TrimSpace(k), strings.TrimSpace(v)})
		}
	}
	if cont != "" {
		return nil, fmt.Errorf("%s: ends in a continued line", name)
	}
	return u, nil
}

// directives are the keys the units may use, by section: a typo is an
// error here even where systemd would only warn and ignore the line.
var directives = map[string][]string{
	"Unit":    {"Description", "Documentation", "Wants", "After", "Requires"},
	"Install": {"WantedBy"},
	"Service": {"Type", "ExecStart", "Environment", "EnvironmentFile", "Restart", "RestartSec", "TimeoutStopSec",
		"KillSignal", "User", "Group", "DynamicUser", "StateDirectory", "StateDirectoryMode", "RuntimeDirectory",
		"RuntimeDirectoryPreserve", "LimitNOFILE", "NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp",
		"PrivateDevices", "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups",
		"RestrictAddressFamilies", "RestrictNamespaces", "LockPersonality", "MemoryDenyWriteExecute",
		"SystemCallArchitectures", "ReadWritePaths", "WorkingDirectory"},
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// checkUnit checks a unit: its sections and directives, absolute paths,
// ExecStart running the installed cellnode with a command line that
// parses. env gives the values of ${VAR} in ExecStart (from the example
// environment file); instance replaces %i.
func checkUnit(name string, b []byte, env map[string]string, instance string) error {
	u, err := parseUnit(name, b)
	if err != nil {
		return err
	}
	for section, kvs := range u.sections {
		known, ok := directives[section]
		if !ok {
			return fmt.Errorf("%s: unknown section [%s]", name, section)
		}
		for _, kv := range kvs {
			if !slices.Contains(known, kv[0]) {
				return fmt.Errorf("%s: unknown directive %s in [%s]", name, kv[0], section)
			}
		}
	}
	for _, need := range [][2]string{{"Unit", "Description"}, {"Service", "ExecStart"}, {"Install", "WantedBy"}} {
		if len(u.get(need[0], need[1])) != 1 {
			return fmt.Errorf("%s: want exactly one %s= in [%s]", name, need[1], need[0])
		}
	}
	for _, key := range []string{"EnvironmentFile", "WorkingDirectory", "ReadWritePaths"} {
		for _, v := range u.get("Service", key) {
			if p := strings.TrimPrefix(v, "-"); !filepath.IsAbs(p) {
				return fmt.Errorf("%s: %s=%s: not an absolute path", name, key, v)
			}
		}
	}
	exec := strings.Fields(u.get("Service", "ExecStart")[0])
	bin := strings.TrimLeft(exec[0], "-@:+!")
	switch {
	case !filepath.IsAbs(bin):
		return fmt.Errorf("%s: ExecStart: %s is not an absolute path (systemd needs one; install cellnode at %s)", name, bin, installBin)
	case bin != installBin:
		return fmt.Errorf("%s: ExecStart: %s is not where docs/operations.md installs cellnode (%s)", name, bin, installBin)
	}
	var args []string
	for _, a := range exec[1:] {
		var missing []string
		a = envRef.ReplaceAllStringFunc(a, func(m string) string {
			v, ok := env[envRef.FindStringSubmatch(m)[1]]
			if !ok {
				missing = append(missing, m)
			}
			return v
		})
		if len(missing) > 0 {
			return fmt.Errorf("%s: ExecStart uses %v, which the example environment file does not set", name, missing)
		}
		args = append(args, strings.ReplaceAll(a, "%i", instance))
	}
	if err := parseCommandLine(args); err != nil {
		return fmt.Errorf("%s: ExecStart: cellnode %s: %w", name, strings.Join(args, " "), err)
	}
	return nil
}

// readEnvFile reads KEY=VALUE lines.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for line := range strings.SplitSeq(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not KEY=VALUE", path, line)
		}
		env[k] = v
	}
	return env
}

// systemdVerify runs systemd-analyze verify on a copy of the unit whose
// ExecStart binary is an executable that exists here; it returns "" when
// systemd-analyze cannot run on this machine.
func systemdVerify(t *testing.T, name string, b []byte, replaceBin bool) (ran bool, out string, err error) {
	t.Helper()
	sa, lerr := exec.LookPath("systemd-analyze")
	if lerr != nil {
		return false, "", nil
	}
	dir := t.TempDir()
	if replaceBin {
		shim := filepath.Join(dir, "cellnode")
		os.WriteFile(shim, []byte("#!/bin/sh\nexit 0\n"), 0o755)
		b = bytes.ReplaceAll(b, []byte(installBin), []byte(shim))
	}
	unit := filepath.Join(dir, strings.ReplaceAll(name, "@.", "@exchange."))
	os.WriteFile(unit, b, 0o644)
	cmd := exec.Command(sa, "verify", unit)
	o, err := cmd.CombinedOutput()
	if strings.Contains(string(o), "Failed to") && strings.Contains(string(o), "bus") {
		return false, "", nil // no systemd to talk to here
	}
	var mine []string // lines about our unit; others are the host's business
	for l := range strings.SplitSeq(string(o), "\n") {
		if strings.Contains(l, filepath.Base(unit)) {
			mine = append(mine, l)
		}
	}
	return true, strings.Join(mine, "\n"), err
}

func TestDeployUnits(t *testing.T) {
	env := readEnvFile(t, filepath.Join(deployDir, "example.env"))
	units, _ := filepath.Glob(filepath.Join(deployDir, "*.service"))
	if len(units) < 2 {
		t.Fatalf("want the bootstrap and sidecar units in %s, found %v", deployDir, units)
	}
	for _, path := range units {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := checkUnit(name, b, env, "exchange"); err != nil {
				t.Fatal(err)
			}
			ran, out, err := systemdVerify(t, name, b, true)
			if ran && (err != nil || out != "") {
				t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
			}
			if !ran {
				t.Log("systemd-analyze not available: parsed only")
			}
		})
	}
}

// TestDeployBadUnits: a unit with a bad path, a typo or a flag cellnode
// does not have gets an error that names the problem.
func TestDeployBadUnits(t *testing.T) {
	good, err := os.ReadFile(filepath.Join(deployDir, "cellnode-bootstrap.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, from, to, want string
	}{
		{"relative binary", "ExecStart=" + installBin, "ExecStart=cellnode", "cellnode is not an absolute path"},
		{"binary elsewhere", "ExecStart=" + installBin, "ExecStart=/opt/nowhere/cellnode", "/opt/nowhere/cellnode is not where docs/operations.md installs cellnode"},
		{"typo", "Restart=always", "Restrt=always", "unknown directive Restrt in [Service]"},
		{"unknown flag", "--addr-file", "--addrs-file", "unknown flag: --addrs-file"},
		{"relative path", "Type=simple", "Type=simple\nWorkingDirectory=var/lib", "WorkingDirectory=var/lib: not an absolute path"},
		{"no section", "[Unit]", "", "outside any section"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := bytes.Replace(good, []byte(tc.from), []byte(tc.to), 1)
			err := checkUnit("bad.service", bad, nil, "x")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	// systemd itself refuses a binary that is not there.
	bad := bytes.Replace(good, []byte("ExecStart="+installBin), []byte("ExecStart=/opt/nowhere/cellnode"), 1)
	if ran, out, err := systemdVerify(t, "bad.service", bad, false); ran && (err == nil || !strings.Contains(out, "/opt/nowhere/cellnode is not executable")) {
		t.Fatalf("systemd-analyze verify with a bad path: %v\n%s", err, out)
	}
}

// TestContainerfile: the build stage builds ./cmd/cellnode, the final
// stage runs the binary it copied, and its default command and exposed
// ports agree.
func TestContainerfile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "Containerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var froms, copies, exposes []string
	var entry, cmd []string
	buildsCmd := false
	for line := range strings.SplitSeq(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		instr, rest, _ := strings.Cut(line, " ")
		switch instr {
		case "FROM":
			froms = append(froms, rest)
		case "COPY":
			copies = append(copies, rest)
		case "RUN":
			buildsCmd = buildsCmd || strings.Contains(rest, "go build") && strings.Contains(rest, "./cmd/cellnode")
		case "EXPOSE":
			exposes = append(exposes, strings.Fields(rest)...)
		case "ENTRYPOINT", "CMD":
			var v []string
			if err := json.Unmarshal([]byte(rest), &v); err != nil {
				t.Fatalf("%s must be in exec (JSON) form: %v", instr, err)
			}
			if instr == "CMD" {
				cmd = v
			} else {
				entry = v
			}
		case "WORKDIR", "ENV", "VOLUME", "USER", "ARG", "LABEL":
		default:
			t.Fatalf("unknown instruction %s", instr)
		}
	}
	if len(froms) != 2 || !strings.HasPrefix(froms[0], "golang:1.26") || !buildsCmd {
		t.Fatalf("want a golang:1.26 build stage building ./cmd/cellnode and a final stage: FROM %v", froms)
	}
	if _, err := os.Stat("../cmd/cellnode/main.go"); err != nil {
		t.Fatal(err)
	}
	if len(entry) != 1 || !slices.ContainsFunc(copies, func(c string) bool { return strings.HasSuffix(c, " "+entry[0]) }) {
		t.Fatalf("ENTRYPOINT %v is not a file the final stage copies (%v)", entry, copies)
	}
	if err := parseCommandLine(cmd); err != nil {
		t.Fatalf("CMD %v: %v", cmd, err)
	}
	joined := strings.Join(cmd, " ")
	for _, want := range []string{"4001/tcp", "4001/udp", "9464/tcp"} {
		if !slices.Contains(exposes, want) {
			t.Fatalf("EXPOSE %v lacks %s", exposes, want)
		}
	}
	for _, want := range []string{"/tcp/4001", "/udp/4001/quic-v1", ":9464"} {
		if !strings.Contains(joined, want) {
			t.Fatalf("CMD %v does not use the exposed %s", cmd, want)
		}
	}
}
