package node

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cellnode/cellnode/dht/record"
)

// APIEnv names the environment variable that gives the agent's shared API
// address: a unix socket path, or http://HOST:PORT for its TCP API.
const APIEnv = "CELLNODE_API"

// AgentSocket is the shared API socket's name in the runtime directory.
const AgentSocket = "api.sock"

// DefaultAPIAddr returns $CELLNODE_API when it names a socket path, else
// runtimeDir/api.sock ("" means DefaultRuntimeDir()).
func DefaultAPIAddr(runtimeDir string) string {
	if v := os.Getenv(APIEnv); v != "" && !strings.HasPrefix(v, "http://") {
		return strings.TrimPrefix(v, "unix:")
	}
	if runtimeDir == "" {
		runtimeDir = DefaultRuntimeDir()
	}
	return filepath.Join(runtimeDir, AgentSocket)
}

// maxBody bounds a request body (a registration).
const maxBody = 64 << 10

// slowAnswer is how long the node's own endpoints (find, manifest) may take
// to answer on the agent's listeners before the write deadline counts.
const slowAnswer = 2 * time.Minute

// routes adds the agent's endpoints to the node's API (docs/api.md).
func (a *Agent) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/watch", a.handleWatch)
	mux.HandleFunc("GET /v1/cells", a.timed(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string][]CellInfo{"cells": a.Cells()})
	}))
	mux.HandleFunc("GET /v1/cells/{org}/{name}", a.timed(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("org") + "/" + r.PathValue("name")
		if c, ok := a.Cell(name); ok {
			writeJSON(w, http.StatusOK, c)
			return
		}
		writeError(w, http.StatusNotFound, fmt.Errorf("%w: %s", ErrNotRegistered, name))
	}))
	mux.HandleFunc("PUT /v1/cells/{org}/{name}", a.timed(a.handleRegister))
	mux.HandleFunc("DELETE /v1/cells/{org}/{name}", a.timed(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("org") + "/" + r.PathValue("name")
		if _, err := record.ParseName(name); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		switch err := a.Deregister(ctx, name, SourceAPI); {
		case errors.Is(err, ErrNotRegistered):
			writeError(w, http.StatusNotFound, err)
		case errors.Is(err, ErrConflict):
			writeError(w, http.StatusConflict, err)
		case err != nil:
			writeError(w, http.StatusInternalServerError, err)
		default:
			writeJSON(w, http.StatusOK, map[string]string{"result": "removed", "name": name})
		}
	}))
	mux.HandleFunc("POST /v1/agent/reload", a.timed(func(w http.ResponseWriter, r *http.Request) {
		if a.cfg.ConfigDir == "" {
			writeError(w, http.StatusBadRequest, errors.New("node: the agent has no config directory"))
			return
		}
		res, err := a.Reload(r.Context())
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	}))
	mux.HandleFunc("GET /v1/agent", a.timed(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.Info())
	}))
}

// AgentInfo is what GET /v1/agent reports.
type AgentInfo struct {
	Peer      string              `json:"peer"`
	API       string              `json:"api"`
	APITCP    string              `json:"api_tcp,omitempty"`
	DNS       string              `json:"dns,omitempty"`
	ConfigDir string              `json:"config_dir,omitempty"`
	Cells     int                 `json:"cells"`
	Watched   int                 `json:"watched_names"`
	Watches   int                 `json:"watches"`
	Trust     map[string][]string `json:"trust"`
}

// Info describes the agent.
func (a *Agent) Info() AgentInfo {
	info := AgentInfo{Peer: a.n.ID().String(), API: a.cfg.API, APITCP: a.APITCPAddr(), DNS: a.DNSAddr(),
		ConfigDir: a.cfg.ConfigDir, Watched: a.hub.size(), Watches: len(a.watches), Trust: map[string][]string{}}
	a.mu.Lock()
	info.Cells = len(a.cells)
	for name, pubs := range a.trust {
		for _, p := range pubs {
			info.Trust[name] = append(info.Trust[name], base64.StdEncoding.EncodeToString(p))
		}
	}
	a.mu.Unlock()
	return info
}

// timed bounds the writing of a handler's response to WriteTimeout, on
// every socket (a client that never reads holds a connection that long).
func (a *Agent) timed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(a.cfg.WriteTimeout))
		h(w, r)
	}
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func (a *Agent) handleRegister(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("org") + "/" + r.PathValue("name")
	var reg Registration
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&reg); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("%w: body: %w (want a JSON registration, at most %d bytes)", ErrBadRegistration, err, maxBody))
		return
	}
	switch {
	case reg.Name == "":
		reg.Name = name
	case reg.Name != name:
		writeError(w, http.StatusBadRequest, fmt.Errorf("%w: the body names %s, the path %s", ErrBadRegistration, reg.Name, name))
		return
	}
	if reg.DelegationFile != "" {
		writeError(w, http.StatusBadRequest, fmt.Errorf("%w: delegation_file is for config files; send the delegation itself", ErrBadRegistration))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	res, err := a.Register(ctx, reg, SourceAPI)
	switch {
	case errors.Is(err, ErrBadRegistration):
		writeError(w, http.StatusBadRequest, err)
		return
	case errors.Is(err, ErrConflict):
		writeError(w, http.StatusConflict, err)
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	code := http.StatusOK
	if res == Created {
		code = http.StatusCreated
	}
	c, _ := a.Cell(reg.Name)
	writeJSON(w, code, map[string]any{"result": res, "cell": c})
}

var watchParams = map[string]bool{"name": true, "index": true, "wait": true, "publisher": true, "all": true}

func (a *Agent) handleWatch(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(a.cfg.WriteTimeout))
	q := r.URL.Query()
	for k := range q {
		if !watchParams[k] {
			writeError(w, http.StatusBadRequest, fmt.Errorf("node: watch: unknown parameter %q (want name, index, wait, publisher, all)", k))
			return
		}
	}
	name := q.Get("name")
	if _, err := record.ParseName(name); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("node: watch: %w", err))
		return
	}
	var index uint64
	if s := q.Get("index"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("node: watch: index %q: want the index of an earlier answer (a non-negative integer), or none", s))
			return
		}
		index = v
	}
	wait := a.hub.cfg.DefaultWait
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			writeError(w, http.StatusBadRequest, fmt.Errorf("node: watch: wait %q: want a positive duration such as 30s (at most %v)", s, a.hub.cfg.MaxWait))
			return
		}
		wait = min(d, a.hub.cfg.MaxWait)
	}
	t := trust{agent: true}
	if pubs := q["publisher"]; len(pubs) > 0 {
		t = trust{}
		for _, k := range pubs {
			pub, err := record.ParsePublicKey(k)
			if err != nil {
				writeError(w, http.StatusBadRequest, fmt.Errorf("node: watch: publisher: %w", err))
				return
			}
			t.opts.Publishers = append(t.opts.Publishers, pub)
		}
		t.opts.All = q.Get("all") == "1"
	}
	select {
	case a.watches <- struct{}{}:
		defer func() { <-a.watches }()
	default:
		writeError(w, http.StatusTooManyRequests, fmt.Errorf("node: watch: %d watches are blocked already, the agent's limit; try again later", cap(a.watches)))
		return
	}
	// A long poll: the server's own deadlines must not cut it.
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Now().Add(wait + a.hub.cfg.FindTimeout + a.cfg.WriteTimeout))
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	res, err := a.hub.watch(ctx, name, t, index)
	cancel()
	_ = rc.SetWriteDeadline(time.Now().Add(a.cfg.WriteTimeout))
	switch {
	case errors.Is(err, ErrWatchBusy), errors.Is(err, ErrClosed):
		writeError(w, http.StatusServiceUnavailable, fmt.Errorf("node: watch: %w", err))
		return
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		writeError(w, http.StatusGatewayTimeout, fmt.Errorf("node: watch: the first find of %s had not ended when the wait did", name))
		return
	case err != nil:
		writeError(w, http.StatusBadGateway, fmt.Errorf("node: watch: %w", err))
		return
	}
	w.Header().Set("X-Cellnode-Index", strconv.FormatUint(res.Index, 10))
	writeJSON(w, http.StatusOK, res)
}

// agentServer is one listener of the agent's API: the shared unix socket
// or loopback TCP.
type agentServer struct {
	srv  *http.Server
	ln   net.Listener
	path string // the socket, removed on close
	tcp  bool
	done chan struct{}
}

type credKey struct{}

// serveUnix serves the API on the shared socket at path: every request
// that reaches it may read; a write (any method but GET and HEAD) needs
// the peer (SO_PEERCRED) to be the agent's user or root. The socket has
// mode 0666, or 0660 and the group group. Its directory is made
// traversable (o+x) if the agent owns it.
func (a *Agent) serveUnix(path, group string) (*agentServer, error) {
	gid := -1
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("node: API group: %w", err)
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return nil, fmt.Errorf("node: API group %s: gid %q", group, g.Gid)
		}
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, fmt.Errorf("node: API socket directory: %w", err)
	}
	if fi, err := os.Stat(dir); err == nil && ownedByMe(fi) && fi.Mode().Perm()&0o011 != 0o011 {
		if err := os.Chmod(dir, fi.Mode().Perm()|0o011); err != nil {
			a.log.Warn("other users cannot reach the API socket", "dir", dir, "err", err)
		}
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%w: an agent already serves %s", ErrHomeInUse, path)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("node: API socket: %w", err)
	}
	mode := os.FileMode(0o666)
	if gid >= 0 {
		mode = 0o660
		if err := os.Chown(path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("node: API socket group %s: %w", group, err)
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("node: API socket: %w", err)
	}
	s := &agentServer{ln: ln, path: path, done: make(chan struct{})}
	s.srv = &http.Server{
		Handler:           a.guard(a.n.api.srv.Handler, false),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, credKey{}, peerCred(unwrapConn(c)))
		},
	}
	s.serve(limitListener(ln, a.cfg.MaxConns))
	return s, nil
}

// serveTCP serves the API read-only on a loopback TCP address.
func (a *Agent) serveTCP(addr string) (*agentServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("node: TCP API: %w", err)
	}
	s := &agentServer{ln: ln, tcp: true, done: make(chan struct{})}
	s.srv = &http.Server{Handler: a.guard(a.n.api.srv.Handler, true), ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10}
	s.serve(limitListener(ln, a.cfg.MaxConns))
	return s, nil
}

func (s *agentServer) serve(ln net.Listener) {
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
}

func (s *agentServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if s.srv.Shutdown(ctx) != nil {
		_ = s.srv.Close() // blocked watches do not end on their own
	}
	<-s.done
	if s.path != "" {
		_ = os.Remove(s.path)
	}
}

// guard lets reads through, and writes only from the agent's user or root
// on the unix socket (never over TCP). Over TCP the Host header must name
// a loopback address, so that a web page cannot reach the API by DNS
// rebinding.
func (a *Agent) guard(next http.Handler, tcp bool) http.Handler {
	me := uint32(os.Getuid())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The node's own endpoints (find, manifest) may take a while to
		// answer; the agent's set a deadline of their own (timed, watch).
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(slowAnswer + a.cfg.WriteTimeout))
		if tcp && !loopbackHostHeader(r.Host) {
			writeError(w, http.StatusForbidden, fmt.Errorf("node: the TCP API answers only requests for a loopback host, not %q", r.Host))
			return
		}
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		if tcp {
			writeError(w, http.StatusForbidden, errors.New("node: the TCP API is read-only; write through the agent's unix socket"))
			return
		}
		c, _ := r.Context().Value(credKey{}).(cred)
		switch {
		case !c.ok:
			writeError(w, http.StatusForbidden, fmt.Errorf("node: cannot tell which user is connected (%v); write through %s", c.err,
				filepath.Join(a.n.cfg.Home, APISocket)))
		case c.uid != me && c.uid != 0:
			writeError(w, http.StatusForbidden, fmt.Errorf("node: writes need the agent's user (uid %d) or root; this connection is uid %d", me, c.uid))
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// loopbackHostHeader reports whether an HTTP Host header names this machine
// over loopback (a loopback address or "localhost", with or without a port).
func loopbackHostHeader(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// cred is a unix-socket peer's credentials.
type cred struct {
	uid, gid uint32
	pid      int32
	ok       bool
	err      error
}

// limitListener closes connections past max at once.
func limitListener(ln net.Listener, max int) net.Listener {
	return &limitedListener{Listener: ln, sem: make(chan struct{}, max)}
}

type limitedListener struct {
	net.Listener
	sem chan struct{}
}

func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.sem <- struct{}{}:
			return &limitedConn{Conn: c, release: sync.OnceFunc(func() { <-l.sem })}, nil
		default:
			c.Close()
		}
	}
}

type limitedConn struct {
	net.Conn
	release func()
}

func (c *limitedConn) Close() error {
	c.release()
	return c.Conn.Close()
}

func unwrapConn(c net.Conn) net.Conn {
	if lc, ok := c.(*limitedConn); ok {
		return lc.Conn
	}
	return c
}

// DialAPI connects to the agent's API at addr: a unix socket path, or
// http://HOST:PORT. "" means $CELLNODE_API, else the default socket in
// the runtime directory. It returns ErrNoLocalNode when nothing answers.
func DialAPI(addr string) (*Client, error) {
	if addr == "" {
		addr = os.Getenv(APIEnv)
	}
	if addr == "" {
		addr = DefaultAPIAddr("")
	}
	network, target := "unix", strings.TrimPrefix(addr, "unix:")
	var rt http.RoundTripper
	if rest, ok := strings.CutPrefix(addr, "http://"); ok {
		network, target = "tcp", strings.TrimSuffix(rest, "/")
	}
	c, err := net.DialTimeout(network, target, time.Second)
	if err != nil {
		return nil, fmt.Errorf("%w at %s", ErrNoLocalNode, addr)
	}
	c.Close()
	rt = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, target)
	}}
	if network == "tcp" {
		rt = hostRewriter{rt: rt, host: target}
	}
	return &Client{hc: &http.Client{Transport: rt}}, nil
}

// hostRewriter sends the TCP API's address as the Host header, which it
// requires to be a loopback address.
type hostRewriter struct {
	rt   http.RoundTripper
	host string
}

func (h hostRewriter) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Host = h.host
	return h.rt.RoundTrip(r)
}

// APIError is an error answer of the local API.
type APIError struct {
	Status  int    // the HTTP status code
	Message string // the answer's "error"
}

func (e *APIError) Error() string {
	return fmt.Sprintf("node: local API: %s (%d)", e.Message, e.Status)
}

// do sends a request with an optional JSON body and decodes a JSON answer
// into out (when not nil); error answers are *APIError.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://cellnode"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("node: local API: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e struct{ Error string }
		_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e)
		return &APIError{Status: resp.StatusCode, Message: e.Error}
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Register asks the agent to announce reg.
func (c *Client) Register(ctx context.Context, reg Registration) (RegisterResult, error) {
	var out struct {
		Result RegisterResult `json:"result"`
	}
	err := c.do(ctx, http.MethodPut, "/v1/cells/"+reg.Name, reg, &out)
	return out.Result, err
}

// Deregister asks the agent to withdraw the cell name.
func (c *Client) Deregister(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/cells/"+name, nil, nil)
}

// Cells lists the cells the agent announces.
func (c *Client) Cells(ctx context.Context) ([]CellInfo, error) {
	var out struct {
		Cells []CellInfo `json:"cells"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/cells", nil, &out)
	return out.Cells, err
}

// Watch blocks until the set of the cell name differs from index (0: at
// once), or wait passes (0: the agent's default), and returns it. No
// publishers means the agent's trust settings for the name.
func (c *Client) Watch(ctx context.Context, name string, index uint64, wait time.Duration, opts FindOptions) (*WatchResult, error) {
	q := url.Values{"name": {name}}
	if index != 0 {
		q.Set("index", strconv.FormatUint(index, 10))
	}
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	for _, p := range opts.Publishers {
		q.Add("publisher", base64.StdEncoding.EncodeToString(p))
	}
	if opts.All {
		q.Set("all", "1")
	}
	var res WatchResult
	return &res, c.do(ctx, http.MethodGet, "/v1/watch?"+q.Encode(), nil, &res)
}

// ownedByMe reports whether fi belongs to this process's user.
func ownedByMe(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Getuid()
}
