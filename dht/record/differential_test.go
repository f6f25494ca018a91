package record

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// TestDifferentialJS (CELLNODE_DIFF_JS=N, N inputs; needs node and npm ci
// in internal/recordjs) mutates the conformance vectors at random, decides
// every mutant with this package, and has internal/recordjs decide the same
// inputs: any disagreement is a bug in one of them or in the spec. Mutants
// are the inputs with bits flipped, bytes inserted, deleted or cut off, and
// record bodies mutated so and signed again, so that the field rules are
// reached too.
func TestDifferentialJS(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("CELLNODE_DIFF_JS"))
	if n <= 0 {
		t.Skip("set CELLNODE_DIFF_JS=N to run N mutants through internal/recordjs")
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("no node")
	}
	var f vectorFile
	b, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	node := testKey(7)
	mutate := func(in []byte) []byte {
		out := bytes.Clone(in)
		switch rng.IntN(5) {
		case 0:
			for range 1 + rng.IntN(3) {
				if len(out) > 0 {
					out[rng.IntN(len(out))] ^= 1 << rng.IntN(8)
				}
			}
		case 1:
			i := rng.IntN(len(out) + 1)
			out = append(out[:i], append([]byte{byte(rng.IntN(256))}, out[i:]...)...)
		case 2:
			if len(out) > 0 {
				i := rng.IntN(len(out))
				out = append(out[:i], out[i+1:]...)
			}
		case 3:
			out = out[:rng.IntN(len(out)+1)]
		default:
			if len(out) > 0 {
				out[rng.IntN(len(out))] = byte(rng.IntN(256))
			}
		}
		return out
	}
	var vs []vector
	for len(vs) < n {
		base := f.Vectors[rng.IntN(len(f.Vectors))]
		raw, _ := hex.DecodeString(base.Input)
		var in []byte
		if body, _, err := openEnvelope(raw); err == nil && base.Kind == "record" && rng.IntN(2) == 0 {
			in = seal(mutate(body), node, RecordDomain)
		} else {
			in = mutate(raw)
		}
		v := base
		v.Name = "mutant " + strconv.Itoa(len(vs)) + " of " + base.Name
		v.Input = hex.EncodeToString(in)
		v.Record, v.Delegation = nil, nil
		_, _, err := runVector(t, v)
		v.Valid, v.Reason, v.DelegationReason = err == nil, "", ""
		if err != nil {
			if v.Kind == "delegation" {
				v.Reason = DelegationReason(err)
			} else {
				v.Reason, v.DelegationReason = Reason(err), DelegationReason(err)
			}
		}
		vs = append(vs, v) // valid ones too (their fields are compared by the vectors proper)
	}
	path := filepath.Join(t.TempDir(), "mutants.json")
	out, _ := json.Marshal(vectorFile{Format: f.Format, Vectors: vs})
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", "--test", "--test-reporter=dot")
	cmd.Dir = "../../internal/recordjs"
	cmd.Env = append(os.Environ(), "CELLNODE_VECTORS="+path)
	res, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("internal/recordjs disagrees on some of %d mutants:\n%s", len(vs), tail(res, 6000))
	}
	reasons := map[string]int{}
	for _, v := range vs {
		reasons[v.Reason+"/"+v.DelegationReason]++
	}
	t.Logf("%d mutants, 0 disagreements; by reason: %v", len(vs), reasons)
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
