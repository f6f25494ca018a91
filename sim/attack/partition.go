package attack

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"sync"
	"time"

	"github.com/cellnode/cellnode/sim"

	"github.com/cellnode/cellnode/node"
	"github.com/libp2p/go-libp2p/core/peer"
)

// partition runs AttackPartition: one instance on each side of a cut that
// splits the network in halves, then the cut heals. The report says what
// finds saw on each side while cut, how long after the heal finds on both
// sides got a record of the other side's instance published after the
// heal (first with links alone, within the storer check of reuse_for and
// two republishes, then after nodes dial a few peers across,
// as a node re-dialling its bootstrap and known peers would), and whether
// any finder ever saw an instance's sequence number go back.
func (a *arena) partition(ctx context.Context, rep *AttackReport) error {
	live := a.honest()
	a.rng.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
	sides := [2][]int{live[:len(live)/2], live[len(live)/2:]}
	c, err := a.startCell(ctx, attackName, a.key("publisher"), []int{sides[0][0], sides[1][0]})
	if err != nil {
		return err
	}
	inst := [2]peer.ID{c.ins[0].Peer, c.ins[1].Peer}
	republish := time.Duration(a.as.Republish)
	pinned := []ed25519.PublicKey{c.pub}

	// Finders: a few nodes on each side, not the instance hosts.
	var finders [2][]int
	for s := range sides {
		finders[s] = sides[s][1:min(len(sides[s]), 1+max(2, a.as.Finds/4))]
	}
	var mu sync.Mutex
	lastSeq := map[[2]peer.ID]uint64{}
	backwards := 0
	// look finds from every finder of side s and returns, per finder, the
	// sequence number of each instance it saw.
	look := func(s int) []map[peer.ID]uint64 {
		var out []map[peer.ID]uint64
		for _, i := range finders[s] {
			n := a.nw.Node(i)
			fctx, cancel := context.WithTimeout(ctx, sim.OpTimeout)
			res, err := n.FindWith(fctx, attackName, node.FindOptions{Publishers: pinned})
			cancel()
			seen := map[peer.ID]uint64{}
			if err == nil {
				for _, in := range res.Instances {
					id, _ := peer.Decode(in.Peer)
					seen[id] = in.Seq
					mu.Lock()
					key := [2]peer.ID{n.ID(), id}
					if in.Seq < lastSeq[key] {
						backwards++
					}
					lastSeq[key] = max(lastSeq[key], in.Seq)
					mu.Unlock()
				}
			}
			out = append(out, seen)
		}
		return out
	}
	// row runs one round of finds on both sides into a row: FindsOK counts
	// finds that saw want[side] (with a sequence number above fresh, when
	// given), Shown the finds that saw the other side's instance.
	row := func(label string, want func(s int) []peer.ID, fresh map[peer.ID]uint64) AttackRow {
		b0 := backwards
		r := AttackRow{Case: label}
		for s := range sides {
			for _, seen := range look(s) {
				r.Finds++
				ok := true
				for _, p := range want(s) {
					if seq, found := seen[p]; !found || seq <= fresh[p] {
						ok = false
						r.Lost++
					}
				}
				if ok {
					r.FindsOK++
				}
				if _, found := seen[inst[1-s]]; found && len(want(s)) == 1 {
					r.Shown++
				}
			}
		}
		r.Through = backwards - b0
		return r
	}
	both := func(int) []peer.ID { return inst[:] }
	own := func(s int) []peer.ID { return []peer.ID{inst[s]} }
	rep.Rows = append(rep.Rows, row("before the cut: both instances", both, nil))

	// The cut: every link across removed, every connection across closed.
	for _, x := range sides[0] {
		for _, y := range sides[1] {
			idx, idy := a.nw.Node(x).ID(), a.nw.Node(y).ID()
			_ = a.nw.Mocknet().UnlinkPeers(idx, idy)
			_ = a.nw.Mocknet().DisconnectPeers(idx, idy)
		}
	}
	if err := c.waitRepublished(ctx, 3); err != nil {
		return err
	}
	cut := row("cut: own side's instance, current record", own, atLeast(ownSeqs(a, c)))
	cut.Note = "shown: the other side's pre-cut record (live up to 60 s)"
	rep.Rows = append(rep.Rows, cut)

	// The heal: links only. A side converges when its finds return a
	// record of the other side's instance published after the heal.
	for _, x := range sides[0] {
		for _, y := range sides[1] {
			if _, err := a.nw.Mocknet().LinkPeers(a.nw.Node(x).ID(), a.nw.Node(y).ID()); err != nil {
				return err
			}
		}
	}
	converge := func(label string, limit time.Duration) (bool, error) {
		fresh := ownSeqs(a, c)
		start := time.Now()
		b0 := backwards
		var last AttackRow
		for {
			last = row(label, both, fresh)
			last.Through = backwards - b0 // over every round, not the last only
			if last.FindsOK == last.Finds {
				last.Note = fmt.Sprintf("converged after %.1f s (%.1f republish intervals)", time.Since(start).Seconds(), time.Since(start).Seconds()/republish.Seconds())
				rep.Rows = append(rep.Rows, last)
				return true, nil
			}
			if time.Since(start) > limit {
				last.Note = fmt.Sprintf("not converged after %.1f s (%.0f republish intervals)", time.Since(start).Seconds(), time.Since(start).Seconds()/republish.Seconds())
				rep.Rows = append(rep.Rows, last)
				return false, nil
			}
			select {
			case <-ctx.Done():
				return false, ctx.Err()
			case <-time.After(republish / 4):
			}
		}
	}
	// With links alone, finds converge once the announcers' republishes
	// reach the other side: at once when their routing tables still hold
	// peers across closer to the key than their storers, else at their
	// next check of the storer set (every reuse_for, 2 min by default; a
	// scenario scales it with the republish interval as a real node's is
	// 6 of its 20 s intervals).
	linksOnly := max(5*republish, a.as.Network.ReuseFor+2*republish)
	ok, err := converge("healed, links only", linksOnly)
	if err != nil {
		return err
	}
	if !ok {
		// What a node that re-dials its bootstrap and known peers would do:
		// every node dials two nodes of the other side.
		for s := range sides {
			for _, x := range sides[s] {
				for range 2 {
					y := sides[1-s][a.rng.IntN(len(sides[1-s]))]
					_ = a.nw.Node(x).Host().Connect(ctx, peer.AddrInfo{ID: a.nw.Node(y).ID()})
				}
			}
		}
		if _, err := converge("healed, then 2 peers across dialled", 5*republish); err != nil {
			return err
		}
	}
	rep.Notes = append(rep.Notes, fmt.Sprintf("republish every %v; %d+%d nodes; sequence numbers seen going back: %d", republish, len(sides[0]), len(sides[1]), backwards))
	return nil
}

// ownSeqs returns, for each instance of c, the sequence number of the
// record its own node holds (each host is a DHT server and keeps its own
// record): the newest it published.
func ownSeqs(a *arena, c *realCell) map[peer.ID]uint64 {
	out := map[peer.ID]uint64{}
	for _, in := range c.ins {
		for _, r := range a.nw.Node(in.Node).DHT().Store().Get(c.name) {
			if r.Peer == in.Peer {
				out[in.Peer] = r.Seq
			}
		}
	}
	return out
}

// atLeast turns "above" into "at least" for the sequence numbers of m.
func atLeast(m map[peer.ID]uint64) map[peer.ID]uint64 {
	out := map[peer.ID]uint64{}
	for p, s := range m {
		out[p] = s - 1
	}
	return out
}
