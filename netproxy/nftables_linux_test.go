package netproxy

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
)

// waitApplied waits until the proxy has programmed a rule set for which
// cond holds, and returns how long that took.
func waitApplied(t *testing.T, p *Proxy, within time.Duration, what string, cond func(RuleSet) bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		ok := p.applied != nil && cond(*p.applied)
		ch := p.synced
		p.mu.Unlock()
		if ok {
			return time.Since(start)
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("within %s: %s", within, what)
		}
	}
}

func runProxy(t *testing.T, p *Proxy) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := p.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

func listChains(t *testing.T, table string) map[string]*nftables.Chain {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*nftables.Chain{}
	for _, ch := range chains {
		if ch.Table.Name == table {
			out[ch.Name] = ch
		}
	}
	return out
}

func rulesOf(t *testing.T, table, chain string) []*nftables.Rule {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	rules, err := c.GetRules(&nftables.Table{Name: table, Family: nftables.TableFamilyIPv4}, &nftables.Chain{Name: chain})
	if err != nil {
		t.Fatalf("rules of %s: %v", chain, err)
	}
	return rules
}

func hasTable(t *testing.T, name string) bool {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == name })
}

func findExpr[T expr.Any](r *nftables.Rule) (T, bool) {
	for _, e := range r.Exprs {
		if v, ok := e.(T); ok {
			return v, true
		}
	}
	var zero T
	return zero, false
}

func TestNFTablesProxy(t *testing.T) {
	inNetNS(t, func(t *testing.T) {
		client := newPeer(t, "client", "10.77.1")
		b1 := newPeer(t, "b1", "10.77.2")
		b2 := newPeer(t, "b2", "10.77.3")
		b1.serveName(t, 8080)
		b2.serveName(t, 8080)
		// Nodes have a default route; without one, traffic to a ClusterIP
		// without endpoints dies in routing before the reject rule.
		defaultRoute(t, client.ip)

		cfg := DefaultConfig()
		cfg.Table = "skiff-proxy-test"
		cfg.NodeIPs = []string{client.gw}
		cfg.ClusterCIDR = "10.77.0.0/16"

		// A table an earlier run left behind, with a chain this run does not
		// make: the first sync must replace it.
		c, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		stale := c.AddTable(&nftables.Table{Name: cfg.Table, Family: nftables.TableFamilyIPv4})
		c.AddChain(&nftables.Chain{Name: "stale", Table: stale})
		if err := c.Flush(); err != nil {
			t.Fatalf("make a stale table: %v", err)
		}

		api := newFakeAPI()
		api.put(testService("default", "web", "10.96.0.10", "NodePort", "http:80->http:30080"))
		api.put(testEndpoints("default", "web", testSubset(ips(b1.ip, b2.ip), nil, "http:8080")))
		api.put(testService("default", "empty", "10.96.0.20", "ClusterIP", "80->80"))
		p := newProxy(cfg, newCache(api.connect, nil), true, newNFTBackend(cfg))
		stop := runProxy(t, p)
		waitApplied(t, p, 5*time.Second, "the first sync", func(rs RuleSet) bool { return len(rs.Ports) == 2 })

		t.Run("rules", func(t *testing.T) {
			chains := listChains(t, cfg.Table)
			svc := "svc-default/web/tcp/http"
			want := []string{chainNATPrerouting, chainNATOutput, chainNATPostrouting, chainFilterInput,
				chainFilterForward, chainFilterOutput, chainServices, chainNoEndpoints, svc,
				"ep-default/web/tcp/http-" + b1.ip + ":8080", "ep-default/web/tcp/http-" + b2.ip + ":8080"}
			for _, name := range want {
				if chains[name] == nil {
					t.Errorf("chain %q missing; have %v", name, keys(chains))
				}
			}
			if len(chains) != len(want) {
				t.Errorf("chains %v, want exactly %v (the stale chain replaced)", keys(chains), want)
			}
			if pre := chains[chainNATPrerouting]; pre != nil {
				if pre.Type != nftables.ChainTypeNAT || *pre.Hooknum != *nftables.ChainHookPrerouting || *pre.Priority != *nftables.ChainPriorityNATDest {
					t.Errorf("nat-prerouting: type %s hook %d priority %d", pre.Type, *pre.Hooknum, *pre.Priority)
				}
			}
			if n := len(rulesOf(t, cfg.Table, chainServices)); n != 2 {
				t.Errorf("services chain: %d rules, want 2 (ClusterIP and one NodeIP)", n)
			}
			svcRules := rulesOf(t, cfg.Table, svc)
			if len(svcRules) != 2 {
				t.Fatalf("%s: %d rules, want 2 (masquerade off-cluster, pick an endpoint)", svc, len(svcRules))
			}
			ng, ok := findExpr[*expr.Numgen](svcRules[1])
			if !ok || ng.Modulus != 2 {
				t.Errorf("endpoint pick: numgen %+v (found %v), want random mod 2", ng, ok)
			}
			if lk, ok := findExpr[*expr.Lookup](svcRules[1]); !ok || lk.SetName != "eps-default/web/tcp/http" {
				t.Errorf("endpoint pick: lookup %+v (found %v), want the map eps-default/web/tcp/http", lk, ok)
			}
			c, err := nftables.New()
			if err != nil {
				t.Fatal(err)
			}
			set, err := c.GetSetByName(&nftables.Table{Name: cfg.Table, Family: nftables.TableFamilyIPv4}, "eps-default/web/tcp/http")
			if err != nil {
				t.Fatal(err)
			}
			elems, err := c.GetSetElements(set)
			if err != nil {
				t.Fatal(err)
			}
			// The library does not decode verdicts when listing: look for
			// the target chain's name in the element's data.
			targets := map[uint32]string{}
			for _, e := range elems {
				for _, ip := range []string{b1.ip, b2.ip} {
					if bytes.Contains(e.Val, []byte("ep-default/web/tcp/http-"+ip+":8080\x00")) {
						targets[binaryutil.NativeEndian.Uint32(e.Key)] = ip
					}
				}
			}
			if len(elems) != 2 || len(targets) != 2 || targets[0] == targets[1] {
				t.Errorf("endpoint map: %d elements, targets by key %v; want keys 0 and 1 to the two endpoint chains", len(elems), targets)
			}
			ep := rulesOf(t, cfg.Table, "ep-default/web/tcp/http-"+b1.ip+":8080")
			if len(ep) != 2 {
				t.Fatalf("endpoint chain: %d rules, want 2 (hairpin mark, dnat)", len(ep))
			}
			if nat, ok := findExpr[*expr.NAT](ep[1]); !ok || nat.Type != expr.NATTypeDestNAT {
				t.Errorf("endpoint chain: no DNAT (%+v)", nat)
			}
			rej := rulesOf(t, cfg.Table, chainNoEndpoints)
			if len(rej) != 1 {
				t.Fatalf("no-endpoints: %d rules, want 1", len(rej))
			}
			if _, ok := findExpr[*expr.Reject](rej[0]); !ok {
				t.Error("no-endpoints rule does not reject")
			}
		})

		t.Run("traffic spreads over both endpoints", func(t *testing.T) {
			got := client.spread(t, "10.96.0.10:80", 40)
			if got["b1"] == 0 || got["b2"] == 0 {
				t.Errorf("answers %v, want both backends", got)
			}
		})
		t.Run("NodePort", func(t *testing.T) {
			got := client.spread(t, client.gw+":30080", 40)
			if got["b1"] == 0 || got["b2"] == 0 {
				t.Errorf("answers %v, want both backends", got)
			}
		})
		t.Run("a service without endpoints rejects", func(t *testing.T) {
			if !client.refused("10.96.0.20:80") {
				t.Error("connection to a service without endpoints is not refused")
			}
		})
		t.Run("hairpin", func(t *testing.T) {
			// b1 reaching its own Service lands on itself half of the time.
			got := b1.spread(t, "10.96.0.10:80", 20)
			if got["b1"] == 0 {
				t.Errorf("answers %v: b1 never reached itself", got)
			}
		})

		t.Run("removed endpoint leaves the rotation within a second", func(t *testing.T) {
			api.put(testEndpoints("default", "web", testSubset(ips(b2.ip), ips(b1.ip), "http:8080")))
			took := waitApplied(t, p, time.Second, "b1 removed", func(rs RuleSet) bool {
				return len(rs.Ports) == 2 && len(rs.Ports[1].Endpoints) == 1
			})
			t.Logf("applied %s after the change", took)
			if got := client.spread(t, "10.96.0.10:80", 30); got["b2"] != 30 {
				t.Errorf("answers %v, want all from b2", got)
			}
		})

		stop()
		if !hasTable(t, cfg.Table) {
			t.Fatal("Run removed the table on return; it must leave the rules in place")
		}
		if got := client.spread(t, "10.96.0.10:80", 3); got["b2"] != 3 {
			t.Errorf("after Run returned: answers %v, want b2", got)
		}
		if err := p.Cleanup(); err != nil {
			t.Fatal(err)
		}
		if hasTable(t, cfg.Table) {
			t.Error("Cleanup left the table")
		}
		if err := p.Cleanup(); err != nil {
			t.Errorf("second Cleanup: %v", err)
		}
	})
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestNFTablesLargeRuleSet programs a few thousand service ports in one
// batch, twice, to check the whole-table rebuild scales.
func TestNFTablesLargeRuleSet(t *testing.T) {
	inNetNS(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.NodeIPs = []string{"10.77.1.1"}
		be := newNFTBackend(cfg)
		var rs RuleSet
		for i := range 2000 {
			p := ServicePort{
				Namespace: "ns", Name: fmt.Sprintf("svc-%d", i), Protocol: "TCP",
				ClusterIP: netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}), Port: 80,
			}
			if i%10 == 0 {
				p.NodePort = uint16(30000 + i)
			}
			for j := range 3 {
				p.Endpoints = append(p.Endpoints, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 244, byte(i >> 8), byte(i + j)}), 8080))
			}
			rs.Ports = append(rs.Ports, p)
		}
		for range 2 {
			start := time.Now()
			if err := be.Sync(rs); err != nil {
				t.Fatalf("sync %d service ports: %v", len(rs.Ports), err)
			}
			t.Logf("synced %d service ports in %s", len(rs.Ports), time.Since(start))
		}
		if n := len(rulesOf(t, cfg.Table, chainServices)); n != 2000+200 {
			t.Errorf("services chain: %d rules, want 2200", n)
		}
		if err := be.Cleanup(); err != nil {
			t.Fatal(err)
		}
	})
}
