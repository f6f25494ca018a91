// Package celldns answers DNS for cells on a loopback address: SRV, A and
// AAAA records for the reachable TCP instances of a cell, under the zone
// "cell.". It knows nothing of the DHT: a Source (the agent) says which
// targets a cell has, and celldns turns them into answers.
//
// Names (case does not matter):
//
//	_NAME._tcp.ORG.cell.   SRV: one record per reachable TCP instance
//	NAME.ORG.cell.         A / AAAA: the instances' addresses (no ports)
//	HEX.addr.cell.         A / AAAA: the address HEX encodes (SRV targets)
//	cell.                  SOA
//
// ORG may hold dots ("acme.eu"); so may NAME, in the SRV form only (in the
// A form the first label is NAME). The org "addr" is reserved for SRV
// targets in the A form. An SRV target is "HEX.addr.cell." (the address in
// hex: 8 digits for IPv4, 32 for IPv6), answered without a lookup, or the
// host name the instance announced.
//
// TTLs are never more than a record's remaining life (Target.Expires) nor
// Config.MaxTTL. A cell with no live instance is NXDOMAIN; one whose
// instances have no reachable TCP endpoint (unix sockets, unreachable) is
// an empty NOERROR answer; a name that cannot be a cell's is NXDOMAIN, and
// a type other than SRV, A, AAAA and SOA an empty NOERROR answer, each with
// an extended DNS error (RFC 8914) whose text says why when the query
// carries EDNS. Names outside the zone are REFUSED.
//
// A Server is safe for concurrent use; it owns its goroutines (New starts
// them, Close stops them).
package celldns

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	"github.com/miekg/dns"
)

// DefaultAddr is where the agent answers DNS when Config.Addr is empty.
const DefaultAddr = "127.0.0.1:8653"

// Zone is the DNS zone celldns answers for.
const Zone = "cell."

// Target is one reachable TCP endpoint of a cell's instance.
type Target struct {
	Host    string    // an IP literal or a host name
	Port    uint16    // the TCP port
	Expires time.Time // when the instance's record expires
}

// Answer is what a Source knows of a cell.
type Answer struct {
	// Live is the number of live (and, when the agent pins publishers,
	// trusted) instances; 0 means NXDOMAIN.
	Live int
	// Targets are the reachable TCP endpoints, best first.
	Targets []Target
}

// Source looks a cell up. Lookup may block for a find (a cold cache); ctx
// bounds it. name is a valid cell name, "org/name".
type Source interface {
	Lookup(ctx context.Context, name string) (Answer, error)
}

// Config configures a Server. The zero value works: DefaultAddr, answers
// cached at most 5 s, cold lookups cut at 3 s, 256 lookups at once.
type Config struct {
	// Addr is the UDP and TCP address to listen on; "" means DefaultAddr.
	// It must be a loopback address (the server has no access control);
	// port 0 picks a free port, the same for UDP and TCP.
	Addr string
	// MaxTTL caps every TTL; 0 means 5 s.
	MaxTTL time.Duration
	// NegativeTTL is the SOA minimum, how long resolvers cache a negative
	// answer; 0 means 2 s.
	NegativeTTL time.Duration
	// Timeout bounds a lookup the Source has to go to the network for; 0
	// means 3 s. A lookup that times out is SERVFAIL.
	Timeout time.Duration
	// MaxPending is how many queries may wait for the Source at once; a
	// query beyond it is SERVFAIL at once; 0 means 256.
	MaxPending int
	// Logger receives debug logs; nil means discard.
	Logger *slog.Logger
	// Now is the clock TTLs are computed with; nil means time.Now.
	Now func() time.Time
}

// Server answers DNS for cells.
type Server struct {
	cfg     Config
	src     Source
	log     *slog.Logger
	udp     *dns.Server
	tcp     *dns.Server
	addr    string
	pending chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

// New listens on cfg.Addr (UDP and TCP) and serves queries from src. It
// starts everything or nothing.
func New(cfg Config, src Source) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.MaxTTL <= 0 {
		cfg.MaxTTL = 5 * time.Second
	}
	if cfg.NegativeTTL <= 0 {
		cfg.NegativeTTL = 2 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * time.Second
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 256
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ap, err := netip.ParseAddrPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("celldns: address %q: want IP:PORT on loopback, e.g. %s", cfg.Addr, DefaultAddr)
	}
	if !ap.Addr().IsLoopback() {
		return nil, fmt.Errorf("celldns: address %s is not a loopback address (the DNS server has no access control)", cfg.Addr)
	}
	s := &Server{cfg: cfg, src: src, log: cfg.Logger, pending: make(chan struct{}, cfg.MaxPending)}
	pc, ln, err := listenBoth(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("celldns: %w", err)
	}
	s.addr = pc.LocalAddr().String()
	accept := func(h dns.Header) dns.MsgAcceptAction {
		if op := int(h.Bits>>11) & 0xF; op == dns.OpcodeNotify {
			return dns.MsgRejectNotImplemented
		}
		return dns.DefaultMsgAcceptFunc(h)
	}
	invalid := func(m []byte, err error) { s.log.Debug("malformed DNS message", "len", len(m), "err", err) }
	s.udp = &dns.Server{PacketConn: pc, Handler: s, MsgAcceptFunc: accept, MsgInvalidFunc: invalid}
	s.tcp = &dns.Server{Listener: ln, Handler: s, MsgAcceptFunc: accept, MsgInvalidFunc: invalid,
		ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, IdleTimeout: func() time.Duration { return 8 * time.Second },
		MaxTCPQueries: 128}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		s.wg.Go(func() {
			if err := srv.ActivateAndServe(); err != nil {
				s.log.Debug("DNS server stopped", "err", err)
			}
		})
		<-started
	}
	return s, nil
}

// listenBoth binds UDP and TCP on one address; with port 0, on one port
// free for both.
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	for range 20 {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if !strings.HasSuffix(addr, ":0") {
			return nil, nil, err
		}
	}
	return nil, nil, errors.New("no port free for both UDP and TCP")
}

// Addr returns the address the server listens on (UDP and TCP).
func (s *Server) Addr() string { return s.addr }

// Close stops the server and waits for its goroutines. It is safe to call
// more than once.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		err = errors.Join(s.udp.Shutdown(), s.tcp.Shutdown())
		s.wg.Wait()
	})
	return err
}

// ServeDNS answers one query; it implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	resp := s.Answer(context.Background(), req)
	size := dns.MinMsgSize
	if _, udp := w.RemoteAddr().(*net.UDPAddr); !udp {
		size = dns.MaxMsgSize
	} else if opt := req.IsEdns0(); opt != nil {
		size = max(int(opt.UDPSize()), dns.MinMsgSize)
	}
	resp.Truncate(size)
	if err := w.WriteMsg(resp); err != nil {
		s.log.Debug("DNS reply not sent", "err", err)
	}
}

// Answer builds the reply to req. ctx bounds the lookup together with
// Config.Timeout.
func (s *Server) Answer(ctx context.Context, req *dns.Msg) *dns.Msg {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	resp.RecursionAvailable = false
	edns := req.IsEdns0() != nil
	if edns {
		resp.SetEdns0(1232, false)
	}
	fail := func(rcode int, code uint16, why string) *dns.Msg {
		resp.Rcode = rcode
		resp.Answer = nil
		if rcode == dns.RcodeNameError || rcode == dns.RcodeSuccess {
			resp.Ns = []dns.RR{s.soa()}
		}
		if edns {
			opt := resp.IsEdns0()
			opt.Option = append(opt.Option, &dns.EDNS0_EDE{InfoCode: code, ExtraText: why})
		}
		return resp
	}
	if req.Opcode != dns.OpcodeQuery {
		return fail(dns.RcodeNotImplemented, dns.ExtendedErrorCodeNotSupported, "cellnode: only standard queries")
	}
	if len(req.Question) != 1 {
		return fail(dns.RcodeFormatError, dns.ExtendedErrorCodeOther, "cellnode: want exactly one question")
	}
	q := req.Question[0]
	if q.Qclass != dns.ClassINET {
		return fail(dns.RcodeNotImplemented, dns.ExtendedErrorCodeNotSupported, "cellnode: only class IN")
	}
	qname := strings.ToLower(dns.Fqdn(q.Name))
	if !dns.IsSubDomain(Zone, qname) {
		resp.Authoritative = false
		return fail(dns.RcodeRefused, dns.ExtendedErrorCodeNotAuthoritative, "cellnode answers only for the zone "+Zone)
	}
	qn, err := ParseName(qname)
	if err != nil {
		return fail(dns.RcodeNameError, dns.ExtendedErrorCodeOther, err.Error())
	}
	switch {
	case qn.Kind == KindApex && q.Qtype == dns.TypeSOA:
		resp.Answer = []dns.RR{s.soa()}
		return resp
	case qn.Kind == KindApex:
		return fail(dns.RcodeSuccess, dns.ExtendedErrorCodeNotSupported, "cellnode: the zone apex has only an SOA record")
	case qn.Kind == KindSRV && q.Qtype != dns.TypeSRV,
		qn.Kind != KindSRV && q.Qtype != dns.TypeA && q.Qtype != dns.TypeAAAA:
		return fail(dns.RcodeSuccess, dns.ExtendedErrorCodeNotSupported,
			fmt.Sprintf("cellnode: %s names have %s records only, not %s", qn.Kind, qn.Kind.types(), dns.TypeToString[q.Qtype]))
	case qn.Kind == KindAddr:
		if rr := addrRR(q.Name, q.Qtype, qn.Addr, uint32(s.cfg.MaxTTL/time.Second)); rr != nil {
			resp.Answer = []dns.RR{rr}
			return resp
		}
		return fail(dns.RcodeSuccess, dns.ExtendedErrorCodeOther, "cellnode: that address is of the other family")
	}

	select {
	case s.pending <- struct{}{}:
	default:
		return fail(dns.RcodeServerFailure, dns.ExtendedErrorCodeOther, "cellnode: too many queries waiting for a find; try again")
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	ans, err := s.src.Lookup(ctx, qn.Cell)
	cancel()
	<-s.pending
	if err != nil {
		s.log.Debug("DNS lookup failed", "cell", qn.Cell, "err", err)
		return fail(dns.RcodeServerFailure, dns.ExtendedErrorCodeOther, "cellnode: find "+qn.Cell+": "+err.Error())
	}
	if ans.Live == 0 {
		return fail(dns.RcodeNameError, dns.ExtendedErrorCodeOther, "cellnode: no live instance of "+qn.Cell)
	}
	now := s.cfg.Now()
	ttl := uint32(s.cfg.MaxTTL / time.Second)
	type rec struct {
		t    Target
		addr netip.Addr // valid when Host is an IP
	}
	var recs []rec
	for _, t := range ans.Targets {
		left := t.Expires.Sub(now)
		if left <= 0 || t.Port == 0 || t.Host == "" {
			continue
		}
		r := rec{t: t}
		if a, err := netip.ParseAddr(t.Host); err == nil {
			r.addr = a.Unmap()
		} else if _, ok := dns.IsDomainName(t.Host); !ok {
			continue
		}
		if q.Qtype != dns.TypeSRV && (!r.addr.IsValid() || r.addr.Is4() != (q.Qtype == dns.TypeA)) {
			continue
		}
		recs = append(recs, r)
		ttl = min(ttl, uint32(math.Floor(left.Seconds())))
	}
	seen := map[string]bool{}
	for _, r := range recs {
		if q.Qtype != dns.TypeSRV {
			if !seen[r.addr.String()] {
				seen[r.addr.String()] = true
				resp.Answer = append(resp.Answer, addrRR(q.Name, q.Qtype, r.addr, ttl))
			}
			continue
		}
		target := dns.Fqdn(r.t.Host)
		if r.addr.IsValid() {
			target = AddrName(r.addr)
			if !seen[target] {
				seen[target] = true
				qt := dns.TypeA
				if !r.addr.Is4() {
					qt = dns.TypeAAAA
				}
				resp.Extra = append(resp.Extra, addrRR(target, qt, r.addr, ttl))
			}
		}
		resp.Answer = append(resp.Answer, &dns.SRV{
			Hdr:      dns.RR_Header{Name: q.Name, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: ttl},
			Priority: 0, Weight: 1, Port: r.t.Port, Target: target,
		})
	}
	if len(resp.Answer) == 0 {
		return fail(dns.RcodeSuccess, dns.ExtendedErrorCodeOther, fmt.Sprintf(
			"cellnode: %s has %d live instances, none with a reachable TCP endpoint%s", qn.Cell, ans.Live, familyNote(q.Qtype)))
	}
	if edns {
		// SetEdns0 put the OPT record in Extra first; keep it last.
		opt := resp.IsEdns0()
		extra := resp.Extra[:0:0]
		for _, rr := range resp.Extra {
			if rr != opt {
				extra = append(extra, rr)
			}
		}
		resp.Extra = append(extra, opt)
	}
	return resp
}

func familyNote(qt uint16) string {
	switch qt {
	case dns.TypeA:
		return " at an IPv4 address"
	case dns.TypeAAAA:
		return " at an IPv6 address"
	}
	return ""
}

func (s *Server) soa() dns.RR {
	neg := uint32(s.cfg.NegativeTTL / time.Second)
	return &dns.SOA{
		Hdr: dns.RR_Header{Name: Zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: neg},
		Ns:  "ns." + Zone, Mbox: "hostmaster." + Zone, Serial: 1,
		Refresh: 60, Retry: 60, Expire: 60, Minttl: neg,
	}
}

func addrRR(name string, qtype uint16, a netip.Addr, ttl uint32) dns.RR {
	hdr := dns.RR_Header{Name: name, Rrtype: qtype, Class: dns.ClassINET, Ttl: ttl}
	switch {
	case qtype == dns.TypeA && a.Is4():
		return &dns.A{Hdr: hdr, A: a.AsSlice()}
	case qtype == dns.TypeAAAA && a.Is6():
		return &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()}
	}
	return nil
}

// AddrName returns the name "HEX.addr.cell." that stands for address a in
// SRV answers.
func AddrName(a netip.Addr) string {
	return hex.EncodeToString(a.Unmap().AsSlice()) + ".addr." + Zone
}

// Kind says what a name under the zone stands for.
type Kind int

// The kinds of names under the zone.
const (
	KindApex Kind = iota // "cell."
	KindSRV              // "_NAME._tcp.ORG.cell."
	KindCell             // "NAME.ORG.cell."
	KindAddr             // "HEX.addr.cell."
)

func (k Kind) String() string {
	return [...]string{"zone apex", "SRV", "cell", "address"}[k]
}

func (k Kind) types() string {
	if k == KindSRV {
		return "SRV"
	}
	return "A and AAAA"
}

// Name is a parsed query name.
type Name struct {
	Kind Kind
	Cell string     // "org/name" for KindSRV and KindCell
	Addr netip.Addr // for KindAddr
}

// ErrName is wrapped by ParseName's errors.
var ErrName = errors.New("celldns: not a cell's name")

const wantNames = "want _NAME._tcp.ORG.cell (SRV) or NAME.ORG.cell (A, AAAA), e.g. _exchange._tcp.acme.cell"

// ParseName parses a fully qualified name under the zone (any case).
func ParseName(fqdn string) (Name, error) {
	fqdn = strings.ToLower(dns.Fqdn(fqdn))
	if fqdn == Zone {
		return Name{Kind: KindApex}, nil
	}
	rest, ok := strings.CutSuffix(fqdn, "."+Zone)
	if !ok {
		return Name{}, fmt.Errorf("%w: %q is not under %s", ErrName, fqdn, Zone)
	}
	labels := strings.Split(rest, ".")
	bad := func(why string) (Name, error) {
		return Name{}, fmt.Errorf("%w: %q: %s; %s", ErrName, fqdn, why, wantNames)
	}
	if len(labels) == 2 && labels[1] == "addr" {
		b, err := hex.DecodeString(labels[0])
		if a, ok := netip.AddrFromSlice(b); err == nil && ok && (len(b) == 4 || len(b) == 16) {
			return Name{Kind: KindAddr, Addr: a}, nil
		}
		return bad("an address label is 8 (IPv4) or 32 (IPv6) hex digits")
	}
	for _, l := range labels {
		if l == "" {
			return bad("empty label")
		}
	}
	var name, org string
	if strings.HasPrefix(labels[0], "_") {
		tcp := -1
		for i, l := range labels {
			if l == "_tcp" {
				tcp = i
				break
			}
		}
		switch {
		case tcp < 0:
			return bad("an SRV name needs the label _tcp (only TCP endpoints are served)")
		case tcp == 0:
			return bad("no service label before _tcp")
		case tcp == len(labels)-1:
			return bad("no org after _tcp")
		}
		name = strings.Join(labels[:tcp], ".")[1:]
		org = strings.Join(labels[tcp+1:], ".")
	} else {
		if len(labels) < 2 {
			return bad("a cell's name has two parts")
		}
		name, org = labels[0], strings.Join(labels[1:], ".")
	}
	cell := org + "/" + name
	if _, err := record.ParseName(cell); err != nil {
		return bad(strings.TrimPrefix(err.Error(), "dht: "))
	}
	if strings.HasPrefix(labels[0], "_") {
		return Name{Kind: KindSRV, Cell: cell}, nil
	}
	return Name{Kind: KindCell, Cell: cell}, nil
}
