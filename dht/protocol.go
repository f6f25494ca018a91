package dht

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	"github.com/cellnode/cellnode/internal/frame"
	"github.com/cellnode/cellnode/internal/wire"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio"
	msmux "github.com/multiformats/go-multistream"
)

// ProtocolID is the stream protocol on which DHT servers store and serve
// the instance sets of cell names. One stream carries one request and one
// response, each a varint-length-prefixed CBOR message (see docs/records.md).
const ProtocolID protocol.ID = "/cell/instances/1.0.0"

const (
	opPut = wire.OpPut
	opGet = wire.OpGet

	maxRequestSize  = record.MaxRecordSize + 512
	maxResponseSize = 2 << 20
)

// The protocol's messages (internal/wire, shared with the attack suite and
// the fuzz targets).
type (
	request  = wire.Request
	response = wire.Response
)

// msgDec decodes protocol messages: strict on structure, tolerant of fields
// a later version may add.
var msgDec = wire.Dec

// msgEnc encodes protocol messages in core deterministic encoding, as the
// record format does its bodies.
var msgEnc = wire.Enc

// handle serves one request stream. Every stream costs its peer a token of
// the rate limiter, whatever it carries: a request that cannot be read or
// decoded is counted ("request_malformed") and limited like any other.
func (d *Node) handle(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(d.cfg.RequestTimeout))
	allowed := d.allow(s.Conn().RemotePeer())
	if !allowed {
		d.count.add("rate_limited", 1)
	}
	r := msgio.NewVarintReaderSize(s, maxRequestSize)
	msg, err := r.ReadMsg()
	if err != nil {
		d.count.add("request_malformed", 1)
		_ = s.Reset()
		return
	}
	var req request
	err = msgDec.Unmarshal(msg, &req)
	r.ReleaseMsg(msg)
	if err != nil || (req.Op != opPut && req.Op != opGet) {
		d.count.add("request_malformed", 1)
	}
	var resp response
	switch {
	case !allowed:
		resp.Error = "rate limited"
	case err != nil:
		resp.Error = "malformed request"
	case req.Op == opPut:
		d.count.add("put_received", 1)
		if _, err := record.ParseName(req.Name); err != nil {
			resp.Error = err.Error()
		} else if err := checkPublisher(req.Publisher); err != nil {
			resp.Error = err.Error()
		} else if err := checkShard(req.Shard); err != nil {
			resp.Error = err.Error()
		} else {
			if req.Forward { // whether or not this node stores it
				for _, p := range d.maybeForward(s.Conn().RemotePeer(), req) {
					resp.Forwarding = append(resp.Forwarding, []byte(p))
				}
			}
			if !d.among(req.Name, req.Publisher, 2*d.cfg.Replication) {
				d.count.add("store_rejected_far", 1)
				resp.Error = "not among the closest peers to this key"
			} else {
				_, advice, err := d.store.PutIn(source(s.Conn()), req.Name, req.Publisher, int(req.Shard), req.Record)
				if err != nil {
					resp.Error = err.Error()
					d.log.Debug("rejected record", "peer", s.Conn().RemotePeer(), "cell", req.Name, "shard", req.Shard, "err", err)
				}
				resp.Shards = adviceField(advice)
			}
		}
	case req.Op == opGet:
		d.count.add("get_received", 1)
		if err := checkShard(req.Shard); err != nil {
			resp.Error = err.Error()
			break
		}
		shard := int(req.Shard)
		size := 0
		for _, rec := range d.store.GetIn(req.Name, req.Publisher, shard) {
			resp.Records = append(resp.Records, rec.Bytes())
			size += len(rec.Bytes())
		}
		n := len(resp.Records) // records in the answer, every shard's
		if req.MoreShards && shard == 0 && !d.oldStorer {
			resp.More, n = d.moreShards(req, len(resp.Records), size)
		}
		resp.Core = n > 0 && d.among(req.Name, req.Publisher, d.cfg.Replication)
		resp.Shards = adviceField(d.store.FindAdvice(req.Name, req.Publisher, shard))
		d.count.add("records_served", uint64(n))
	default:
		resp.Error = fmt.Sprintf("unknown op %d", req.Op)
	}
	out, _ := msgEnc.Marshal(resp)
	if err := msgio.NewVarintWriter(s).WriteMsg(out); err != nil {
		_ = s.Reset()
	}
}

// The bounds of an answer to a GET marked MoreShards: whole shards are
// added after shard 0 while the records stay within what a reader decodes
// in one array and the bytes well within maxResponseSize.
const (
	moreMaxRecords = 4096
	moreMaxBytes   = 3 * maxResponseSize / 4
)

// moreShards returns the records of shards 1 to ShardsHeld-1 of req's set,
// one entry per shard, as far as whole shards fit beside the records
// (and bytes) of shard 0 already in the answer, and how many records the
// answer then holds in all.
func (d *Node) moreShards(req request, records, size int) ([][][]byte, int) {
	var more [][][]byte
	held := d.store.ShardsHeld(req.Name, req.Publisher)
	for sh := 1; sh < held; sh++ {
		recs := d.store.GetIn(req.Name, req.Publisher, sh)
		part := make([][]byte, 0, len(recs))
		bytes := 0
		for _, r := range recs {
			part = append(part, r.Bytes())
			bytes += len(r.Bytes())
		}
		if records+len(part) > moreMaxRecords || size+bytes > moreMaxBytes {
			break
		}
		more = append(more, part)
		records, size = records+len(part), size+bytes
	}
	return more, records
}

// source names who sent a PUT, for the store's per-source quotas: the IP
// group of the connection's remote address (see ipGroup: a public /16, a
// private machine), so that one network's peers share a quota, or the peer
// itself when the address has no group (loopback).
func source(c network.Conn) string {
	if g := ipGroup(c.RemoteMultiaddr()); g != "" {
		return g
	}
	return "peer " + c.RemotePeer().String()
}

// call sends one request to p and returns its response.
// A peer that cannot be dialled, or does not answer within its request
// budget (requestBudget) while the caller still waits, is dropped from the routing tables and its
// connections are closed (a dead QUIC connection otherwise takes every
// request until it idles out), so the next lookup does not wait on it.
func (d *Node) call(parent context.Context, p peer.ID, req request) (*response, error) {
	gctx, gone := context.WithCancelCause(parent)
	defer gone(nil)
	ctx, cancel := context.WithTimeout(gctx, d.requestBudget(p))
	defer cancel()
	if d.cfg.PeerGone != nil {
		t := time.AfterFunc(d.probeDelay(p), func() {
			if d.cfg.PeerGone(ctx, p) {
				d.count.add("requests_peer_gone", 1)
				gone(ErrPeerGone)
			}
		})
		defer t.Stop()
	}
	resp, err := d.exchange(ctx, p, req)
	if err != nil && errors.Is(context.Cause(gctx), ErrPeerGone) {
		err = fmt.Errorf("request to %s: %w", p, ErrPeerGone)
	}
	var remote *RemoteError
	if err != nil && parent.Err() == nil && !errors.As(err, &remote) && !errors.Is(err, errMalformedResponse) {
		d.forget(p)
	}
	return resp, err
}

// ErrPeerGone is why a request to a peer ended early: Config.PeerGone
// found its process gone.
var ErrPeerGone = errors.New("peer gone (its TCP port refuses connections)")

// Probe delay: a request or a lookup query to a peer whose latency is
// known is checked with Config.PeerGone once it has waited probeRTTs
// times that latency, at least minProbe (never later than its request
// budget). The check costs one TCP connect to the peer; a peer that is
// alive but slow keeps its request budget.
const (
	probeRTTs = 4
	minProbe  = 50 * time.Millisecond
)

func (d *Node) probeDelay(p peer.ID) time.Duration {
	return min(d.requestBudget(p), max(minProbe, probeRTTs*d.host.Peerstore().LatencyEWMA(p)))
}

// Request budget: a request to a peer whose latency is known is given
// requestRTTs times that latency, at least minRequestBudget, at most
// RequestTimeout. A peer killed while connected over QUIC leaves a
// connection that takes requests and answers nothing (no packet says it is
// gone) until it idles out after 30 s; with the whole RequestTimeout, each
// request on it cost 5 s (a withdrawal its whole budget, and a lookup
// beside it kad-dht's 10 s read timeout, until the failed request closed
// the connection).
const (
	requestRTTs      = 10
	minRequestBudget = time.Second
)

func (d *Node) requestBudget(p peer.ID) time.Duration {
	l := d.host.Peerstore().LatencyEWMA(p)
	if l <= 0 {
		return d.cfg.RequestTimeout
	}
	return min(d.cfg.RequestTimeout, max(minRequestBudget, requestRTTs*l))
}

// forget drops p from every routing table and closes its connections.
func (d *Node) forget(p peer.ID) {
	for _, sp := range d.spaces {
		sp.kad.RoutingTable().RemovePeer(p)
	}
	_ = d.host.Network().ClosePeer(p)
	d.count.add("peers_forgotten", 1)
}

var errMalformedResponse = errors.New("malformed response")

// exchange sends req to p on a new stream and reads the response.
func (d *Node) exchange(ctx context.Context, p peer.ID, req request) (*response, error) {
	start := time.Now()
	s, err := d.openStream(ctx, p)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	// A request ended before its deadline (its caller gave up, or the peer
	// was found gone) must not wait for the deadline to end the read.
	defer context.AfterFunc(ctx, func() { _ = s.Reset() })()
	msg, _ := msgEnc.Marshal(req)
	if err := msgio.NewVarintWriter(s).WriteMsg(msg); err != nil {
		_ = s.Reset()
		return nil, err
	}
	_ = s.CloseWrite()
	d.count.add("bytes_sent", uint64(len(msg)))
	// A response may be 2 MiB: allocate only what the storer sends.
	b, err := frame.NewReader(s, maxResponseSize).Next()
	if err != nil {
		_ = s.Reset()
		return nil, err
	}
	d.count.add("bytes_received", uint64(len(b)))
	d.host.Peerstore().RecordLatency(p, time.Since(start))
	var resp response
	if err := msgDec.Unmarshal(b, &resp); err != nil {
		return nil, fmt.Errorf("%w: %w", errMalformedResponse, err)
	}
	if resp.Error != "" {
		return &resp, &RemoteError{Peer: p, Msg: resp.Error}
	}
	return &resp, nil
}

// openStream opens a stream of ProtocolID to p without waiting for
// identify (OpenStream), through the host's own OpenStream when it has one
// (StreamOpener).
func (d *Node) openStream(ctx context.Context, p peer.ID) (network.Stream, error) {
	if o, ok := d.host.(StreamOpener); ok {
		return o.OpenStream(ctx, p, ProtocolID)
	}
	return OpenStream(ctx, d.host, p, ProtocolID)
}

// StreamOpener is a host that dials and opens the DHT's streams itself;
// the simulator's hosts do, to meter them. OpenStream must behave as the
// function OpenStream does, and DialPeer as OpenStream's dial: connect to
// p unless connected, without waiting for identify.
type StreamOpener interface {
	OpenStream(ctx context.Context, p peer.ID, proto protocol.ID) (network.Stream, error)
	DialPeer(ctx context.Context, p peer.ID) error
}

// kadHost is the host as kad-dht sees it: its dials and its query streams
// do not wait for identify, as the instances protocol's do not (see
// OpenStream). kad-dht dials each peer of a lookup with Connect and then
// opens a stream with NewStream; on the host both wait for identify on a
// new connection, so each new peer of a lookup or a publish cost a round
// trip more than the handshake and the query. kad-dht still learns of
// peers for its routing tables from identify's events, as before.
type kadHost struct{ host.Host }

// Connect dials pi (its addresses added for a short while) unless
// connected.
func (h kadHost) Connect(ctx context.Context, pi peer.AddrInfo) error {
	if len(pi.Addrs) > 0 {
		h.Peerstore().AddAddrs(pi.ID, pi.Addrs, peerstore.TempAddrTTL)
	}
	if o, ok := h.Host.(StreamOpener); ok {
		return o.DialPeer(ctx, pi.ID)
	}
	return dialPeer(ctx, h.Host, pi.ID)
}

// NewStream opens a stream of the one protocol kad-dht asks for without
// waiting for identify (OpenStream); with several, it is the host's.
func (h kadHost) NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	if len(pids) != 1 {
		return h.Host.NewStream(ctx, p, pids...)
	}
	if o, ok := h.Host.(StreamOpener); ok {
		return o.OpenStream(ctx, p, pids[0])
	}
	return OpenStream(ctx, h.Host, p, pids[0])
}

// dialPeer connects h to p unless it is connected, without waiting for
// identify.
func dialPeer(ctx context.Context, h host.Host, p peer.ID) error {
	if h.Network().Connectedness(p) == network.Connected {
		return nil
	}
	_, err := h.Network().DialPeer(ctx, p)
	return err
}

// OpenStream opens a stream of proto to p on h, dialling p if need be,
// without waiting for identify. The host's NewStream waits for identify to
// finish on a new connection (to learn whether p speaks the protocol and
// so skip negotiating it), and identify is a round trip of its own after
// the handshake: on a fresh connection a request then took three round
// trips (handshake, identify, request) instead of two. Every cellnode
// server speaks the instances protocol, so the stream proposes proto
// optimistically (multistream-select's lazy client: the proposal goes out
// with the request, and the peer's acceptance is read before its
// response); a peer that does not speak it fails the request on the first
// read. Identify still runs in the background, as on every connection,
// and the routing tables learn of the peer from it as before.
func OpenStream(ctx context.Context, h host.Host, p peer.ID, proto protocol.ID) (network.Stream, error) {
	if err := dialPeer(ctx, h, p); err != nil {
		return nil, err
	}
	s, err := h.Network().NewStream(network.WithNoDial(ctx, "dialled"), p)
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	if err := s.SetProtocol(proto); err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("open stream: %w", err)
	}
	return &lazyStream{Stream: s, rw: msmux.NewMSSelect(s, proto)}, nil
}

// lazyStream is a stream whose protocol proposal travels with its first
// write (see openStream); as go-libp2p's host wraps the streams it opens
// the same way.
type lazyStream struct {
	network.Stream
	rw io.ReadWriteCloser
}

func (s *lazyStream) Read(b []byte) (int, error)  { return s.rw.Read(b) }
func (s *lazyStream) Write(b []byte) (int, error) { return s.rw.Write(b) }

// Close reads the peer's acceptance of the proposal first if it has not
// come yet (multistream-select's lazy client does), so it sets a read
// deadline, as go-libp2p's host does, lest a peer that never answers hold
// it.
func (s *lazyStream) Close() error {
	_ = s.Stream.SetReadDeadline(time.Now().Add(closeNegotiationTimeout))
	return s.rw.Close()
}

// closeNegotiationTimeout bounds how long Close waits for the peer's
// acceptance (go-libp2p's host: basichost.DefaultNegotiationTimeout).
const closeNegotiationTimeout = 10 * time.Second

// CloseWrite flushes the proposal first (a request is written before, so
// it has gone already; this keeps an empty write correct).
func (s *lazyStream) CloseWrite() error {
	if f, ok := s.rw.(interface{ Flush() error }); ok {
		_ = f.Flush()
	}
	return s.Stream.CloseWrite()
}

// RemoteError is a request that a peer received and refused.
type RemoteError struct {
	Peer peer.ID
	Msg  string
}

func (e *RemoteError) Error() string { return fmt.Sprintf("peer %s: %s", e.Peer, e.Msg) }

// checkShard checks the shard of a request: 0 to record.MaxShards-1.
func checkShard(n uint64) error {
	if n >= record.MaxShards {
		return fmt.Errorf("shard %d out of range (0 to %d)", n, record.MaxShards-1)
	}
	return nil
}

// adviceField is a shard count advice as the response carries it: left
// out when 1.
func adviceField(n int) uint64 {
	if n <= 1 {
		return 0
	}
	return uint64(n)
}

func checkPublisher(p []byte) error {
	if p != nil && len(p) != 32 {
		return fmt.Errorf("publisher key of %d bytes", len(p))
	}
	return nil
}

// among reports whether this node is plausibly among the n peers closest
// to the base key of the set (name, publisher), where all its shards
// live, in one of its DHTs: closer to it than the n-th nearest peer of
// that routing table, or in a table too small to tell (among the tables that hold a peer; with none, true).
// A storer takes a set only within 2×Replication (so that a planted record
// does not reach peers a finder asks on its way to the key), and says it
// is a core storer within Replication.
func (d *Node) among(name string, publisher []byte, n int) bool {
	key := setKey(name, publisher)
	want := n
	target := kb.ConvertKey(key)
	spaces := d.active()
	if len(spaces) == 0 {
		return true
	}
	for _, sp := range spaces {
		nearest := sp.kad.RoutingTable().NearestPeers(target, want)
		if len(nearest) < want || closer(target, kb.ConvertPeerID(d.host.ID()), kb.ConvertPeerID(nearest[len(nearest)-1])) {
			return true
		}
	}
	return false
}
