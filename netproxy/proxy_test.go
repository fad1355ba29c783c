package netproxy

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// startProxy runs a proxy with a fake API and backend until the test ends.
func startProxy(t *testing.T, api *fakeAPI, be *fakeBackend, minSync time.Duration) *Proxy {
	t.Helper()
	cfg := DefaultConfig()
	cfg.MinSyncInterval = minSync
	p := newProxy(cfg, newCache(api.connect, nil), true, be)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := p.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return p
}

func lastHas(s string) func([]RuleSet) bool {
	return func(syncs []RuleSet) bool {
		return len(syncs) > 0 && strings.Contains(syncs[len(syncs)-1].String(), s)
	}
}

func TestProxyWaitsForBothListsBeforeTheFirstSync(t *testing.T) {
	api := newFakeAPI()
	api.put(testService("default", "web", "10.96.0.10", "ClusterIP", "80->8080"))
	api.put(testEndpoints("default", "web", testSubset(ips("10.244.1.2"), nil, "8080")))
	api.listFails[kindEndpoints] = 3 // Services are known long before Endpoints
	be := newFakeBackend()
	startProxy(t, api, be, 10*time.Millisecond)

	be.waitFor(t, 5*time.Second, "a first sync", func(s []RuleSet) bool { return len(s) > 0 })
	be.mu.Lock()
	first := be.syncs[0].String()
	be.mu.Unlock()
	if want := "default/web/tcp/ 10.96.0.10:80 -> 10.244.1.2:8080\n"; first != want {
		t.Errorf("first sync programmed\n%s\nwant (never a partial view)\n%s", first, want)
	}
}

func TestProxyAppliesChangesWithinASecond(t *testing.T) {
	api := newFakeAPI()
	api.put(testService("default", "web", "10.96.0.10", "ClusterIP", "80->8080"))
	api.put(testEndpoints("default", "web", testSubset(ips("10.244.1.2", "10.244.1.3"), nil, "8080")))
	be := newFakeBackend()
	startProxy(t, api, be, DefaultConfig().MinSyncInterval)
	be.waitFor(t, 5*time.Second, "both endpoints", lastHas("10.244.1.2:8080 10.244.1.3:8080"))

	// Scale down: the removed endpoint leaves the rules within a second.
	start := time.Now()
	api.put(testEndpoints("default", "web", testSubset(ips("10.244.1.3"), ips("10.244.1.2"), "8080")))
	be.waitFor(t, time.Second, "endpoint removed", lastHas("-> 10.244.1.3:8080\n"))
	t.Logf("endpoint change applied in %s", time.Since(start))

	// A new service and a deletion.
	api.put(testService("default", "db", "10.96.0.20", "ClusterIP", "5432->5432"))
	be.waitFor(t, time.Second, "new service", lastHas("default/db/tcp/ 10.96.0.20:5432 -> reject"))
	api.del(testService("default", "web", "10.96.0.10", "ClusterIP"))
	be.waitFor(t, time.Second, "web deleted", func(s []RuleSet) bool {
		return len(s) > 0 && !strings.Contains(s[len(s)-1].String(), "default/web")
	})
}

func TestProxyRelistsWhenTheWatchExpires(t *testing.T) {
	api := newFakeAPI()
	api.put(testService("default", "web", "10.96.0.10", "ClusterIP", "80->8080"))
	be := newFakeBackend()
	startProxy(t, api, be, 10*time.Millisecond)
	be.waitFor(t, 5*time.Second, "web", lastHas("default/web"))
	lists := api.listCount(kindService)

	// History is lost, and the change made meanwhile is only seen by a
	// new list.
	api.mu.Lock()
	delete(api.objs[kindService], "default/web") // no event
	api.mu.Unlock()
	api.expire()
	be.waitFor(t, 5*time.Second, "web gone after the relist", func(s []RuleSet) bool {
		return len(s) > 0 && !strings.Contains(s[len(s)-1].String(), "default/web")
	})
	if got := api.listCount(kindService); got <= lists {
		t.Errorf("Service lists: %d after expiry, %d before; want a relist", got, lists)
	}
}

func TestProxyRetriesAFailedSync(t *testing.T) {
	api := newFakeAPI()
	api.put(testService("default", "web", "10.96.0.10", "ClusterIP", "80->8080"))
	be := newFakeBackend()
	be.fail = 2
	startProxy(t, api, be, 10*time.Millisecond)
	be.waitFor(t, 5*time.Second, "a sync after two failures", lastHas("default/web"))
}

func TestProxyBoundsTheSyncRate(t *testing.T) {
	api := newFakeAPI()
	api.put(testService("default", "web", "10.96.0.10", "ClusterIP", "80->8080"))
	be := newFakeBackend()
	const minSync = 50 * time.Millisecond
	startProxy(t, api, be, minSync)
	be.waitFor(t, 5*time.Second, "first sync", func(s []RuleSet) bool { return len(s) > 0 })

	for i := range 200 {
		api.put(testEndpoints("default", "web", testSubset(ips("10.244.1.2"), nil, "8080")))
		if i == 199 {
			api.put(testEndpoints("default", "web", testSubset(ips("10.244.9.9"), nil, "8080")))
		}
	}
	be.waitFor(t, 2*time.Second, "the last change", lastHas("10.244.9.9:8080"))
	be.mu.Lock()
	defer be.mu.Unlock()
	for i := 1; i < len(be.times); i++ {
		// A little slack for timer granularity.
		if gap := be.times[i].Sub(be.times[i-1]); gap < minSync-5*time.Millisecond {
			t.Errorf("syncs %d and %d only %s apart; MinSyncInterval is %s", i-1, i, gap, minSync)
		}
	}
	if len(be.syncs) > 20 {
		t.Errorf("%d syncs for 201 quick changes; want them coalesced", len(be.syncs))
	}
}

func TestProxyCleanupAndValidation(t *testing.T) {
	be := newFakeBackend()
	p := newProxy(DefaultConfig(), newCache(newFakeAPI().connect, nil), true, be)
	if err := p.Cleanup(); err != nil || !be.cleaned {
		t.Errorf("Cleanup: err %v, backend cleaned %v", err, be.cleaned)
	}

	for _, tc := range []struct {
		field string
		edit  func(*Config)
	}{
		{"Mode", func(c *Config) { c.Mode = "ipvs" }},
		{"NodeIPs[1]", func(c *Config) { c.NodeIPs = []string{"10.0.0.1", "nope"} }},
		{"ClusterCIDR", func(c *Config) { c.ClusterCIDR = "10.244.0.0" }},
		{"MinSyncInterval", func(c *Config) { c.MinSyncInterval = 2 * time.Second }},
		{"Table", func(c *Config) { c.Table = "" }},
		{"Link", func(c *Config) { c.Link = "a-very-long-link-name" }},
	} {
		cfg := DefaultConfig()
		tc.edit(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("Validate with a bad %s: %v; want an error naming the field", tc.field, err)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate(): %v", err)
	}
	if _, err := New(DefaultConfig(), nil); err == nil {
		t.Error("New without connect or Cache: no error")
	}
}

// TestSharedCache: the proxy and the DNS server can read one cache that the
// caller runs once.
func TestSharedCache(t *testing.T) {
	api := newFakeAPI()
	api.put(testService("default", "web", "10.96.0.10", "ClusterIP", "80->8080"))
	cache := newCache(api.connect, nil)
	cfg := DefaultConfig()
	cfg.Cache = cache
	p, err := New(cfg, nil)
	if errors.Is(err, ErrUnsupported) {
		p = newProxy(cfg, cache, false, newFakeBackend()) // not Linux
	} else if err != nil {
		t.Fatal(err)
	}
	dcfg := DefaultDNSConfig()
	dcfg.Cache = cache
	d, err := NewDNS(dcfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.ownCache || p.cache != cache || d.ownCache || d.cache != cache {
		t.Fatal("a proxy or DNS server given a cache runs its own")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cache.Run(ctx) }()
	eventually(t, 5*time.Second, "cache synced", cache.Synced)
	if err := cache.Run(ctx); err == nil {
		t.Error("a second Cache.Run did not fail")
	}
	if d.cache.Service("default", "web") == nil {
		t.Error("the DNS server's cache lacks the service")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Cache.Run: %v", err)
	}
}
