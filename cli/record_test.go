package cli

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	"github.com/cellnode/cellnode/node"
)

func testPriv(n byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{n}, ed25519.SeedSize))
}

// signedRecord signs a live record of name by priv, delegated by d (nil for
// an open record).
func signedRecord(t *testing.T, priv ed25519.PrivateKey, name string, now time.Time, d *record.Delegation, eps ...string) *record.Record {
	t.Helper()
	r, err := record.Sign(priv, record.Record{Name: name, PublicKey: priv.Public().(ed25519.PublicKey), Endpoints: eps,
		Seq: uint64(now.UnixMicro()), Issued: now, Expires: now.Add(record.MaxLifetime), Delegation: d})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRecordCommand(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	at := strconv.FormatInt(now.Add(10*time.Second).UnixMilli(), 10)
	nodeKey, pubKey := testPriv(1), testPriv(2)
	d, err := record.SignDelegation(pubKey, record.Delegation{Name: "acme/exchange", Node: nodeKey.Public().(ed25519.PublicKey),
		Issued: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	rec := signedRecord(t, nodeKey, "acme/exchange", now, d, "192.0.2.7:9000").Bytes()
	open := signedRecord(t, testPriv(3), "acme/exchange", now, nil, "192.0.2.8:9000").Bytes()
	tampered := bytes.Clone(rec)
	tampered[len(tampered)-1] ^= 1
	pub := base64.StdEncoding.EncodeToString(pubKey.Public().(ed25519.PublicKey))

	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rawFile := write("rec.bin", rec)
	hexFile := write("rec.hex", []byte(hex.EncodeToString(rec)+"\n"))
	pemFile := write("d.delegation", pem.EncodeToMemory(&pem.Block{Type: delegationPEM, Bytes: d.Bytes()}))
	hugeFile := write("huge", make([]byte, maxRecordInput+1))

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string // in stdout (or stderr for exit 2)
	}{
		{"valid, raw file", []string{"verify", rawFile, "--now", at, "--name", "acme/exchange"}, 0, "valid record: acme/exchange"},
		{"valid, hex file", []string{"verify", hexFile, "--now", at}, 0, "valid record"},
		{"valid, hex argument", []string{"verify", hex.EncodeToString(rec), "--now", at}, 0, "valid record"},
		{"valid, base64 argument", []string{"verify", base64.StdEncoding.EncodeToString(rec), "--now", at}, 0, "valid record"},
		{"valid, pinned publisher", []string{"verify", rawFile, "--now", at, "--publisher", pub}, 0, "delegated by " + pub},
		{"open record, publisher pinned", []string{"verify", hex.EncodeToString(open), "--now", at, "--publisher", pub}, 1, "invalid record: wrong_publisher"},
		{"tampered", []string{"verify", hex.EncodeToString(tampered), "--now", at}, 1, "invalid record: bad_signature"},
		{"expired", []string{"verify", rawFile, "--now", now.Add(time.Hour).Format(time.RFC3339)}, 1, "invalid record: expired"},
		{"another name", []string{"verify", rawFile, "--now", at, "--name", "acme/other"}, 1, "invalid record: wrong_name"},
		{"delegation expired in a record", []string{"verify", rawFile, "--now", now.Add(48 * time.Hour).Format(time.RFC3339)}, 1, "invalid record: expired"},
		{"delegation from PEM", []string{"verify", pemFile, "--now", at}, 0, "valid delegation"},
		{"delegation for another node", []string{"verify", pemFile, "--now", at, "--node", pub}, 1, "invalid delegation: wrong_node"},
		{"inspect shows fields", []string{"inspect", rawFile, "--now", at}, 0, "endpoint   192.0.2.7:9000"},
		{"inspect an expired record still shows its fields", []string{"inspect", rawFile}, 1, "endpoint   192.0.2.7:9000"},
		{"inspect garbage shows the diagnostic", []string{"inspect", hex.EncodeToString([]byte{0xa1, 0x01, 0x41, 0x00})}, 1, "unverified content"},
		{"not hex, not base64, not a file", []string{"verify", "no such record!"}, 2, "not a file"},
		{"a word base64 reads as one byte", []string{"verify", "zz"}, 2, `"zz" is not a file, nor a record in hex or base64`},
		{"hex that is no CBOR map", []string{"verify", "00ff"}, 2, "begins with a CBOR map"},
		{"a text file that is no record", []string{"verify", write("words.txt", []byte("zz\n"))}, 2, "holds neither a record nor a delegation"},
		{"an empty file", []string{"verify", write("empty", nil)}, 2, "empty input"},
		{"over the input limit", []string{"verify", hugeFile}, 2, "not a record"},
		{"a directory", []string{"verify", dir}, 2, "not a regular file"},
		{"bad --now", []string{"verify", rawFile, "--now", "yesterday"}, 2, "--now"},
		{"bad --publisher", []string{"verify", rawFile, "--publisher", "xyz"}, 2, "--publisher"},
		{"bad --kind", []string{"verify", rawFile, "--kind", "x"}, 2, "--kind"},
		{"bad --name", []string{"verify", rawFile, "--name", "X"}, 2, "invalid cell name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := run(t, append([]string{"record"}, tc.args...)...)
			where := out
			if tc.code == 2 {
				where = errOut
			}
			if code != tc.code || !strings.Contains(where, tc.want) {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q; want %q", code, tc.code, out, errOut, tc.want)
			}
		})
	}

	// --json gives the verdict and the reasons.
	code, out, _ := run(t, "record", "verify", rawFile, "--json", "--now", now.Add(48*time.Hour).Format(time.RFC3339))
	var rep recordReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 1 || rep.Valid || rep.Reason != "expired" || rep.Record == nil {
		t.Fatalf("json: exit %d, %+v, %v", code, rep, err)
	}
	code, out, _ = run(t, "record", "verify", hex.EncodeToString(rec[:len(rec)-70])+"00", "--json")
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 1 || rep.Reason != "malformed" {
		t.Fatalf("json of malformed input: exit %d, %s", code, out)
	}
}

// TestReadRecordInputStdin: "-" reads standard input, bounded.
func TestReadRecordInputStdin(t *testing.T) {
	b, err := readRecordInput("-", strings.NewReader(" a201\n"))
	if err != nil || !bytes.Equal(b, []byte{0xa2, 0x01}) {
		t.Fatalf("got %x, %v", b, err)
	}
	if _, err := readRecordInput("-", bytes.NewReader(make([]byte, maxRecordInput+10))); err == nil {
		t.Fatal("oversized standard input accepted")
	}
	if _, err := readRecordInput("-", strings.NewReader("zz\n")); err == nil || !strings.Contains(err.Error(), "standard input holds neither") {
		t.Fatalf("a word on standard input: %v", err)
	}
}

// TestFindVerifiesLocalAPI: an impostor serving the local API (issue 15:
// another user replaced api.sock) cannot make find show what the records
// do not say: instances without a record, with a forged one, with a record
// of another peer, claimed trusted though open, or with endpoints the
// record does not have, are dropped or corrected, each with a warning.
func TestFindVerifiesLocalAPI(t *testing.T) {
	isolate(t)
	home := t.TempDir()
	now := time.Now()
	pubKey := testPriv(9)
	pub := pubKey.Public().(ed25519.PublicKey)
	delegate := func(k ed25519.PrivateKey) *record.Delegation {
		d, err := record.SignDelegation(pubKey, record.Delegation{Name: "acme/exchange", Node: k.Public().(ed25519.PublicKey),
			Issued: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	good := signedRecord(t, testPriv(1), "acme/exchange", now, delegate(testPriv(1)), "192.0.2.1:9000")
	moved := signedRecord(t, testPriv(2), "acme/exchange", now, delegate(testPriv(2)), "192.0.2.2:9000")
	open := signedRecord(t, testPriv(3), "acme/exchange", now, nil, "192.0.2.3:9000")
	forged := bytes.Clone(good.Bytes())
	forged[len(forged)-1] ^= 1
	inst := func(r *record.Record, raw []byte) node.SignedInstance {
		return node.SignedInstance{Instance: node.Instance{Peer: r.Peer.String(), Endpoints: r.Endpoints, Reachable: true,
			Best: r.Endpoints[0], LatencyMS: 1, Seq: r.Seq, Expires: r.Expires, Trusted: true}, Record: raw}
	}
	evil := inst(moved, moved.Bytes())
	evil.Endpoints, evil.Best = []string{"203.0.113.66:22"}, "203.0.113.66:22" // the impostor's endpoint
	reply := node.FindReply{FindResult: node.FindResult{Name: "acme/exchange", Pinned: true}, Instances: []node.SignedInstance{
		inst(good, good.Bytes()),
		evil,
		inst(open, open.Bytes()),  // claimed trusted, open
		inst(good, nil),           // no record
		inst(good, forged),        // forged record
		inst(moved, good.Bytes()), // another peer's record
		inst(good, good.Bytes()),  // listed twice
		{Instance: node.Instance{Peer: "x"}, Record: []byte("garbage")},
	}}
	ln, err := net.Listen("unix", filepath.Join(home, node.APISocket))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(reply)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	code, out, errOut := run(t, "find", "acme/exchange", "--home", home, "--json", "--publisher", base64.StdEncoding.EncodeToString(pub))
	var got node.FindReply
	if err := json.Unmarshal([]byte(out), &got); err != nil || code != 0 {
		t.Fatalf("find: exit %d, %v; stdout %s stderr %s", code, err, out, errOut)
	}
	if len(got.Instances) != 2 {
		t.Fatalf("%d instances kept, want 2: %+v\nstderr: %s", len(got.Instances), got.Instances, errOut)
	}
	for _, in := range got.Instances {
		r, err := record.Verify(in.Record, "acme/exchange", time.Now())
		if err != nil || r.Peer.String() != in.Peer || strings.Join(in.Endpoints, ",") != strings.Join(r.Endpoints, ",") || !in.Trusted {
			t.Fatalf("kept instance %+v does not match its record (%v)", in.Instance, err)
		}
		if in.Best == "203.0.113.66:22" || in.Reachable && in.Best != r.Endpoints[0] {
			t.Fatalf("the impostor's endpoint survived: %+v", in.Instance)
		}
	}
	for _, want := range []string{"not delegated by a pinned publisher", "no signed record", "bad_signature", "the record is from peer", "listed twice", "malformed"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("no warning %q in:\n%s", want, errOut)
		}
	}
}
