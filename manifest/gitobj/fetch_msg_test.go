package gitobj

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cellnode/cellnode/manifest"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
)

// With no provider to try, the error says so in words (it used to print
// "%!w(<nil>)").
func TestNoProviderMessage(t *testing.T) {
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	h, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewFetcher(h, nil, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := manifest.ParseCID("baf4bcffruvlwhepbyr6kkhkinuwcw6bdtztjihq")
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = f.Manifest(context.Background(), c, nil)
	if !errors.Is(err, ErrNoProvider) || strings.Contains(err.Error(), "%!") || !strings.Contains(err.Error(), "no provider found") {
		t.Fatalf("err = %v", err)
	}
}
