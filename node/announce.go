package node

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/ipfs/go-cid"
)

// Announcement says what a node announces for one cell. Zero durations take
// the defaults named on each field.
type Announcement struct {
	Name     string  // cell name, "org/name"
	Endpoint string  // "host:port", ":port" (all interfaces) or "unix:/path"
	Region   string  // optional
	Manifest cid.Cid // optional manifest commit CID
	// Delegation, when not nil, ties the records to a publisher key (see
	// dht.Delegation); nil publishes open records. SetDelegation replaces it.
	Delegation *dht.Delegation

	CheckInterval time.Duration // health check period; 0 means 2 s
	Republish     time.Duration // republish period while healthy; 0 means 20 s
	Lifetime      time.Duration // record lifetime; 0 means 60 s (the most allowed)
}

// AnnouncerStatus is a snapshot of an announcer.
type AnnouncerStatus struct {
	Name        string    `json:"name"`
	Endpoint    string    `json:"endpoint"`
	Endpoints   []string  `json:"endpoints"` // as last announced
	Healthy     bool      `json:"healthy"`
	Announcing  bool      `json:"announcing"`
	LastPublish time.Time `json:"last_publish,omitzero"`
	Publishes   int       `json:"publishes"`
	StoredAt    int       `json:"stored_at"` // peers that took the last record
	LastError   string    `json:"last_error,omitempty"`
}

// Announcer keeps one cell announced while its service answers.
type Announcer struct {
	n    *Node
	a    Announcement
	ep   Endpoint
	stop chan struct{}
	done chan struct{}
	once sync.Once

	mu      sync.Mutex
	status  AnnouncerStatus
	started time.Time
}

// Announce starts announcing a cell: it checks the endpoint every
// CheckInterval, publishes a signed record at once and every Republish
// while the service answers, and publishes a withdrawal as soon as a check
// fails. Stop (or the node's Close) withdraws it.
func (n *Node) Announce(a Announcement) (*Announcer, error) {
	if _, err := dht.ParseName(a.Name); err != nil {
		return nil, err
	}
	ep, err := ParseEndpoint(a.Endpoint)
	if err != nil {
		return nil, err
	}
	if len(a.Region) > dht.MaxRegionLen {
		return nil, fmt.Errorf("node: region longer than %d bytes", dht.MaxRegionLen)
	}
	if a.CheckInterval <= 0 {
		a.CheckInterval = 2 * time.Second
	}
	if a.Republish <= 0 {
		a.Republish = 20 * time.Second
	}
	if a.Lifetime <= 0 || a.Lifetime > dht.MaxLifetime {
		a.Lifetime = dht.MaxLifetime
	}
	if a.Delegation != nil {
		if err := a.Delegation.CheckFor(a.Name, n.priv.Public().(ed25519.PublicKey), n.now()); err != nil {
			return nil, err
		}
	}
	an := &Announcer{n: n, a: a, ep: ep, stop: make(chan struct{}), done: make(chan struct{}),
		started: n.now(), status: AnnouncerStatus{Name: a.Name, Endpoint: ep.String()}}
	n.mu.Lock()
	n.announcers[an] = struct{}{}
	n.mu.Unlock()
	go an.run()
	return an, nil
}

// SetDelegation replaces the delegation used from the next publish on, for
// example when the operator installs a renewed one. It must cover the cell
// and this node's key.
func (an *Announcer) SetDelegation(d *dht.Delegation) error {
	if err := d.CheckFor(an.a.Name, an.n.priv.Public().(ed25519.PublicKey), an.n.now()); err != nil {
		return err
	}
	an.mu.Lock()
	an.a.Delegation = d
	an.mu.Unlock()
	return nil
}

// Status returns a snapshot of the announcer's state.
func (an *Announcer) Status() AnnouncerStatus {
	an.mu.Lock()
	defer an.mu.Unlock()
	s := an.status
	s.Endpoints = append([]string(nil), s.Endpoints...)
	return s
}

// Stop stops announcing and publishes a withdrawal if the cell was being
// announced, giving up when ctx ends. It is safe to call more than once.
func (an *Announcer) Stop(ctx context.Context) {
	an.once.Do(func() { close(an.stop) })
	select {
	case <-an.done:
	case <-ctx.Done():
		return
	}
	if an.Status().Announcing {
		an.withdraw(ctx)
	}
	an.n.mu.Lock()
	delete(an.n.announcers, an)
	an.n.mu.Unlock()
}

func (an *Announcer) run() {
	defer close(an.done)
	t := time.NewTicker(an.a.CheckInterval)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-an.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		_, err := an.ep.probe(ctx, time.Second)
		if ctx.Err() != nil {
			// Stopping: the probe failed because it was cut, not because
			// the service is down. Stop publishes the withdrawal (a
			// withdrawal here would be cut too, and Stop would skip its own).
			return
		}
		healthy := err == nil
		s := an.Status()
		switch {
		case healthy && (!s.Announcing || an.n.now().Sub(s.LastPublish) >= an.a.Republish):
			if !s.Healthy {
				an.n.log.Info("service answers; announcing", "cell", an.a.Name, "endpoint", an.ep)
			}
			an.publish(ctx)
		case !healthy && s.Announcing:
			an.n.log.Warn("service stopped answering; withdrawing", "cell", an.a.Name, "endpoint", an.ep, "err", err)
			an.withdraw(ctx)
		case !healthy && s.Healthy:
			an.n.log.Warn("service not answering", "cell", an.a.Name, "endpoint", an.ep, "err", err)
		}
		an.mu.Lock()
		an.status.Healthy = healthy
		if !healthy && ctx.Err() == nil {
			an.status.LastError = fmt.Sprintf("service not answering: %v", err)
		}
		an.mu.Unlock()
		select {
		case <-an.stop:
			return
		case <-t.C:
		}
	}
}

// sign makes the next record of the announcement.
func (an *Announcer) sign(withdrawn bool) (*dht.Record, []string, error) {
	seq, err := an.n.seq.Next()
	if err != nil {
		return nil, nil, err
	}
	now := an.n.now()
	an.mu.Lock()
	deleg := an.a.Delegation
	an.mu.Unlock()
	if deleg != nil {
		if err := deleg.CheckFor(an.a.Name, an.n.priv.Public().(ed25519.PublicKey), now); err != nil {
			return nil, nil, fmt.Errorf("not publishing: %w (install a renewed delegation)", err)
		}
	}
	r := dht.Record{
		Name: an.a.Name, PublicKey: an.n.priv.Public().(ed25519.PublicKey),
		Region: an.a.Region, Manifest: an.a.Manifest, Seq: seq,
		Issued: now, Expires: now.Add(an.a.Lifetime), Withdrawn: withdrawn,
		Delegation: deleg,
	}
	var eps []string
	if !withdrawn {
		eps = an.ep.expand(an.n.host.Addrs())
		r.Endpoints = eps
	}
	s, err := dht.Sign(an.n.priv, r)
	return s, eps, err
}

func (an *Announcer) publish(ctx context.Context) {
	r, eps, err := an.sign(false)
	if err != nil {
		an.fail(err)
		return
	}
	// Register locally first: finders on this machine see the cell even
	// when the network does not answer.
	if err := an.n.registerLocal(LocalCell{
		Name: an.a.Name, Peer: an.n.ID().String(), Endpoint: an.ep.String(), Local: []string{an.ep.checkAddr()},
		PID: os.Getpid(), Home: an.n.cfg.Home, Started: an.started, Record: r.Bytes(),
	}); err != nil {
		an.n.log.Warn("could not register cell locally", "cell", an.a.Name, "err", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	st, err := an.n.dht.Publish(pctx, r)
	an.mu.Lock()
	defer an.mu.Unlock()
	an.status.Announcing = true
	an.status.LastPublish = r.Issued
	an.status.Endpoints = eps
	an.status.Publishes++
	an.status.StoredAt = st.Stored
	if err != nil {
		an.status.LastError = err.Error()
		an.n.log.Warn("publish failed; the cell is visible on this machine only", "cell", an.a.Name, "err", err)
		return
	}
	an.status.LastError = ""
	an.n.log.Debug("published", "cell", an.a.Name, "seq", r.Seq, "stored_at", st.Stored, "sent", st.Sent, "closest", st.Closest)
}

func (an *Announcer) withdraw(ctx context.Context) {
	an.n.unregisterLocal(an.a.Name)
	r, _, err := an.sign(true)
	if err != nil {
		an.fail(err)
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = an.n.dht.Publish(pctx, r)
	an.mu.Lock()
	an.status.Announcing = false
	an.status.Endpoints = nil
	an.mu.Unlock()
	if err != nil {
		an.n.log.Warn("withdrawal not stored; the record expires on its own within 60s", "cell", an.a.Name, "err", err)
	} else {
		an.n.log.Info("withdrawn", "cell", an.a.Name)
	}
}

func (an *Announcer) fail(err error) {
	an.n.log.Error("announce", "cell", an.a.Name, "err", err)
	an.mu.Lock()
	an.status.LastError = err.Error()
	an.mu.Unlock()
}
