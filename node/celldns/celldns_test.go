package celldns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// table is a Source with fixed answers; block makes Lookup wait for ctx.
type table struct {
	m     map[string]Answer
	block chan struct{} // closed to let blocked lookups go
	err   error
}

func (s *table) Lookup(ctx context.Context, name string) (Answer, error) {
	if s.block != nil {
		select {
		case <-s.block:
		case <-ctx.Done():
			return Answer{}, ctx.Err()
		}
	}
	if s.err != nil {
		return Answer{}, s.err
	}
	return s.m[name], nil
}

var now = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func testSource() *table {
	later := now.Add(50 * time.Second)
	return &table{m: map[string]Answer{
		"acme/exchange": {Live: 3, Targets: []Target{
			{Host: "127.0.0.1", Port: 9000, Expires: later},
			{Host: "::1", Port: 9001, Expires: later},
			{Host: "db.example.net", Port: 9002, Expires: later},
		}},
		"acme.eu/exchange": {Live: 1, Targets: []Target{{Host: "10.0.0.7", Port: 9000, Expires: later}}},
		"acme/unix":        {Live: 2}, // unix-socket or unreachable instances only
		"acme/soon": {Live: 2, Targets: []Target{
			{Host: "10.0.0.1", Port: 1, Expires: now.Add(2500 * time.Millisecond)},
			{Host: "10.0.0.2", Port: 2, Expires: now.Add(-time.Second)}, // expired: left out
		}},
	}}
}

func newServer(t *testing.T, src Source, mod func(*Config)) *Server {
	t.Helper()
	cfg := Config{Addr: "127.0.0.1:0", Now: func() time.Time { return now }}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func query(t *testing.T, s *Server, netw, name string, qtype uint16, edns bool) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edns {
		m.SetEdns0(1232, false)
	}
	r, _, err := (&dns.Client{Net: netw, Timeout: 10 * time.Second}).Exchange(m, s.Addr())
	if err != nil {
		t.Fatalf("%s %s: %v", dns.TypeToString[qtype], name, err)
	}
	return r
}

func ede(m *dns.Msg) string {
	if opt := m.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if e, ok := o.(*dns.EDNS0_EDE); ok {
				return e.ExtraText
			}
		}
	}
	return ""
}

func TestAnswers(t *testing.T) {
	s := newServer(t, testSource(), nil)
	for _, tc := range []struct {
		name  string
		qtype uint16
		rcode int
		want  []string // answer records, as dns prints them without the header
		why   string   // in the extended error's text
	}{
		{"_exchange._tcp.acme.cell.", dns.TypeSRV, dns.RcodeSuccess,
			[]string{"0 1 9000 7f000001.addr.cell.", "0 1 9001 00000000000000000000000000000001.addr.cell.", "0 1 9002 db.example.net."}, ""},
		{"_EXCHANGE._TCP.Acme.CELL.", dns.TypeSRV, dns.RcodeSuccess,
			[]string{"0 1 9000 7f000001.addr.cell.", "0 1 9001 00000000000000000000000000000001.addr.cell.", "0 1 9002 db.example.net."}, ""},
		{"exchange.acme.cell.", dns.TypeA, dns.RcodeSuccess, []string{"127.0.0.1"}, ""},
		{"exchange.acme.cell.", dns.TypeAAAA, dns.RcodeSuccess, []string{"::1"}, ""},
		{"_exchange._tcp.acme.eu.cell.", dns.TypeSRV, dns.RcodeSuccess, []string{"0 1 9000 0a000007.addr.cell."}, ""},
		{"exchange.acme.eu.cell.", dns.TypeA, dns.RcodeSuccess, []string{"10.0.0.7"}, ""},
		{"_soon._tcp.acme.cell.", dns.TypeSRV, dns.RcodeSuccess, []string{"0 1 1 0a000001.addr.cell."}, ""},
		{"7f000001.addr.cell.", dns.TypeA, dns.RcodeSuccess, []string{"127.0.0.1"}, ""},
		{"cell.", dns.TypeSOA, dns.RcodeSuccess, []string{"ns.cell. hostmaster.cell. 1 60 60 60 2"}, ""},
		// No such cell.
		{"_ledger._tcp.acme.cell.", dns.TypeSRV, dns.RcodeNameError, nil, "no live instance of acme/ledger"},
		{"ledger.acme.cell.", dns.TypeA, dns.RcodeNameError, nil, "no live instance"},
		// A cell with nothing DNS can name.
		{"_unix._tcp.acme.cell.", dns.TypeSRV, dns.RcodeSuccess, nil, "2 live instances, none with a reachable TCP endpoint"},
		{"exchange.acme.eu.cell.", dns.TypeAAAA, dns.RcodeSuccess, nil, "at an IPv6 address"},
		// Names with wrong labels.
		{"_exchange._udp.acme.cell.", dns.TypeSRV, dns.RcodeNameError, nil, "needs the label _tcp"},
		{"_exchange.acme.cell.", dns.TypeSRV, dns.RcodeNameError, nil, "needs the label _tcp"},
		{"_tcp.acme.cell.", dns.TypeSRV, dns.RcodeNameError, nil, "no service label"},
		{"_exchange._tcp.cell.", dns.TypeSRV, dns.RcodeNameError, nil, "no org after _tcp"},
		{"ex_change.acme.cell.", dns.TypeA, dns.RcodeNameError, nil, "not allowed"},
		{"acme.cell.", dns.TypeA, dns.RcodeNameError, nil, "two parts"},
		{"zz.addr.cell.", dns.TypeA, dns.RcodeNameError, nil, "hex digits"},
		{"7f00000102.addr.cell.", dns.TypeA, dns.RcodeNameError, nil, "hex digits"},
		// Types we do not serve.
		{"exchange.acme.cell.", dns.TypeMX, dns.RcodeSuccess, nil, "A and AAAA records only, not MX"},
		{"exchange.acme.cell.", dns.TypeSRV, dns.RcodeSuccess, nil, "A and AAAA records only"},
		{"_exchange._tcp.acme.cell.", dns.TypeA, dns.RcodeSuccess, nil, "SRV records only"},
		{"_exchange._tcp.acme.cell.", dns.TypeANY, dns.RcodeSuccess, nil, "not ANY"},
		{"cell.", dns.TypeA, dns.RcodeSuccess, nil, "only an SOA"},
		{"7f000001.addr.cell.", dns.TypeAAAA, dns.RcodeSuccess, nil, "other family"},
		// Not ours.
		{"example.com.", dns.TypeA, dns.RcodeRefused, nil, "only for the zone cell."},
		{"cell.example.com.", dns.TypeA, dns.RcodeRefused, nil, "only for the zone"},
	} {
		t.Run(tc.name+"/"+dns.TypeToString[tc.qtype], func(t *testing.T) {
			r := query(t, s, "udp", tc.name, tc.qtype, true)
			if r.Rcode != tc.rcode {
				t.Fatalf("rcode %s, want %s (%s)", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode], ede(r))
			}
			var got []string
			for _, rr := range r.Answer {
				if rr.Header().Name != tc.name {
					t.Errorf("owner %q, want the question's %q", rr.Header().Name, tc.name)
				}
				got = append(got, strings.TrimPrefix(rr.String(), rr.Header().String()))
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("answers %q, want %q", got, tc.want)
			}
			if !strings.Contains(ede(r), tc.why) {
				t.Fatalf("extended error %q, want it to say %q", ede(r), tc.why)
			}
			if (r.Rcode == dns.RcodeNameError || (r.Rcode == dns.RcodeSuccess && len(r.Answer) == 0)) &&
				(len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA) {
				t.Fatalf("negative answer without the zone's SOA: %v", r.Ns)
			}
			if r.Rcode != dns.RcodeRefused && !r.Authoritative {
				t.Fatal("answer not authoritative")
			}
		})
	}
}

// TestTTL: no TTL is more than MaxTTL nor a record's remaining life, and
// an RRset has one TTL, the least of its records'.
func TestTTL(t *testing.T) {
	s := newServer(t, testSource(), func(c *Config) { c.MaxTTL = 30 * time.Second })
	r := query(t, s, "udp", "_exchange._tcp.acme.cell.", dns.TypeSRV, true)
	for _, rr := range append(r.Answer, r.Extra...) {
		if rr.Header().Rrtype != dns.TypeOPT && rr.Header().Ttl != 30 {
			t.Fatalf("TTL %d, want MaxTTL 30: %v", rr.Header().Ttl, rr)
		}
	}
	r = query(t, s, "udp", "_soon._tcp.acme.cell.", dns.TypeSRV, true)
	if len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 2 {
		t.Fatalf("a record with 2.5 s left: %v", r.Answer)
	}
}

// TestTruncation: a set too big for a plain UDP answer sets TC, and TCP
// carries all of it.
func TestTruncation(t *testing.T) {
	src := &table{m: map[string]Answer{"acme/big": {Live: 40}}}
	for i := range 40 {
		src.m["acme/big"] = Answer{Live: 40, Targets: append(src.m["acme/big"].Targets,
			Target{Host: fmt.Sprintf("10.0.1.%d", i+1), Port: 9000, Expires: now.Add(time.Minute)})}
	}
	s := newServer(t, src, nil)
	r := query(t, s, "udp", "_big._tcp.acme.cell.", dns.TypeSRV, false)
	r.Compress = true // as it came on the wire
	if !r.Truncated || r.Len() > dns.MinMsgSize {
		t.Fatalf("UDP answer: truncated %v, %d bytes", r.Truncated, r.Len())
	}
	r = query(t, s, "tcp", "_big._tcp.acme.cell.", dns.TypeSRV, false)
	if r.Truncated || len(r.Answer) != 40 || len(r.Extra) != 40 {
		t.Fatalf("TCP answer: truncated %v, %d answers, %d additional", r.Truncated, len(r.Answer), len(r.Extra))
	}
	if r.IsEdns0() != nil {
		t.Fatal("EDNS in the answer to a query without it")
	}
}

// TestSourceTrouble: a failing, slow or swamped source is SERVFAIL with a
// reason, and queries that need no lookup are still answered.
func TestSourceTrouble(t *testing.T) {
	s := newServer(t, &table{err: errors.New("boom")}, nil)
	if r := query(t, s, "udp", "exchange.acme.cell.", dns.TypeA, true); r.Rcode != dns.RcodeServerFailure || !strings.Contains(ede(r), "boom") {
		t.Fatalf("failing source: %v", r)
	}

	blocked := &table{m: testSource().m, block: make(chan struct{})}
	s = newServer(t, blocked, func(c *Config) { c.Timeout = 50 * time.Millisecond; c.MaxPending = 1 })
	if r := query(t, s, "udp", "exchange.acme.cell.", dns.TypeA, true); r.Rcode != dns.RcodeServerFailure || !strings.Contains(ede(r), "deadline") {
		t.Fatalf("slow source: %v (%s)", r, ede(r))
	}
	// One query waits for the source (MaxPending 1): the next is refused
	// at once, and a query with no lookup is answered.
	s2 := newServer(t, blocked, func(c *Config) { c.Timeout = time.Hour; c.MaxPending = 1 })
	first := make(chan *dns.Msg)
	go func() {
		m := new(dns.Msg)
		m.SetQuestion("exchange.acme.cell.", dns.TypeA)
		r, _, _ := (&dns.Client{Timeout: time.Hour}).Exchange(m, s2.Addr())
		first <- r
	}()
	for len(s2.pending) == 0 { // until the first query waits for the source
		time.Sleep(time.Millisecond)
	}
	r := query(t, s2, "udp", "_exchange._tcp.acme.cell.", dns.TypeSRV, true)
	if r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("second query while one waits: %v", r)
	}
	if !strings.Contains(ede(r), "too many queries") {
		t.Fatalf("swamped: %q", ede(r))
	}
	if r := query(t, s2, "udp", "cell.", dns.TypeSOA, true); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("SOA while swamped: %v", r)
	}
	close(blocked.block)
	if r := <-first; r == nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("the waiting query: %v", r)
	}
}

// TestMalformedPackets: garbage, truncated, multi-question, response and
// non-query packets get FORMERR, NOTIMP or nothing, and the server goes on
// answering.
func TestMalformedPackets(t *testing.T) {
	s := newServer(t, testSource(), nil)
	good := new(dns.Msg)
	good.SetQuestion("exchange.acme.cell.", dns.TypeA)
	wire, _ := good.Pack()
	two := good.Copy()
	two.Question = append(two.Question, dns.Question{Name: "cell.", Qtype: dns.TypeSOA, Qclass: dns.ClassINET})
	twoWire, _ := two.Pack()
	notify := good.Copy()
	notify.Opcode = dns.OpcodeNotify
	notifyWire, _ := notify.Pack()
	update := good.Copy()
	update.Opcode = dns.OpcodeUpdate
	updateWire, _ := update.Pack()
	chaos := good.Copy()
	chaos.Question[0].Qclass = dns.ClassCHAOS
	chaosWire, _ := chaos.Pack()
	resp := good.Copy()
	resp.Response = true
	respWire, _ := resp.Pack()

	conn, err := net.Dial("udp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, tc := range []struct {
		name  string
		pkt   []byte
		rcode int // -1: no answer expected
	}{
		{"three bytes", []byte{1, 2, 3}, -1},
		{"header only, question missing", wire[:12], dns.RcodeFormatError},
		{"question cut short", wire[:len(wire)-3], dns.RcodeFormatError},
		{"two questions", twoWire, dns.RcodeFormatError},
		{"a response", respWire, -1},
		{"NOTIFY", notifyWire, dns.RcodeNotImplemented},
		{"UPDATE", updateWire, dns.RcodeNotImplemented},
		{"class CH", chaosWire, dns.RcodeNotImplemented},
		{"label pointing at itself", append(append([]byte{}, wire[:12]...), 0xc0, 0x0c, 0, 1, 0, 1), dns.RcodeFormatError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := conn.Write(tc.pkt); err != nil {
				t.Fatal(err)
			}
			if tc.rcode >= 0 {
				buf := make([]byte, 512)
				conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				n, err := conn.Read(buf)
				if err != nil {
					t.Fatal(err)
				}
				var r dns.Msg
				if err := r.Unpack(buf[:n]); err != nil {
					t.Fatal(err)
				}
				if r.Rcode != tc.rcode {
					t.Fatalf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
				}
			}
			// The server still answers a good query.
			if r := query(t, s, "udp", "exchange.acme.cell.", dns.TypeA, false); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
				t.Fatalf("good query after %s: %v", tc.name, r)
			}
		})
	}
	// Over TCP, a length prefix promising more than arrives, then the
	// connection closing, costs nothing either.
	tc, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	tc.Write([]byte{0xff, 0xff, 1, 2, 3})
	tc.Close()
	if r := query(t, s, "tcp", "exchange.acme.cell.", dns.TypeA, false); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("TCP after a broken connection: %v", r)
	}
}

func TestNew(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "10.1.2.3:53", "localhost:53", "nonsense"} {
		if _, err := New(Config{Addr: addr}, testSource()); err == nil {
			t.Errorf("New(%q) succeeded", addr)
		}
	}
	s := newServer(t, testSource(), nil)
	if _, err := New(Config{Addr: s.Addr()}, testSource()); err == nil {
		t.Fatal("a second server on the same address")
	}
	s.Close()
	s.Close() // twice is fine
}

func TestParseName(t *testing.T) {
	for _, tc := range []struct {
		in   string
		kind Kind
		cell string
		ok   bool
	}{
		{"_exchange._tcp.acme.cell.", KindSRV, "acme/exchange", true},
		{"_exchange.v2._tcp.acme.cell", KindSRV, "acme/exchange.v2", true},
		{"_x._tcp.a.b.c.cell.", KindSRV, "a.b.c/x", true},
		{"exchange.acme.cell.", KindCell, "acme/exchange", true},
		{"exchange.acme.eu.cell.", KindCell, "acme.eu/exchange", true},
		{"CELL.", KindApex, "", true},
		{"7f000001.addr.cell.", KindAddr, "", true},
		{"a..b.cell.", 0, "", false},
		{"_x._tcp._tcp.cell.", 0, "", false},
		{"x.cell.org.", 0, "", false},
		{"_x._tcp." + strings.Repeat("a", 65) + ".cell.", 0, "", false},
	} {
		n, err := ParseName(tc.in)
		if (err == nil) != tc.ok || (err == nil && (n.Kind != tc.kind || n.Cell != tc.cell)) {
			t.Errorf("ParseName(%q) = %+v, %v", tc.in, n, err)
		}
		if err != nil && !errors.Is(err, ErrName) {
			t.Errorf("ParseName(%q): %v does not wrap ErrName", tc.in, err)
		}
	}
}

// FuzzAnswer: any message that unpacks gets an answer that packs, and
// nothing panics.
func FuzzAnswer(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"_exchange._tcp.acme.cell.", dns.TypeSRV}, {"exchange.acme.cell.", dns.TypeA}, {"7f000001.addr.cell.", dns.TypeAAAA},
		{"a..cell.", dns.TypeA}, {"example.com.", dns.TypeMX}} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.SetEdns0(4096, true)
		b, _ := m.Pack()
		f.Add(b)
	}
	var mu sync.Mutex
	s := &Server{cfg: Config{MaxTTL: 5 * time.Second, NegativeTTL: time.Second, Timeout: time.Second, Now: func() time.Time { return now }},
		src: testSource(), pending: make(chan struct{}, 4)}
	f.Fuzz(func(t *testing.T, b []byte) {
		var req dns.Msg
		if req.Unpack(b) != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		resp := s.Answer(context.Background(), &req)
		resp.Truncate(dns.MinMsgSize)
		if _, err := resp.Pack(); err != nil {
			t.Fatalf("answer does not pack: %v\n%v", err, resp)
		}
	})
}
