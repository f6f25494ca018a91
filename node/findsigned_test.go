package node

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht/record"
)

// TestFindSignedConcurrent: a find of a name that runs while another find
// of the same name sees a newer record of an instance still returns that
// instance, with the record it was made from. (The records used to be
// looked up afterwards, by peer and sequence number, in the recent-records
// cache, which the second find had replaced: the instance was left out.)
func TestFindSignedConcurrent(t *testing.T) {
	c := newCluster(t, nil)
	inst := c.node(nil, "")
	a := announce(t, inst, "acme/conc", service(t).Addr().String())
	first := a.Status().Seq
	finder := c.node(nil, t.TempDir())
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	finder.probes.timeout = time.Minute
	finder.probes.dial = func(ctx context.Context, network, addr string, guard bool) (net.Conn, error) {
		block := false
		once.Do(func() { block = true })
		if block { // the first find's probe waits for the second find
			close(entered)
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return (&prober{}).dialer(ctx, network, addr, guard)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type result struct {
		reply *FindReply
		err   error
	}
	firstFind := make(chan result, 1)
	go func() {
		r, err := finder.FindSigned(ctx, "acme/conc", FindOptions{})
		firstFind <- result{r, err}
	}()
	<-entered

	// The instance republishes; the second find sees the newer record.
	a.publish(ctx)
	second := a.Status().Seq
	if second <= first {
		t.Fatalf("republish: seq %d after %d", second, first)
	}
	r2, err := finder.FindSigned(ctx, "acme/conc", FindOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r2.Instances) != 1 || r2.Instances[0].Seq != second {
		t.Fatalf("second find: %+v", r2.Instances)
	}
	close(release)
	r1 := <-firstFind
	if r1.err != nil {
		t.Fatal(r1.err)
	}
	if len(r1.reply.Instances) != 1 {
		t.Fatalf("first find lost the instance: %+v", r1.reply.Instances)
	}
	in := r1.reply.Instances[0]
	rec, err := record.Verify(in.Record, "acme/conc", time.Now())
	if err != nil || rec.Seq != in.Seq || rec.Peer.String() != in.Peer || in.Seq != first {
		t.Fatalf("first find: instance seq %d, record %+v (%v); want seq %d", in.Seq, rec, err, first)
	}
	if v := VerifyReply(r1.reply, "acme/conc", FindOptions{}, time.Now()); len(v.Instances) != 1 || len(v.Dropped) != 0 {
		t.Fatalf("the first reply does not verify: %+v", v)
	}
}
