package celldns_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/cellnode/cellnode/node/celldns"
)

// static is a Source with one cell.
type static struct{}

func (static) Lookup(_ context.Context, name string) (celldns.Answer, error) {
	if name != "acme/exchange" {
		return celldns.Answer{}, nil
	}
	return celldns.Answer{Live: 1, Targets: []celldns.Target{{Host: "127.0.0.1", Port: 9000, Expires: time.Now().Add(time.Minute)}}}, nil
}

// A Go program finds a cell with the standard library's resolver, pointed
// at the agent's DNS address (the agent serves celldns with its watched
// sets as the Source).
func Example() {
	s, err := celldns.New(celldns.Config{Addr: "127.0.0.1:0"}, static{})
	if err != nil {
		panic(err)
	}
	defer s.Close()

	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, s.Addr()) // the agent, e.g. 127.0.0.1:8653
	}}
	ctx := context.Background()
	_, srvs, err := r.LookupSRV(ctx, "exchange", "tcp", "acme.cell")
	if err != nil {
		panic(err)
	}
	for _, srv := range srvs {
		addrs, _ := r.LookupHost(ctx, srv.Target)
		fmt.Println(srv.Target, net.JoinHostPort(addrs[0], fmt.Sprint(srv.Port)))
	}
	_, err = r.LookupHost(ctx, "ledger.acme.cell")
	fmt.Println(err.(*net.DNSError).IsNotFound)
	// Output:
	// 7f000001.addr.cell. 127.0.0.1:9000
	// true
}
