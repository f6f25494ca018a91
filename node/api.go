package node

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/cellnode/cellnode/dht/record"

	"github.com/cellnode/cellnode/internal/safefile"
	"github.com/cellnode/cellnode/manifest"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/net/netutil"
)

// ErrNoLocalNode is returned by Dial when no node serves the API of home.
var ErrNoLocalNode = errors.New("node: no running node")

// Status is what the local API reports about a node.
type Status struct {
	Peer     string            `json:"peer"`
	Addrs    []string          `json:"addrs"`
	Server   bool              `json:"dht_server"`
	Peers    int               `json:"routing_table"`
	Cells    []AnnouncerStatus `json:"cells"`
	Counters map[string]uint64 `json:"counters"`
	NetStatus
}

// Status returns the node's status.
func (n *Node) Status() Status {
	s := Status{Peer: n.ID().String(), Addrs: n.Addrs(), Server: n.dht.Server(),
		Peers: len(n.dht.Peers()), Counters: n.dht.Counters(), Cells: []AnnouncerStatus{}}
	n.mu.Lock()
	for a := range n.announcers {
		s.Cells = append(s.Cells, a.Status())
	}
	n.mu.Unlock()
	s.NetStatus = n.netStatus()
	return s
}

// Limits of the local API: connections served at once (more wait in the
// listen queue, holding no descriptor of the node's), finds and manifest
// fetches running at once (more wait, then get 503), publishers and hints
// per request, how long one request may run, and how long a connection may
// take to send its request or sit idle.
const (
	apiMaxConns      = 64
	apiMaxFinds      = 8
	apiMaxPublishers = manifest.MaxPublishers
	apiMaxHints      = 64
	apiMaxTimeout    = 2 * time.Minute
	apiReadTimeout   = 10 * time.Second
	apiIdleTimeout   = 30 * time.Second
	apiMaxHeader     = 16 << 10
)

type apiServer struct {
	srv   *http.Server
	mux   *http.ServeMux // the agent adds its routes here (api_agent.go)
	path  string
	done  chan struct{}
	finds chan struct{} // one token per running find or manifest fetch
	cache *findCache    // recent finds' results (see findFresh)
}

// startAPI serves the local API on a unix socket at path, mode 0600. A stale
// socket left by a dead node is replaced; a live one is an error.
func startAPI(n *Node, path string) (*apiServer, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%w: a node already serves %s", ErrHomeInUse, path)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("node: local API: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("node: local API: %w", err)
	}
	s := &apiServer{path: path, done: make(chan struct{}), finds: make(chan struct{}, apiMaxFinds), cache: newFindCache()}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", n.metrics.handler())
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Status())
	})
	mux.HandleFunc("GET /v1/find", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := requestContext(r)
		defer cancel()
		if len(r.URL.Query()["publisher"]) > apiMaxPublishers {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("%d publishers, at most %d", len(r.URL.Query()["publisher"]), apiMaxPublishers)})
			return
		}
		var opts FindOptions
		for _, k := range r.URL.Query()["publisher"] {
			pub, err := record.ParsePublicKey(k)
			if err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
				return
			}
			opts.Publishers = append(opts.Publishers, pub)
		}
		opts.All = r.URL.Query().Get("all") == "1"
		name := r.URL.Query().Get("name")
		key := findKey(name, opts)
		var body []byte
		var age time.Duration
		if !noCache(r) {
			body, age = s.cache.get(key, func(ctx context.Context) []byte {
				select {
				case s.finds <- struct{}{}: // a refresh takes a find's place, or none
				default:
					return nil
				}
				defer s.release()
				res, err := n.FindSigned(ctx, name, opts)
				if err != nil {
					return nil
				}
				return encodeFind(res)
			})
		}
		if body == nil {
			if !s.acquire(ctx, w) {
				return
			}
			res, err := n.FindSigned(ctx, name, opts)
			s.release()
			if err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
				return
			}
			body = encodeFind(res)
			s.cache.put(key, body)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Age", strconv.Itoa(int(age/time.Second)))
		w.Header().Set("X-Cellnode-Age-Ms", strconv.FormatFloat(float64(age)/float64(time.Millisecond), 'f', 3, 64))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	})
	mux.HandleFunc("GET /v1/manifest", func(w http.ResponseWriter, r *http.Request) {
		c, err := manifest.ParseCID(r.URL.Query().Get("cid"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		if len(r.URL.Query()["hint"]) > apiMaxHints {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("%d hints, at most %d", len(r.URL.Query()["hint"]), apiMaxHints)})
			return
		}
		ctx, cancel := requestContext(r)
		defer cancel()
		if !s.acquire(ctx, w) {
			return
		}
		defer s.release()
		var hints []peer.ID
		for _, h := range r.URL.Query()["hint"] {
			if id, err := peer.Decode(h); err == nil {
				hints = append(hints, id)
			}
		}
		info, err := n.ManifestInfo(ctx, c, hints)
		if err != nil {
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, info)
	})
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: apiReadTimeout,
		WriteTimeout: apiMaxTimeout + 10*time.Second, IdleTimeout: apiIdleTimeout, MaxHeaderBytes: apiMaxHeader}
	limited := netutil.LimitListener(ln, apiMaxConns)
	s.mux = mux
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(limited)
	}()
	return s, nil
}

// requestContext is the request's context, ending after its timeout
// parameter or apiMaxTimeout, whichever is shorter.
func requestContext(r *http.Request) (context.Context, context.CancelFunc) {
	d := apiMaxTimeout
	if t, err := time.ParseDuration(r.URL.Query().Get("timeout")); err == nil && t > 0 && t < d {
		d = t
	}
	return context.WithTimeout(r.Context(), d)
}

// acquire takes a find token, waiting until ctx ends; then it answers 503
// and returns false.
func (s *apiServer) acquire(ctx context.Context, w http.ResponseWriter) bool {
	select {
	case s.finds <- struct{}{}:
		return true
	case <-ctx.Done():
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": fmt.Sprintf("busy: %d finds already running", apiMaxFinds)})
		return false
	}
}

func (s *apiServer) release() { <-s.finds }

func (s *apiServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	<-s.done
	s.cache.close()
	_ = os.Remove(s.path)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Client talks to the local API of a node running on this machine.
type Client struct {
	hc  *http.Client
	now func() time.Time // the clock Find verifies records at; nil is time.Now
}

// Dial connects to the node whose home is home. It returns ErrNoLocalNode
// when none is running, and an error matching safefile.ErrUnsafe when the
// socket or the home is not this user's alone (another user could serve
// anything there).
func Dial(home string) (*Client, error) {
	path := filepath.Join(home, APISocket)
	if err := safefile.CheckSocket("local API socket", path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w at %s", ErrNoLocalNode, path)
		}
		return nil, fmt.Errorf("node: %w", err)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return nil, fmt.Errorf("%w at %s", ErrNoLocalNode, path)
	}
	c.Close()
	return &Client{hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}, nil
}

// Status asks the node for its status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	return &s, c.get(ctx, "/v1/status", &s, false)
}

// Find asks the node to find the cell name, and verifies the answer itself
// (VerifyReply at this machine's clock): the node's API is another process,
// and what it says about instances counts only as far as their signed
// records show it. Instances that fail are dropped and listed in Dropped.
func (c *Client) Find(ctx context.Context, name string, opts FindOptions) (*FindReply, error) {
	return c.find(ctx, name, opts, false)
}

// FindFresh is Find with "Cache-Control: no-cache": the node runs a find of
// its own instead of answering from a recent result (benchmarks that time
// when a change reaches the network).
func (c *Client) FindFresh(ctx context.Context, name string, opts FindOptions) (*FindReply, error) {
	return c.find(ctx, name, opts, true)
}

func (c *Client) find(ctx context.Context, name string, opts FindOptions, fresh bool) (*FindReply, error) {
	q := url.Values{"name": {name}}
	for _, p := range opts.Publishers {
		q.Add("publisher", base64.StdEncoding.EncodeToString(p))
	}
	if opts.All {
		q.Set("all", "1")
	}
	if dl, ok := ctx.Deadline(); ok {
		q.Set("timeout", time.Until(dl).String())
	}
	var reply FindReply
	if err := c.get(ctx, "/v1/find?"+q.Encode(), &reply, fresh); err != nil {
		return nil, err
	}
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	return VerifyReply(&reply, name, opts, now()), nil
}

// ManifestInfo asks the node to fetch the manifest of commit cid.
func (c *Client) ManifestInfo(ctx context.Context, cid string, hints []peer.ID) (*ManifestInfo, error) {
	q := url.Values{"cid": {cid}}
	for _, h := range hints {
		q.Add("hint", h.String())
	}
	var info ManifestInfo
	return &info, c.get(ctx, "/v1/manifest?"+q.Encode(), &info, false)
}

func (c *Client) get(ctx context.Context, path string, v any, noCache bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://cellnode"+path, nil)
	if err != nil {
		return err
	}
	if noCache {
		req.Header.Set("Cache-Control", "no-cache")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("node: local API: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("node: local API: %s", e.Error)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// SignedInstance is an Instance with the signed record it was made from
// (base64 in JSON), so that a client can verify it without trusting
// whoever handed it over.
type SignedInstance struct {
	Instance
	Record []byte `json:"record"`
}

// FindReply is a FindResult whose instances carry their records: what the
// local API's /v1/find and `find --json` return.
type FindReply struct {
	FindResult
	Instances []SignedInstance `json:"instances"` // never nil
	// Dropped says, one line each, which instances a client's VerifyReply
	// dropped and why. It is not part of the JSON.
	Dropped []string `json:"-"`
}

// Result returns the reply as a FindResult, without the records.
func (r *FindReply) Result() *FindResult {
	out := r.FindResult
	out.Instances = make([]Instance, len(r.Instances))
	for i, in := range r.Instances {
		out.Instances[i] = in.Instance
	}
	return &out
}

// FindSigned is FindWith with each instance's signed record: the one the
// instance was made from, carried with it, so that a find of the same name
// running at the same moment cannot take it away.
func (n *Node) FindSigned(ctx context.Context, name string, opts FindOptions) (*FindReply, error) {
	res, err := n.FindWith(ctx, name, opts)
	if err != nil {
		return nil, err
	}
	reply := &FindReply{FindResult: *res, Instances: make([]SignedInstance, 0, len(res.Instances))}
	reply.FindResult.Instances = nil
	for _, in := range res.Instances {
		reply.Instances = append(reply.Instances, SignedInstance{Instance: in, Record: in.record})
	}
	return reply, nil
}

// VerifyReply checks a reply that came from another process against the
// records it carries, at now, and returns what holds: each record must
// verify as a live record of name (record.Verify) and not be a withdrawal,
// one per peer; when opts pins publishers, an instance is trusted only if
// its record is delegated by one of them, and untrusted ones are kept
// (marked) only with opts.All. Every field of a kept instance is taken from
// its record; of the reply's own claims only the measured latency stays,
// and only for an endpoint the record has. Dropped lists what was dropped.
func VerifyReply(reply *FindReply, name string, opts FindOptions, now time.Time) *FindReply {
	out := &FindReply{FindResult: reply.FindResult, Instances: []SignedInstance{}}
	out.FindResult.Instances = nil
	out.Pinned = len(opts.Publishers) > 0
	drop := func(peer, why string) {
		out.Dropped = append(out.Dropped, fmt.Sprintf("instance %s: %s", peer, why))
	}
	seen := map[string]bool{}
	for _, in := range reply.Instances {
		r, err := record.Verify(in.Record, name, now)
		switch {
		case len(in.Record) == 0:
			drop(in.Peer, "no signed record")
			continue
		case err != nil:
			drop(in.Peer, fmt.Sprintf("record refused (%s): %v", record.Reason(err), err))
			continue
		case r.Peer.String() != in.Peer:
			drop(in.Peer, "the record is from peer "+r.Peer.String())
			continue
		case r.Withdrawn:
			drop(in.Peer, "the record is a withdrawal")
			continue
		case seen[in.Peer]:
			drop(in.Peer, "listed twice")
			continue
		}
		trusted := false
		if pub := r.Publisher(); pub != nil {
			for _, p := range opts.Publishers {
				trusted = trusted || pub.Equal(p)
			}
		}
		if out.Pinned && !trusted && !opts.All {
			drop(in.Peer, "not delegated by a pinned publisher")
			continue
		}
		seen[in.Peer] = true
		v := Instance{Peer: r.Peer.String(), Endpoints: r.Endpoints, Region: r.Region, Expires: r.Expires, Seq: r.Seq, Trusted: trusted}
		if pub := r.Publisher(); pub != nil {
			v.Publisher = base64.StdEncoding.EncodeToString(pub)
		}
		if r.Manifest.Defined() {
			v.Manifest = r.Manifest.String()
		}
		if in.Reachable && slices.Contains(r.Endpoints, in.Best) {
			v.Reachable, v.LatencyMS, v.Best = true, in.LatencyMS, in.Best
		}
		out.Instances = append(out.Instances, SignedInstance{Instance: v, Record: r.Bytes()})
	}
	// An instance whose claimed endpoint was not in its record is now
	// unreachable: keep reachable ones first, in the reply's order.
	slices.SortStableFunc(out.Instances, func(a, b SignedInstance) int {
		switch {
		case a.Reachable == b.Reachable:
			return 0
		case a.Reachable:
			return -1
		}
		return 1
	})
	return out
}
