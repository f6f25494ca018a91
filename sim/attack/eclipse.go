package attack

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/cellnode/cellnode/internal/wire"
	"github.com/cellnode/cellnode/sim"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/dht/record"
	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"
)

// Sybil answers on the instances protocol.
const (
	sybilEmpty int32 = iota // take PUTs, answer GETs with nothing
	sybilJunk               // take PUTs, answer GETs with the same junk as every other Sybil
)

// sybil is a node whose peer ID was ground close to a key. It runs a real
// node (so kad-dht treats it as any server: routing tables take it,
// lookups return it) whose instances-protocol handler lies.
type sybil struct {
	*extra
	mode *atomic.Int32
	junk [][]byte
	puts *atomic.Int64 // PUTs swallowed
	gets *atomic.Int64 // GETs answered
}

func (s *sybil) handle(st network.Stream) {
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(5 * time.Second))
	r := msgio.NewVarintReaderSize(st, 8<<10)
	msg, err := r.ReadMsg()
	if err != nil {
		_ = st.Reset()
		return
	}
	var req wire.Request
	if err := cbor.Unmarshal(msg, &req); err != nil {
		_ = st.Reset()
		return
	}
	var resp wire.Response
	switch req.Op {
	case wire.OpPut:
		s.puts.Add(1)
	case wire.OpGet:
		s.gets.Add(1)
		if s.mode.Load() == sybilJunk {
			resp.Records = s.junk
		}
	}
	out, _ := wire.Enc.Marshal(resp)
	if err := msgio.NewVarintWriter(st).WriteMsg(out); err != nil {
		_ = st.Reset()
	}
}

// eclipse runs AttackEclipse. Each measurement has a cell of its own
// (acme/eclipse-N), whose Sybils are in place before its instances
// announce: no honest node ever stored its records, except each instance's
// own node, which keeps its record in its own store. (Sybils that come
// later leave the former storers serving the records until they expire,
// up to 65 s.)
func (a *arena) eclipse(ctx context.Context, rep *AttackReport) error {
	pubPriv := a.key("publisher")
	pub := pubPriv.Public().(ed25519.PublicKey)
	ids := a.honestIDs()
	k := a.as.Network.BucketSize
	grinder := rand.NewChaCha8(sim.Seed(a.as.Network.Seed, "sybil-grind"))

	mode := &atomic.Int32{}
	puts, gets := &atomic.Int64{}, &atomic.Int64{}
	var sybils []*sybil
	tries, ground := 0, 0
	// addSybils joins n Sybils closer to key than any honest node. Each
	// dials the k honest nodes closest to the key and 3 others, as a Sybil
	// that wants to be found would.
	addSybils := func(key string, n int, junk [][]byte) error {
		want := maxCPL(key, ids) + 1
		for range n {
			priv, t := grind(grinder, key, want)
			tries += t
			ground++
			dial := closest(key, ids, k)
			for range 3 {
				dial = append(dial, ids[a.rng.IntN(len(ids))])
			}
			e, err := a.joinVia(ctx, priv, dial, dht.ModeServer, true)
			if err != nil {
				return err
			}
			s := &sybil{extra: e, mode: mode, junk: junk, puts: puts, gets: gets}
			e.host.SetStreamHandler(dht.ProtocolID, s.handle)
			sybils = append(sybils, s)
		}
		return nil
	}
	// sybilsAmong counts the Sybils among the k closest peers of key that a
	// lookup from an honest node returns.
	sybilsAmong := func(key string) int {
		got, err := a.nw.Node(a.honest()[0]).DHT().Kad().GetClosestPeers(ctx, key)
		if err != nil {
			return -1
		}
		isSybil := map[peer.ID]bool{}
		for _, s := range sybils {
			isSybil[s.node.ID()] = true
		}
		n := 0
		for _, p := range got[:min(len(got), k)] {
			if isSybil[p] {
				n++
			}
		}
		return n
	}
	measure := func(label, name string, want map[peer.ID]bool, withOpen bool) {
		for _, m := range []struct {
			mode  int32
			label string
		}{{sybilEmpty, "empty"}, {sybilJunk, "junk"}} {
			mode.Store(m.mode)
			g0, p0 := gets.Load(), puts.Load()
			var rows []AttackRow
			if withOpen {
				row := AttackRow{Case: fmt.Sprintf("%s, %s: pinning nothing", label, m.label)}
				a.findRow(ctx, &row, name, nil, want, a.as.Finds)
				rows = append(rows, row)
			}
			row := AttackRow{Case: fmt.Sprintf("%s, %s: pinning the publisher", label, m.label)}
			a.findRow(ctx, &row, name, []ed25519.PublicKey{pub}, want, a.as.Finds)
			rows = append(rows, row)
			rows[0].Attempts = int(gets.Load() - g0 + puts.Load() - p0)
			rep.Rows = append(rep.Rows, rows...)
		}
	}
	run := func(n int, both bool) error {
		name := fmt.Sprintf("acme/eclipse-%d", n)
		if both {
			name = fmt.Sprintf("acme/eclipse-both-%d", n)
		}
		junk, err := sybilJunkFor(a.as.Network.Seed, name)
		if err != nil {
			return err
		}
		keys := []string{record.Key(name)}
		if both {
			keys = append(keys, dht.PublisherKey(name, pub))
		}
		for _, key := range keys {
			if err := addSybils(key, n, junk); err != nil {
				return err
			}
		}
		c, err := a.startCell(ctx, name, pubPriv, a.pick(a.as.Instances))
		if err != nil {
			return err
		}
		label := fmt.Sprintf("%d Sybils on the name (%d of k)", n, sybilsAmong(keys[0]))
		if both {
			label = fmt.Sprintf("%d on name (%d of k) and %d on publisher key (%d of k)", n, sybilsAmong(keys[0]), n, sybilsAmong(keys[1]))
		}
		measure(label, name, c.live(), !both)
		// This step's Sybils leave, so that the next step's figures are
		// its own.
		for _, s := range sybils {
			for _, p := range a.nw.Mocknet().Peers() {
				if p != s.node.ID() {
					_ = a.nw.Mocknet().UnlinkPeers(s.node.ID(), p)
				}
			}
			_ = s.host.Close()
			_ = s.node.Close()
		}
		sybils = nil
		return nil
	}
	for _, n := range a.as.Sybils {
		if err := run(n, false); err != nil {
			return err
		}
	}
	last := a.as.Sybils[len(a.as.Sybils)-1]
	for _, n := range []int{min(3, last), min(k, last)} {
		if err := run(n, true); err != nil {
			return err
		}
	}
	rep.Notes = append(rep.Notes,
		fmt.Sprintf("%d Sybils ground: %d keys tried, %.0f per Sybil (CPL above the best honest node's, about log2(%d nodes)+1)", ground, tries, float64(tries)/float64(max(ground, 1)), len(ids)),
		"empty: Sybils take PUTs and answer GETs with nothing; junk: they all answer GETs with the same 50 valid fake records and 50 garbage strings",
		"attempts: GETs and PUTs the Sybils answered")
	return nil
}

// sybilJunkFor returns what junk-mode Sybils answer for name: valid open
// records of made-up instances and bytes that are no record at all, the
// same at every Sybil, so that their answers agree.
func sybilJunkFor(s uint64, name string) ([][]byte, error) {
	var junk [][]byte
	rng := rand.New(rand.NewChaCha8(sim.Seed(s, "sybil-junk/"+name)))
	for i := range 50 {
		var sd [ed25519.SeedSize]byte
		for j := range sd {
			sd[j] = byte(rng.UintN(256))
		}
		r, err := signRecord(ed25519.NewKeyFromSeed(sd[:]), name, 1, time.Now(), fmt.Sprintf("127.0.0.1:%d", 1+i%30), nil)
		if err != nil {
			return nil, err
		}
		junk = append(junk, r.Bytes())
		g := make([]byte, 64)
		for j := range g {
			g[j] = byte(rng.UintN(256))
		}
		junk = append(junk, g)
	}
	return junk, nil
}
