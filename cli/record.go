package cli

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cellnode/cellnode/dht/record"

	"github.com/fxamacker/cbor/v2"
	"github.com/spf13/cobra"
)

// maxRecordInput is the most bytes record inspect|verify reads from a file
// or standard input: a record in hex with room for whitespace and a PEM
// wrapping. More is bad input, not a record.
const maxRecordInput = 4*record.MaxRecordSize + 4096

func recordCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "record",
		Short: "Decode and verify instance records and delegations",
		Long: `Record decodes an instance record or a delegation (docs/records.md, format 2)
and verifies it as storers and finders do, so that a record from find --json,
the local API or a runtime directory file can be checked by hand.

INPUT is a file (raw bytes, hex, base64, or the PEM file key delegate writes),
"-" for standard input, or the record itself in hex or base64. The kind
(record or delegation) is told from the bytes unless --kind says it.

Exit status: 0 when valid, 1 when invalid (the reason is printed), 2 for bad
input (unreadable, not hex or base64, bad flags).`,
		Example: `  cellnode record verify exchange.delegation --name acme/exchange
  cellnode find acme/exchange --json | jq -r '.instances[0].record' | cellnode record inspect -`,
	}
	c.AddCommand(recordSubCmd(e, "inspect"), recordSubCmd(e, "verify"))
	return c
}

func recordSubCmd(e *env, verb string) *cobra.Command {
	var name, now, kind, nodeKey string
	var publishers []string
	var asJSON bool
	c := &cobra.Command{
		Use: verb + " INPUT [--name ORG/NAME] [--now TIME] [--publisher KEY]",
		Example: `  cellnode record ` + verb + ` exchange.delegation
  cellnode find acme/exchange --json | jq -r '.instances[0].record' | cellnode record ` + verb + ` - --name acme/exchange
  cellnode record ` + verb + ` a2015901… --now 2026-11-26T12:00:10Z --publisher 7ZQ3p9b7M0h6Jx0t1Zp1cV7pWm4W5lWmN0bcq1kQK6A=`,
		Args: exactArgs(1, "one INPUT (a file, - for stdin, or hex or base64)"),
		RunE: func(c *cobra.Command, args []string) error {
			return recordVerb(c, args, e, verb, name, now, kind, nodeKey, publishers, asJSON)
		},
	}
	if verb == "inspect" {
		c.Short = "Print a record's or delegation's fields and its verdict"
	} else {
		c.Short = "Verify a record or delegation: exit 0 if valid, 1 if not"
	}
	f := c.Flags()
	f.StringVar(&name, "name", "", "the cell it must be for (default: any)")
	f.StringVar(&now, "now", "", "verify at this time: RFC 3339 or milliseconds since the Unix epoch (default: now)")
	f.StringSliceVar(&publishers, "publisher", nil, "it must be delegated by this publisher key (hex or base64), repeatable")
	f.StringVar(&nodeKey, "node", "", "a delegation must name this node key (hex or base64)")
	f.StringVar(&kind, "kind", "auto", "auto, record or delegation")
	f.BoolVar(&asJSON, "json", false, "print one JSON object")
	return c
}

type recordOpts struct {
	raw        []byte
	kind       string
	name       string
	now        time.Time
	publishers []ed25519.PublicKey
	node       ed25519.PublicKey
}

// recordReport is the outcome of record inspect|verify; it is also the
// JSON shape of --json.
type recordReport struct {
	Kind   string `json:"kind"` // "record" or "delegation"
	Bytes  int    `json:"bytes"`
	Valid  bool   `json:"valid"`
	Reason string `json:"reason,omitempty"` // record.Reason's label
	// DelegationReason, when Reason is "delegation", says what is wrong
	// with the record's delegation.
	DelegationReason string            `json:"delegation_reason,omitempty"`
	Error            string            `json:"error,omitempty"`
	Record           *recordFields     `json:"record,omitempty"`     // when the signature verified
	Delegation       *delegationFields `json:"delegation,omitempty"` // the delegation's or the record's
	// Unverified is the CBOR diagnostic notation of what did not verify,
	// to help tell why; nothing in it is vouched for.
	Unverified string `json:"unverified,omitempty"`
}

type recordFields struct {
	Name      string    `json:"name"`
	Peer      string    `json:"peer"`
	Key       string    `json:"key"` // base64
	Endpoints []string  `json:"endpoints"`
	Region    string    `json:"region,omitempty"`
	Manifest  string    `json:"manifest,omitempty"`
	Seq       uint64    `json:"seq"`
	Issued    time.Time `json:"issued"`
	Expires   time.Time `json:"expires"`
	Withdrawn bool      `json:"withdrawn,omitempty"`
	Publisher string    `json:"publisher,omitempty"` // base64; "" for an open record
}

type delegationFields struct {
	Name      string    `json:"name"`
	Node      string    `json:"node"`      // base64
	NodePeer  string    `json:"node_peer"` // the node key's peer ID
	Publisher string    `json:"publisher"` // base64
	Issued    time.Time `json:"issued"`
	NotAfter  time.Time `json:"not_after"`
}

func b64(k []byte) string { return base64.StdEncoding.EncodeToString(k) }

// checkRecord decodes and verifies o.raw. The decode (no clock) comes first
// so that the fields of a well-signed record are shown even when it is
// expired, for another name or not from a trusted publisher; the verdict is
// the one record.Verify (or record.VerifyDelegation) gives, and then the
// publisher check.
func checkRecord(o recordOpts) *recordReport {
	rep := &recordReport{Kind: o.kind, Bytes: len(o.raw), Valid: true}
	fail := func(err error) {
		rep.Valid, rep.Error = false, err.Error()
		rep.Reason = record.Reason(err)
		if o.kind == "delegation" {
			rep.Reason = record.DelegationReason(err)
		} else {
			rep.DelegationReason = record.DelegationReason(err)
		}
	}
	trusted := func(pub ed25519.PublicKey) error {
		if len(o.publishers) == 0 {
			return nil
		}
		for _, p := range o.publishers {
			if pub != nil && pub.Equal(p) {
				return nil
			}
		}
		return record.ErrWrongPublisher
	}
	if o.kind == "delegation" {
		d, err := record.DecodeDelegation(o.raw)
		if err != nil {
			fail(err)
			rep.Unverified = diagnose(o.raw)
			return rep
		}
		rep.Delegation = delegationOf(d)
		name, node := o.name, o.node
		if name == "" {
			name = d.Name
		}
		if node == nil {
			node = d.Node
		}
		if err := d.CheckFor(name, node, o.now); err != nil {
			fail(err)
		} else if err := trusted(d.Publisher); err != nil {
			rep.Valid, rep.Reason, rep.Error = false, record.Reason(err), err.Error()
		}
		return rep
	}
	r, err := record.Decode(o.raw)
	if err != nil {
		fail(err)
		rep.Unverified = diagnose(o.raw)
		return rep
	}
	rep.Record = &recordFields{Name: r.Name, Peer: r.Peer.String(), Key: b64(r.PublicKey), Endpoints: r.Endpoints,
		Region: r.Region, Seq: r.Seq, Issued: r.Issued, Expires: r.Expires, Withdrawn: r.Withdrawn}
	if r.Manifest.Defined() {
		rep.Record.Manifest = r.Manifest.String()
	}
	if r.Delegation != nil {
		rep.Record.Publisher = b64(r.Delegation.Publisher)
		rep.Delegation = delegationOf(r.Delegation)
	}
	live := r.Check(o.now)
	switch {
	case o.name != "" && r.Name != o.name:
		fail(fmt.Errorf("%w: record for %q, want %q", record.ErrWrongName, r.Name, o.name))
	case live != nil:
		fail(live)
	case trusted(r.Publisher()) != nil:
		fail(fmt.Errorf("%w: not delegated by a publisher given with --publisher", record.ErrWrongPublisher))
	}
	return rep
}

func delegationOf(d *record.Delegation) *delegationFields {
	return &delegationFields{Name: d.Name, Node: b64(d.Node), NodePeer: peerOf(d.Node), Publisher: b64(d.Publisher),
		Issued: d.Issued, NotAfter: d.NotAfter}
}

// verdict is verify's one line.
func (r *recordReport) verdict() string {
	if !r.Valid {
		reason := r.Reason
		if r.DelegationReason != "" {
			reason += "/" + r.DelegationReason
		}
		return fmt.Sprintf("invalid %s: %s: %s", r.Kind, reason, r.Error)
	}
	if r.Record != nil {
		who := "open (no publisher)"
		if r.Record.Publisher != "" {
			who = "delegated by " + r.Record.Publisher
		}
		return fmt.Sprintf("valid record: %s from %s, seq %d, expires %s, %s", r.Record.Name, r.Record.Peer, r.Record.Seq,
			r.Record.Expires.Format(time.RFC3339Nano), who)
	}
	return fmt.Sprintf("valid delegation: %s may announce %s until %s, signed by %s", r.Delegation.NodePeer, r.Delegation.Name,
		r.Delegation.NotAfter.Format(time.RFC3339), r.Delegation.Publisher)
}

// print is inspect's output: the fields, then the verdict.
func (r *recordReport) print(w io.Writer) {
	fmt.Fprintf(w, "%s, %d bytes\n", r.Kind, r.Bytes)
	if f := r.Record; f != nil {
		fmt.Fprintf(w, "  name       %s\n  peer       %s\n  key        %s\n", f.Name, f.Peer, f.Key)
		for _, ep := range f.Endpoints {
			fmt.Fprintf(w, "  endpoint   %s\n", ep)
		}
		fmt.Fprintf(w, "  region     %s\n  manifest   %s\n  seq        %d\n", dash(f.Region), dash(f.Manifest), f.Seq)
		fmt.Fprintf(w, "  issued     %s\n  expires    %s\n", f.Issued.Format(time.RFC3339Nano), f.Expires.Format(time.RFC3339Nano))
		if f.Withdrawn {
			fmt.Fprintln(w, "  withdrawn  yes")
		}
	}
	if d := r.Delegation; d != nil {
		ind := "  "
		if r.Record != nil {
			fmt.Fprintln(w, "  delegation")
			ind = "    "
		}
		fmt.Fprintf(w, "%sname       %s\n%snode       %s (%s)\n%spublisher  %s\n%sissued     %s\n%snot after  %s\n",
			ind, d.Name, ind, d.Node, d.NodePeer, ind, d.Publisher, ind, d.Issued.Format(time.RFC3339), ind, d.NotAfter.Format(time.RFC3339))
	}
	if r.Unverified != "" {
		fmt.Fprintf(w, "  unverified content (CBOR diagnostic notation)\n    %s\n", r.Unverified)
	}
	fmt.Fprintln(w, r.verdict())
}

// diagnose renders what it can of raw as CBOR diagnostic notation: the
// envelope, and the body or delegation inside it.
func diagnose(raw []byte) string {
	if len(raw) > record.MaxRecordSize {
		return ""
	}
	dm, err := cbor.DiagOptions{ByteStringEncoding: cbor.ByteStringBase16Encoding, MaxNestedLevels: 8}.DiagMode()
	if err != nil {
		return ""
	}
	out, err := dm.Diagnose(raw)
	if err != nil {
		return ""
	}
	var env struct {
		Body []byte `cbor:"1,keyasint"`
	}
	if cbor.Unmarshal(raw, &env) == nil && len(env.Body) > 0 {
		if body, err := dm.Diagnose(env.Body); err == nil {
			out += "\n    body: " + body
		}
	}
	return out
}

// guessKind tells a delegation from a record by its body: a delegation's
// key 4 is a time (an integer), a record's the endpoints (an array).
func guessKind(raw []byte) string {
	var env struct {
		Body []byte `cbor:"1,keyasint"`
	}
	var body map[uint64]cbor.RawMessage
	if cbor.Unmarshal(raw, &env) == nil && cbor.Unmarshal(env.Body, &body) == nil {
		if v := body[4]; len(v) > 0 && v[0]>>5 == 0 {
			return "delegation"
		}
	}
	return "record"
}

// readRecordInput reads INPUT: "-" is standard input, an existing path is a
// file (at most maxRecordInput bytes, a regular file), anything else the
// record itself in hex or base64. File and stdin contents may be raw bytes,
// hex, base64 or a PEM block. What it returns begins as every record and
// delegation does, with a CBOR map; anything else is bad input, not an
// invalid record (so that a word like "zz", which base64 reads as one byte,
// is refused as input instead of reported as a malformed record).
func readRecordInput(arg string, stdin io.Reader) ([]byte, error) {
	// isMap: the first byte is a CBOR map's (major type 5).
	isMap := func(b []byte) bool { return len(b) > 0 && b[0]>>5 == 5 }
	var content []byte
	switch fi, err := os.Stat(arg); {
	case arg == "-":
		b, err := io.ReadAll(io.LimitReader(stdin, maxRecordInput+1))
		if err != nil {
			return nil, fmt.Errorf("standard input: %w", err)
		}
		content = b
	case err == nil:
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s is not a regular file", arg)
		}
		f, err := os.Open(arg)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if content, err = io.ReadAll(io.LimitReader(f, maxRecordInput+1)); err != nil {
			return nil, fmt.Errorf("%s: %w", arg, err)
		}
	default:
		if b, ok := decodeText(arg); ok && isMap(b) {
			return b, nil
		}
		return nil, fmt.Errorf("%q is not a file, nor a record in hex or base64 (a record or delegation begins with a CBOR map: hex a…–b…, base64 o…–v…)", shorten(arg))
	}
	if arg == "-" {
		arg = "standard input"
	}
	if len(content) > maxRecordInput {
		return nil, fmt.Errorf("%s: more than %d bytes: not a record", arg, maxRecordInput)
	}
	if len(content) == 0 {
		return nil, fmt.Errorf("%s: empty input", arg)
	}
	if isMap(content) {
		return content, nil // raw bytes
	}
	if blk, _ := pem.Decode(content); blk != nil && isMap(blk.Bytes) {
		return blk.Bytes, nil
	}
	if b, ok := decodeText(string(content)); ok && isMap(b) {
		return b, nil
	}
	return nil, fmt.Errorf("%s holds neither a record nor a delegation: not raw CBOR (a map), hex, base64 or PEM of one", arg)
}

// decodeText decodes s (surrounding space ignored) as hex, or else as
// base64 (standard or URL alphabet, padded or not).
func decodeText(s string) ([]byte, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, false
	}
	if b, err := hex.DecodeString(s); err == nil {
		return b, true
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, true
		}
	}
	return nil, false
}

func shorten(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// parseNow parses --now: RFC 3339, or milliseconds since the Unix epoch;
// "" is the current time.
func parseNow(s string) (time.Time, error) {
	if s == "" {
		return time.Now(), nil
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(ms), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want RFC 3339 (2026-11-26T12:00:00Z) or milliseconds since the epoch", s)
	}
	return t, nil
}

// recordVerb makes or checks a record (verb).
func recordVerb(c *cobra.Command, args []string, e *env, verb string, name string, now string, kind string, nodeKey string, publishers []string, asJSON bool) error {
	var o recordOpts
	var err error
	if o.raw, err = readRecordInput(args[0], c.InOrStdin()); err != nil {
		return usageErr("%v", err)
	}
	if name != "" {
		if err := checkName(name); err != nil {
			return err
		}
	}
	o.name = name
	if o.now, err = parseNow(now); err != nil {
		return usageErr("--now: %v", err)
	}
	for _, k := range publishers {
		pub, err := record.ParsePublicKey(k)
		if err != nil {
			return usageErr("--publisher: %v", err)
		}
		o.publishers = append(o.publishers, pub)
	}
	if nodeKey != "" {
		if o.node, err = record.ParsePublicKey(nodeKey); err != nil {
			return usageErr("--node: %v", err)
		}
	}
	switch kind {
	case "auto":
		o.kind = guessKind(o.raw)
	case "record", "delegation":
		o.kind = kind
	default:
		return usageErr("--kind %q: want auto, record or delegation", kind)
	}
	rep := checkRecord(o)
	switch {
	case asJSON:
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	case verb == "inspect":
		rep.print(e.stdout)
	default:
		fmt.Fprintln(e.stdout, rep.verdict())
	}
	if !rep.Valid {
		return silentExit(ExitFailure)
	}
	return nil
}
