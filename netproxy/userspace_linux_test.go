package netproxy

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// linkAddrs lists the IPv4 addresses of a link, or reports it missing.
func linkAddrs(t *testing.T, name string) ([]string, bool) {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, false
		}
		t.Fatal(err)
	}
	as, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range as {
		out = append(out, a.IP.String())
	}
	slices.Sort(out)
	return out, true
}

func TestUserspaceProxy(t *testing.T) {
	inNetNS(t, func(t *testing.T) {
		client := newPeer(t, "client", "10.77.1")
		b1 := newPeer(t, "b1", "10.77.2")
		b2 := newPeer(t, "b2", "10.77.3")
		b1.serveName(t, 8080)
		b2.serveName(t, 8080)

		cfg := DefaultConfig()
		cfg.Mode = ModeUserspace
		cfg.Link = "skiff-svc-test"
		cfg.NodeIPs = []string{client.gw}
		api := newFakeAPI()
		api.put(testService("default", "web", "10.96.0.10", "NodePort", "http:80->http:30080"))
		api.put(testEndpoints("default", "web", testSubset(ips(b1.ip, b2.ip), nil, "http:8080")))
		api.put(testService("default", "empty", "10.96.0.20", "ClusterIP", "80->80"))
		be := newUserspaceBackend(cfg)
		p := newProxy(cfg, newCache(api.connect, nil), true, be)
		stop := runProxy(t, p)
		waitApplied(t, p, 5*time.Second, "the first sync", func(rs RuleSet) bool { return len(rs.Ports) == 2 })

		if got, ok := linkAddrs(t, cfg.Link); !ok || !slices.Equal(got, []string{"10.96.0.10", "10.96.0.20"}) {
			t.Errorf("link %s (exists %v) holds %v, want both ClusterIPs", cfg.Link, ok, got)
		}
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
		t.Run("a service without endpoints refuses", func(t *testing.T) {
			if !client.refused("10.96.0.20:80") {
				t.Error("connection to a service without endpoints is not refused")
			}
		})
		t.Run("an endpoint that does not answer is skipped", func(t *testing.T) {
			// b1 lists a port nobody listens on: every dial to it fails and
			// the proxy tries b2.
			api.put(testEndpoints("default", "web",
				testSubset(ips(b2.ip), nil, "http:8080"), testSubset(ips(b1.ip), nil, "http:8081")))
			waitApplied(t, p, time.Second, "dead endpoint listed", func(rs RuleSet) bool {
				return len(rs.Ports) == 2 && slices.Contains(rs.Ports[1].Endpoints, netip.MustParseAddrPort(b1.ip+":8081"))
			})
			if got := client.spread(t, "10.96.0.10:80", 20); got["b2"] != 20 {
				t.Errorf("answers %v, want all from b2", got)
			}
		})
		t.Run("removed endpoint leaves the rotation within a second", func(t *testing.T) {
			api.put(testEndpoints("default", "web", testSubset(ips(b1.ip), ips(b2.ip), "http:8080")))
			took := waitApplied(t, p, time.Second, "b2 removed", func(rs RuleSet) bool {
				return len(rs.Ports) == 2 && slices.Equal(rs.Ports[1].Endpoints, eps(b1.ip+":8080"))
			})
			t.Logf("applied %s after the change", took)
			if got := client.spread(t, "10.96.0.10:80", 20); got["b1"] != 20 {
				t.Errorf("answers %v, want all from b1", got)
			}
		})
		t.Run("a deleted service loses its address and listener", func(t *testing.T) {
			api.del(testService("default", "empty", "", ""))
			waitApplied(t, p, time.Second, "empty deleted", func(rs RuleSet) bool { return len(rs.Ports) == 1 })
			if got, _ := linkAddrs(t, cfg.Link); !slices.Equal(got, []string{"10.96.0.10"}) {
				t.Errorf("link holds %v, want only 10.96.0.10", got)
			}
		})

		stop()
		if got := client.spread(t, "10.96.0.10:80", 3); got["b1"] != 3 {
			t.Errorf("after Run returned: answers %v, want b1 (rules stay)", got)
		}
		if err := p.Cleanup(); err != nil {
			t.Fatal(err)
		}
		if _, ok := linkAddrs(t, cfg.Link); ok {
			t.Errorf("Cleanup left link %s", cfg.Link)
		}
		if _, err := client.ask("10.96.0.10:80"); err == nil {
			t.Error("the ClusterIP still answers after Cleanup")
		}
		if _, err := net.DialTimeout("tcp4", client.gw+":30080", time.Second); err == nil {
			t.Error("the NodePort still answers after Cleanup")
		}
	})
}

// TestModesReplaceEachOther: switching modes leaves nothing of the other
// mode that would capture traffic.
func TestModesReplaceEachOther(t *testing.T) {
	inNetNS(t, func(t *testing.T) {
		cfg := DefaultConfig()
		rs := RuleSet{Ports: []ServicePort{{Namespace: "d", Name: "s", Protocol: "TCP",
			ClusterIP: netip4("10.96.0.10"), Port: 80, Endpoints: eps("10.77.2.2:8080")}}}
		us := newUserspaceBackend(cfg)
		if err := us.Sync(rs); err != nil {
			t.Fatal(err)
		}
		if _, ok := linkAddrs(t, cfg.Link); !ok {
			t.Fatal("userspace mode made no link")
		}
		// The userspace proxy's process ends: its sockets close, its link
		// stays.
		us.mu.Lock()
		for _, l := range us.listeners {
			l.ln.Close()
		}
		us.mu.Unlock()
		us.wg.Wait()

		nft := newNFTBackend(cfg)
		if err := nft.Sync(rs); err != nil {
			t.Fatal(err)
		}
		if _, ok := linkAddrs(t, cfg.Link); ok {
			t.Error("nftables mode kept the userspace link")
		}
		us2 := newUserspaceBackend(cfg)
		if err := us2.Sync(rs); err != nil {
			t.Fatal(err)
		}
		if hasTable(t, cfg.Table) {
			t.Error("userspace mode kept the nftables table")
		}
		for _, b := range []backend{us, nft, us2} {
			if err := b.Cleanup(); err != nil {
				t.Error(err)
			}
		}
	})
}
