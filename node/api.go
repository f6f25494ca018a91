package node

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/manifest"
	"github.com/libp2p/go-libp2p/core/peer"
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
	return s
}

type apiServer struct {
	srv  *http.Server
	mux  *http.ServeMux // the agent adds its routes here (api_agent.go)
	path string
	done chan struct{}
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
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Status())
	})
	mux.HandleFunc("GET /v1/find", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if d, err := time.ParseDuration(r.URL.Query().Get("timeout")); err == nil && d > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		var opts FindOptions
		for _, k := range r.URL.Query()["publisher"] {
			pub, err := dht.ParsePublicKey(k)
			if err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
				return
			}
			opts.Publishers = append(opts.Publishers, pub)
		}
		opts.All = r.URL.Query().Get("all") == "1"
		res, err := n.FindWith(ctx, r.URL.Query().Get("name"), opts)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("GET /v1/manifest", func(w http.ResponseWriter, r *http.Request) {
		c, err := manifest.ParseCID(r.URL.Query().Get("cid"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		var hints []peer.ID
		for _, h := range r.URL.Query()["hint"] {
			if id, err := peer.Decode(h); err == nil {
				hints = append(hints, id)
			}
		}
		info, err := n.ManifestInfo(r.Context(), c, hints)
		if err != nil {
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, info)
	})
	s := &apiServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, path: path, done: make(chan struct{})}
	s.mux = mux
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

func (s *apiServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	<-s.done
	_ = os.Remove(s.path)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Client talks to the local API of a node running on this machine.
type Client struct {
	hc *http.Client
}

// Dial connects to the node whose home is home. It returns ErrNoLocalNode
// when none is running.
func Dial(home string) (*Client, error) {
	path := filepath.Join(home, APISocket)
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
	return &s, c.get(ctx, "/v1/status", &s)
}

// Find asks the node to find the cell name.
func (c *Client) Find(ctx context.Context, name string, opts FindOptions) (*FindResult, error) {
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
	var res FindResult
	return &res, c.get(ctx, "/v1/find?"+q.Encode(), &res)
}

// ManifestInfo asks the node to fetch the manifest of commit cid.
func (c *Client) ManifestInfo(ctx context.Context, cid string, hints []peer.ID) (*ManifestInfo, error) {
	q := url.Values{"cid": {cid}}
	for _, h := range hints {
		q.Add("hint", h.String())
	}
	var info ManifestInfo
	return &info, c.get(ctx, "/v1/manifest?"+q.Encode(), &info)
}

func (c *Client) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://cellnode"+path, nil)
	if err != nil {
		return err
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
