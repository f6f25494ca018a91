package node

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// The local API answers a find from the last result for the same name and
// options while it is younger than findMaxAge, and refreshes that result
// in the background once it is older than findFresh (stale while
// revalidate, as Consul's agent cache does): a service that polls its
// dependencies gets them at the cost of a local read, and sees a change
// one refresh after it reached the network. The age of what it got is in
// the response's Age (seconds) and X-Cellnode-Age-Ms headers. A request
// with "Cache-Control: no-cache" (or max-age=0) runs a find of its own and
// waits for it, and its result becomes the cached one.
const (
	findFresh  = 100 * time.Millisecond
	findMaxAge = 2 * time.Second
)

// findCache holds the API's recent find results, encoded. Its methods are
// safe for concurrent use.
type findCache struct {
	mu   sync.Mutex
	m    map[string]*cachedFind
	wg   sync.WaitGroup // background refreshes
	done chan struct{}  // closed by close: refreshes stop
	shut bool
}

type cachedFind struct {
	body       []byte
	at         time.Time
	refreshing bool
}

func newFindCache() *findCache {
	return &findCache{m: map[string]*cachedFind{}, done: make(chan struct{})}
}

// findKey names a find by its name and options.
func findKey(name string, opts FindOptions) string {
	keys := make([]string, 0, len(opts.Publishers))
	for _, p := range opts.Publishers {
		keys = append(keys, hex.EncodeToString(p))
	}
	slices.Sort(keys)
	all := "0"
	if opts.All {
		all = "1"
	}
	return name + "|" + all + "|" + strings.Join(keys, ",")
}

// get returns the cached body for key and its age, or nil; when the body is
// older than findFresh and no refresh runs, it starts refresh (which must
// return the new body, or nil to keep the old one) in the background.
func (c *findCache) get(key string, refresh func(ctx context.Context) []byte) ([]byte, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok {
		return nil, 0
	}
	age := time.Since(e.at)
	if age >= findMaxAge {
		delete(c.m, key)
		return nil, 0
	}
	if age >= findFresh && !e.refreshing && !c.shut {
		e.refreshing = true
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			go func() {
				select {
				case <-c.done:
					cancel()
				case <-ctx.Done():
				}
			}()
			body := refresh(ctx)
			c.mu.Lock()
			defer c.mu.Unlock()
			e.refreshing = false
			if body != nil {
				c.m[key] = &cachedFind{body: body, at: time.Now()}
			}
		}()
	}
	return e.body, age
}

// put stores body for key, dropping entries past findMaxAge.
func (c *findCache) put(key string, body []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.m {
		if time.Since(e.at) >= findMaxAge && !e.refreshing {
			delete(c.m, k)
		}
	}
	c.m[key] = &cachedFind{body: body, at: time.Now()}
}

// close stops the refreshes and waits for them.
func (c *findCache) close() {
	c.mu.Lock()
	if !c.shut {
		c.shut = true
		close(c.done)
	}
	c.mu.Unlock()
	c.wg.Wait()
}

// encodeFind is the API's JSON of a find result.
func encodeFind(res *FindReply) []byte {
	b, _ := json.Marshal(res)
	return append(b, '\n')
}

// noCache reports whether r asks for a fresh find, not the cached result:
// Cache-Control no-cache or max-age=0 (RFC 9111).
func noCache(r *http.Request) bool {
	for _, v := range r.Header.Values("Cache-Control") {
		for _, d := range strings.Split(v, ",") {
			switch strings.ToLower(strings.TrimSpace(d)) {
			case "no-cache", "max-age=0":
				return true
			}
		}
	}
	return false
}
