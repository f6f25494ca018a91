package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cellnode/cellnode/dht/record"

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
	// record.Delegation); nil publishes open records. SetDelegation replaces it.
	Delegation *record.Delegation

	CheckInterval time.Duration // health check period; 0 means 2 s
	Republish     time.Duration // republish period while healthy; 0 means 20 s
	Lifetime      time.Duration // record lifetime; 0 means 60 s (the most allowed)
}

// WithdrawTimeout is the budget of one withdrawal: the one a stopping
// announcer publishes (Stop, Leave, Close), or one published when the
// service stops answering. A stop's withdrawal gets it whole, whatever
// context the stop was asked with.
const WithdrawTimeout = 5 * time.Second

const (
	// publishTimeout bounds one publish; a failed health check cancels it
	// sooner.
	publishTimeout = 15 * time.Second
	// warnEveryRepublishes: while publishes reach no remote peer, the
	// warning is repeated once per this many republish intervals.
	warnEveryRepublishes = 5
	// warnEveryChecks: while the service does not answer, the warning is
	// repeated once per this many checks.
	warnEveryChecks = 15
)

// ErrClosed is returned by Announce once the node's Close has begun.
var ErrClosed = errors.New("node: closed")

// AnnouncerStatus is a snapshot of an announcer.
type AnnouncerStatus struct {
	Name        string    `json:"name"`
	Endpoint    string    `json:"endpoint"`
	Endpoints   []string  `json:"endpoints"` // as last announced
	Healthy     bool      `json:"healthy"`
	Announcing  bool      `json:"announcing"`
	LastPublish time.Time `json:"last_publish,omitzero"`
	Publishes   int       `json:"publishes"`
	StoredAt    int       `json:"stored_at"` // remote peers that took the last record
	LastError   string    `json:"last_error,omitempty"`

	Seq         uint64    `json:"seq,omitempty"`         // of the last record published
	LastSuccess time.Time `json:"last_success,omitzero"` // last publish that a remote peer took
	// Failures counts the publishes in a row that no remote peer took; the
	// cell is then visible on this machine only.
	Failures int `json:"failures,omitempty"`
	// StaleRefusals counts the publishes that storers refused as stale: the
	// network held a record of this node with a higher sequence number
	// (its sequence file went back). Each moved the sequence past it.
	StaleRefusals int `json:"stale_refusals,omitempty"`
	// DownChecks counts the failed health checks in a row, since DownSince.
	DownChecks int       `json:"down_checks,omitempty"`
	DownSince  time.Time `json:"down_since,omitzero"`
	// LastWithdrawal is when the last withdrawal was published, and
	// WithdrawalStoredAt how many remote peers took it.
	LastWithdrawal     time.Time `json:"last_withdrawal,omitzero"`
	WithdrawalStoredAt int       `json:"withdrawal_stored_at,omitempty"`
	// Checks counts the health checks made, CheckFailures those the
	// service failed.
	Checks        uint64 `json:"checks"`
	CheckFailures uint64 `json:"check_failures"`
}

// Announcer keeps one cell announced while its service answers. Its
// methods are safe for concurrent use.
type Announcer struct {
	n      *Node
	a      Announcement
	ep     Endpoint
	cancel context.CancelFunc // stops the loop
	done   chan struct{}      // closed when the loop and its last withdrawal are over
	crash  atomic.Bool        // stop without a withdrawal, as a crash would (tests)

	mu      sync.Mutex
	status  AnnouncerStatus
	started time.Time
	stopErr error // the last withdrawal's outcome; read after done
	// live is when the newest record sent may stop being served (its
	// expiry plus the allowed skew); zero when nothing needs withdrawing.
	live time.Time
	// retry, when not zero, is when a publish is due after a failed one,
	// instead of the republish period.
	retry    time.Time
	lastWarn time.Time // of the "no remote peer" warning
	warnedWD bool      // a failed withdrawal was logged since the last success
	// shards is the shard count of the records (0: 1), raised when the
	// storers advise more (see dht.PublishSigned); a withdrawal carries
	// the last one, so that it goes to the shard of the last record.
	shards int
}

// Announce starts announcing a cell: it checks the endpoint every
// CheckInterval, publishes a signed record at once and every Republish
// while the service answers, and publishes a withdrawal as soon as a check
// fails. Health checks keep their schedule while a publish is in flight; a
// failed check cancels it. Stop, Leave or the node's Close withdraws it.
//
// A publish counts as failed when no remote peer took the record (this
// node's own store does not count): the status says so, a warning is
// logged at once and once every 5 republish intervals while it lasts, and
// the publish is retried sooner than the republish period. A publish that
// finds every routing table empty (the node's bootstrap failed, or all its
// peers left) bootstraps again first. When storers
// refuse the records as stale, the node moves its sequence past the one
// the network holds and republishes. Announce returns ErrClosed once the
// node's Close has begun.
func (n *Node) Announce(a Announcement) (*Announcer, error) {
	if _, err := record.ParseName(a.Name); err != nil {
		return nil, err
	}
	ep, err := ParseEndpoint(a.Endpoint)
	if err != nil {
		return nil, err
	}
	if err := record.CheckRegion(a.Region); err != nil {
		return nil, fmt.Errorf("node: announce %s: %w", a.Name, err)
	}
	if a.CheckInterval <= 0 {
		a.CheckInterval = 2 * time.Second
	}
	if a.Republish <= 0 {
		a.Republish = 20 * time.Second
	}
	if a.Lifetime <= 0 || a.Lifetime > record.MaxLifetime {
		a.Lifetime = record.MaxLifetime
	}
	if a.Delegation != nil {
		if err := a.Delegation.CheckFor(a.Name, n.priv.Public().(ed25519.PublicKey), n.now()); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	an := &Announcer{n: n, a: a, ep: ep, cancel: cancel, done: make(chan struct{}),
		started: n.now(), status: AnnouncerStatus{Name: a.Name, Endpoint: ep.String()}}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		cancel()
		return nil, fmt.Errorf("announce %s: %w", a.Name, ErrClosed)
	}
	n.announcers[an] = struct{}{}
	n.wg.Add(1)
	n.mu.Unlock()
	go an.run(ctx)
	return an, nil
}

// Leave withdraws every announced cell and stops its announcer. The
// withdrawals run in parallel, each with a budget of its own
// (WithdrawTimeout). Leave returns when all are over, or when ctx ends (the
// withdrawals then go on in the background within their budgets; Close
// waits for them). The error joins those of the withdrawals that reached no
// remote peer, or is ctx's. The node stays up: cells may be announced again.
func (n *Node) Leave(ctx context.Context) error {
	n.mu.Lock()
	as := make([]*Announcer, 0, len(n.announcers))
	for a := range n.announcers {
		as = append(as, a)
	}
	n.mu.Unlock()
	for _, a := range as {
		a.cancel()
	}
	var errs []error
	for _, a := range as {
		select {
		case <-a.done:
			errs = append(errs, a.stopErr)
		case <-ctx.Done():
			return fmt.Errorf("node: leave: %w", ctx.Err())
		}
	}
	return errors.Join(errs...)
}

// SetDelegation replaces the delegation used from the next publish on, for
// example when the operator installs a renewed one. It must cover the cell
// and this node's key.
func (an *Announcer) SetDelegation(d *record.Delegation) error {
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

// Stop stops announcing and, if records of the cell may still be live,
// publishes a withdrawal with a budget of its own (WithdrawTimeout): ctx's
// cancellation does not cut it short, since a stop is often asked for with
// a context that a signal has just cancelled. Stop returns when the
// withdrawal is over, or when ctx ends (ctx's error; the withdrawal goes on
// in the background and the node's Close waits for it). The error says
// when the withdrawal reached no remote peer: the records then expire on
// their own within their lifetime. It is safe to call more than once.
func (an *Announcer) Stop(ctx context.Context) error {
	an.cancel()
	select {
	case <-an.done:
		return an.stopErr
	default:
	}
	select {
	case <-an.done:
		return an.stopErr
	case <-ctx.Done():
		return fmt.Errorf("stop %s: %w", an.a.Name, ctx.Err())
	}
}

// halt stops the loop without a withdrawal, as a crash would (tests).
func (an *Announcer) halt() {
	an.crash.Store(true)
	an.cancel()
	<-an.done
}

// publishJob is one publish running beside the health checks.
type publishJob struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (j *publishJob) doneC() <-chan struct{} {
	if j == nil {
		return nil
	}
	return j.done
}

// run checks the service every CheckInterval until ctx ends, starts
// publishes in goroutines of their own and withdraws when a check fails;
// when ctx ends it cancels a publish in flight, waits for it and publishes
// the final withdrawal with a fresh budget.
func (an *Announcer) run(ctx context.Context) {
	defer an.n.wg.Done()
	defer close(an.done)
	t := time.NewTicker(an.a.CheckInterval)
	defer t.Stop()
	var job *publishJob
	stopJob := func() {
		if job != nil {
			job.cancel()
			<-job.done
			job = nil
		}
	}
loop:
	for {
		_, err := an.ep.probe(ctx, time.Second)
		if ctx.Err() != nil {
			break // a stop, not the service, ended the check
		}
		healthy := err == nil
		an.checked(healthy, err)
		switch {
		case healthy:
			if job == nil && an.due() {
				jctx, cancel := context.WithCancel(ctx)
				job = &publishJob{cancel: cancel, done: make(chan struct{})}
				go func(j *publishJob) {
					defer close(j.done)
					defer cancel()
					an.publish(jctx)
				}(job)
			}
		default:
			stopJob()
			if an.mayBeLive() {
				wctx, cancel := context.WithTimeout(ctx, WithdrawTimeout)
				_ = an.withdraw(wctx, true)
				cancel()
			}
		}
		for {
			select {
			case <-ctx.Done():
				break loop
			case <-t.C:
				continue loop
			case <-job.doneC():
				job = nil
			}
		}
	}
	stopJob()
	defer an.n.forget(an)
	if an.crash.Load() {
		return
	}
	an.n.unregisterLocal(an.a.Name)
	if !an.mayBeLive() {
		return
	}
	wctx, cancel := context.WithTimeout(context.Background(), WithdrawTimeout)
	defer cancel()
	if err := an.withdraw(wctx, false); err != nil {
		an.stopErr = fmt.Errorf("stop %s: %w", an.a.Name, err)
	}
}

// forget removes a from the node's announcers.
func (n *Node) forget(a *Announcer) {
	n.mu.Lock()
	delete(n.announcers, a)
	n.mu.Unlock()
}

// checked records a health check and logs what changed: a service that
// does not answer is reported at once (also when it never answered) and
// again every warnEveryChecks checks while it stays down.
func (an *Announcer) checked(healthy bool, err error) {
	now := an.n.now()
	an.mu.Lock()
	s := &an.status
	first := s.DownChecks == 0 && !s.Healthy && s.Publishes == 0 && s.LastWithdrawal.IsZero()
	wasHealthy, announcing := s.Healthy, s.Announcing
	s.Healthy = healthy
	s.Checks++
	if !healthy {
		s.CheckFailures++
	}
	if healthy {
		down := s.DownChecks
		s.DownChecks, s.DownSince = 0, time.Time{}
		an.mu.Unlock()
		if !wasHealthy {
			an.n.log.Info("service answers; announcing", "cell", an.a.Name, "endpoint", an.ep, "down_checks", down)
		}
		return
	}
	s.DownChecks++
	if s.DownChecks == 1 {
		s.DownSince = now
	}
	checks, since := s.DownChecks, s.DownSince
	s.LastError = fmt.Sprintf("service not answering: %v", err)
	an.mu.Unlock()
	log := an.n.log.With("cell", an.a.Name, "endpoint", an.ep, "err", err)
	switch {
	case checks == 1 && first:
		log.Warn("service not answering; not announcing until it does")
	case checks == 1 && announcing:
		log.Warn("service stopped answering; withdrawing")
	case checks == 1:
		log.Warn("service not answering")
	case (checks-1)%warnEveryChecks == 0:
		log.Warn("service still not answering", "checks", checks, "for", now.Sub(since).Round(time.Millisecond))
	}
}

// due reports whether a publish is due: never published, withdrawn, the
// republish period passed, or the retry time of a failed publish came.
func (an *Announcer) due() bool {
	now := an.n.now()
	an.mu.Lock()
	defer an.mu.Unlock()
	if !an.retry.IsZero() {
		return !now.Before(an.retry)
	}
	return !an.status.Announcing || now.Sub(an.status.LastPublish) >= an.a.Republish
}

// mayBeLive reports whether a record sent may still be served, so that a
// withdrawal is needed.
func (an *Announcer) mayBeLive() bool {
	now := an.n.now()
	an.mu.Lock()
	defer an.mu.Unlock()
	return !an.live.IsZero() && now.Before(an.live)
}

// sign makes the next record of the announcement.
func (an *Announcer) sign(withdrawn bool) (*record.Record, []string, error) {
	seq, warn, err := an.n.seq.take(withdrawn)
	if err != nil {
		return nil, nil, err
	}
	if warn != nil {
		an.n.log.Warn("sequence file not saved", "cell", an.a.Name, "seq", seq, "err", warn)
	}
	now := an.n.now()
	an.mu.Lock()
	deleg := an.a.Delegation
	shards := an.shards
	an.mu.Unlock()
	if deleg != nil {
		if err := deleg.CheckFor(an.a.Name, an.n.priv.Public().(ed25519.PublicKey), now); err != nil {
			return nil, nil, fmt.Errorf("not publishing: %w (install a renewed delegation)", err)
		}
	}
	r := record.Record{
		Name: an.a.Name, PublicKey: an.n.priv.Public().(ed25519.PublicKey),
		Region: an.a.Region, Manifest: an.a.Manifest, Seq: seq,
		Issued: now, Expires: now.Add(an.a.Lifetime), Withdrawn: withdrawn,
		Delegation: deleg, Shards: shards,
	}
	var eps []string
	if !withdrawn {
		eps = an.ep.expand(an.n.host.Addrs())
		r.Endpoints = eps
	}
	s, err := record.Sign(an.n.priv, r)
	return s, eps, err
}

// publishRecord stores r in the DHT (or through the test seam).
func (n *Node) publishRecord(ctx context.Context, r *record.Record) (dht.PublishStats, error) {
	if n.publishHook != nil {
		return n.publishHook(ctx, r)
	}
	return n.publishObserved(ctx, r)
}

// backoff is how long after the k-th failed publish in a row the next one
// is tried: CheckInterval doubled each time, at most Republish.
func (an *Announcer) backoff(k int) time.Duration {
	d := an.a.CheckInterval
	for i := 1; i < k && d < an.a.Republish; i++ {
		d *= 2
	}
	return min(d, an.a.Republish)
}

// maxReshard bounds how many times a publish signs again with more
// shards: the count doubles at most log2(record.MaxShards) times.
const maxReshard = 7

func (an *Announcer) publish(ctx context.Context) {
	r, eps, err := an.sign(false)
	if err != nil {
		// Not every check: a full disk or exhausted numbers last. The
		// records sent so far stay live until they expire, and a
		// withdrawal can still be signed (see Sequencer).
		an.mu.Lock()
		an.retry = an.n.now().Add(an.a.Republish)
		an.mu.Unlock()
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
	an.mu.Lock()
	an.live = r.Expires.Add(record.MaxSkew) // from now on the record may be out there
	an.mu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	an.n.rejoin(pctx)
	st, err := an.n.publishRecord(pctx, r)
	// The storers advise more shards: sign again with their count, at
	// once (the record just sent lives on where it was taken).
	for try := 0; st.Shards > r.ShardCount() && record.CheckShards(st.Shards) == nil && try < maxReshard && pctx.Err() == nil; try++ {
		an.mu.Lock()
		an.shards = st.Shards
		an.mu.Unlock()
		an.n.log.Debug("storers advise more shards", "cell", an.a.Name, "shards", r.ShardCount(), "advice", st.Shards)
		r2, eps2, err2 := an.sign(false)
		if err2 != nil {
			break
		}
		r, eps = r2, eps2
		st, err = an.n.publishRecord(pctx, r)
	}
	cancel()
	cancelled := ctx.Err() != nil
	var held uint64
	if st.Stored == 0 && !cancelled {
		held = an.heldSeq(ctx, r, st, err)
	}
	now := an.n.now()
	an.mu.Lock()
	s := &an.status
	s.Announcing = true
	s.LastPublish = r.Issued
	s.Endpoints = eps
	s.Publishes++
	s.Seq = r.Seq
	s.StoredAt = st.Stored
	failures := s.Failures
	var warn, recovered, stale bool
	switch {
	case cancelled:
		s.LastError = "publish cancelled"
	case st.Stored > 0:
		recovered = s.Failures > 0
		s.Failures, s.LastError, s.LastSuccess = 0, "", now
		an.retry = time.Time{}
	default:
		s.Failures++
		failures = s.Failures
		if held > r.Seq {
			stale = true
			s.StaleRefusals++
			an.retry = now // republish at the next check, past the network's number
		} else {
			an.retry = now.Add(an.backoff(s.Failures))
		}
		if err == nil {
			err = errors.New("no remote peer took the record (stored on this node only)")
		}
		s.LastError = err.Error()
		if s.Failures == 1 || now.Sub(an.lastWarn) >= warnEveryRepublishes*an.a.Republish {
			warn, an.lastWarn = true, now
		}
	}
	an.mu.Unlock()
	log := an.n.log.With("cell", an.a.Name, "seq", r.Seq)
	switch {
	case stale:
		an.skipPast(held, r.Seq)
	case warn:
		log.Warn("records reach no remote peer; the cell is visible on this machine only",
			"failures", failures, "sent", st.Sent, "closest", st.Closest, "err", err)
	case recovered:
		log.Info("records reach remote peers again", "stored_at", st.Stored, "after_failures", failures)
	case st.Stored > 0:
		log.Debug("published", "stored_at", st.Stored, "sent", st.Sent, "closest", st.Closest)
	}
}

// skipPast moves the node's sequence past held, the sequence number the
// network holds for this node's record of the cell, above ours.
func (an *Announcer) skipPast(held, ours uint64) {
	an.n.log.Warn("storers refuse this node's records as stale: they hold a newer one (the sequence file went back?); moving the sequence past it",
		"cell", an.a.Name, "seq", ours, "held", held)
	if err := an.n.seq.Skip(held); err != nil {
		an.fail(err)
	}
}

// heldSeq looks for the highest sequence number of this node's records of
// the cell that the network holds, after a publish of r that no remote
// peer took; 0 when it holds none above r's or when nobody was asked. A
// storer's refusal as stale says which number it holds, but only a record
// signed by this node's key is believed: a lying storer must not push the
// sequence to its end.
func (an *Announcer) heldSeq(ctx context.Context, r *record.Record, st dht.PublishStats, err error) uint64 {
	if _, ok := staleRefusal(err); !ok && st.Sent == 0 {
		return 0 // nobody was sent the record, so nobody refused it
	}
	cctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	raws, _, cerr := an.n.dht.Collect(cctx, r.Name, nil, an.n.now)
	if cerr != nil {
		return 0
	}
	var held uint64
	for _, raw := range raws {
		rec, err := record.Decode(raw)
		if err == nil && rec.Peer == an.n.ID() && rec.Name == r.Name && rec.Seq > r.Seq {
			held = max(held, rec.Seq)
		}
	}
	return held
}

// staleRefusal reports whether err holds a storer's refusal of a record as
// stale, and the sequence number the storer says it holds.
func staleRefusal(err error) (uint64, bool) {
	var re *dht.RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Msg, record.ErrStale.Error()) {
		return 0, false
	}
	_, after, ok := strings.Cut(re.Msg, "holding ")
	if !ok {
		return 0, true
	}
	held, _ := strconv.ParseUint(strings.TrimSpace(after), 10, 64)
	return held, true
}

// withdraw publishes a withdrawal with ctx, and once more past the
// network's sequence number when storers refused it as stale. It fails
// when no remote peer took it; then, from the loop (retry true), the next
// failed check tries again while the records may be live.
func (an *Announcer) withdraw(ctx context.Context, retry bool) error {
	an.n.unregisterLocal(an.a.Name)
	var st dht.PublishStats
	var err error
	var r *record.Record
	for attempt := 0; attempt < 2; attempt++ {
		if r, _, err = an.sign(true); err != nil {
			an.fail(err)
			return err
		}
		st, err = an.n.publishRecord(ctx, r)
		if st.Stored > 0 || ctx.Err() != nil {
			break
		}
		held := an.heldSeq(ctx, r, st, err)
		if held <= r.Seq {
			break
		}
		an.mu.Lock()
		an.status.StaleRefusals++
		an.mu.Unlock()
		an.skipPast(held, r.Seq)
	}
	if st.Stored == 0 && err == nil {
		err = errors.New("no remote peer took the withdrawal")
	}
	if st.Stored > 0 {
		err = nil
	}
	an.mu.Lock()
	an.status.Announcing = false
	an.status.Endpoints = nil
	an.status.LastWithdrawal = r.Issued
	an.status.WithdrawalStoredAt = st.Stored
	an.status.Seq = r.Seq
	an.retry = time.Time{}
	live := an.live
	warn := false
	if err == nil {
		an.live, an.warnedWD = time.Time{}, false
	} else if !an.warnedWD && ctx.Err() == nil {
		an.warnedWD, warn = true, true
	}
	an.mu.Unlock()
	switch {
	case err == nil:
		an.n.log.Info("withdrawn", "cell", an.a.Name, "seq", r.Seq, "stored_at", st.Stored)
	case warn && retry:
		an.n.log.Warn("withdrawal reached no remote peer; retrying at each check while the service is down",
			"cell", an.a.Name, "until", live, "err", err)
	case !retry:
		an.n.log.Warn("withdrawal reached no remote peer; the record expires on its own", "cell", an.a.Name, "by", live, "err", err)
	}
	return err
}

func (an *Announcer) fail(err error) {
	an.n.log.Error("announce", "cell", an.a.Name, "err", err)
	an.mu.Lock()
	an.status.LastError = err.Error()
	an.mu.Unlock()
}
