package footprint

import (
	"os"
	"testing"
)

func TestFootprint(t *testing.T) {
	fds := FDs()
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	if got := FDs(); fds >= 0 && got != fds+1 {
		t.Fatalf("FDs = %d after opening one, was %d", got, fds)
	}
	f.Close()
	p := Start(0)
	buf := make([]byte, 64*MB)
	for i := range buf {
		buf[i] = 1
	}
	heap, _ := p.Stop()
	if heap < 64*MB {
		t.Fatalf("peak heap %d MB while holding 64 MB", heap/MB)
	}
	_ = buf[len(buf)-1]
	if h := Heap(); h == 0 {
		t.Fatal("no heap")
	}
}
