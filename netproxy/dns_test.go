package netproxy

import (
	"context"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	pb "github.com/skiff-sh/skiff/proto"
)

// filledCache returns a cache holding objs, as if listed.
func filledCache(objs ...pb.Resource) *Cache {
	c := newCache(nil, nil)
	var svcs, eps []*pb.Object
	for _, r := range objs {
		o := pb.Wrap(r)
		if o.GetService() != nil {
			svcs = append(svcs, o)
		} else {
			eps = append(eps, o)
		}
	}
	c.replace(kindService, svcs)
	c.replace(kindEndpoints, eps)
	return c
}

// startDNS serves d on 127.0.0.1 and returns the address.
func startDNS(t *testing.T, d *DNS) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		// The UDP port of that number is taken: take any pair.
		ln.Close()
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := d.serve(ctx, pc, ln); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return ln.Addr().String()
}

func query(t *testing.T, addr, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	resp, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("query %s %s over %s: %v", name, dns.TypeToString[qtype], network, err)
	}
	return resp
}

// answers renders the answer section as "TYPE value" lines, sorted.
func answers(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch v := rr.(type) {
		case *dns.A:
			out = append(out, "A "+v.A.String())
		case *dns.SRV:
			out = append(out, "SRV "+v.Target+" "+strconv.Itoa(int(v.Port)))
		default:
			out = append(out, rr.String())
		}
	}
	slices.Sort(out)
	return out
}

func TestDNS(t *testing.T) {
	headlessEp := testEndpoints("default", "db",
		testSubset(ips("10.244.1.7", "10.244.2.7"), ips("10.244.3.7"), "pg:5432"))
	headlessEp.Subsets[0].Addresses[0].Hostname = "db-0"
	cache := filledCache(
		testService("default", "web", "10.96.0.10", "ClusterIP", "http:80->8080"),
		testEndpoints("default", "web", testSubset(ips("10.244.1.5"), nil, "http:8080")),
		testService("default", "db", "None", "ClusterIP", "pg:5432->5432"),
		headlessEp,
		testService("other", "web", "10.96.0.11", "NodePort", "80->8080:30080"),
	)
	cfg := DefaultDNSConfig()
	addr := startDNS(t, newDNS(cfg, cache, false))

	tests := []struct {
		name  string
		qtype uint16
		rcode int
		want  []string
	}{
		{"web.default.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.96.0.10"}},
		{"WEB.Default.svc.Cluster.Local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.96.0.10"}},
		{"web.other.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.96.0.11"}},
		{"web.default.svc.cluster.local.", dns.TypeAAAA, dns.RcodeSuccess, nil}, // exists, no IPv6
		{"db.default.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.244.1.7", "A 10.244.2.7"}},
		{"db-0.db.default.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.244.1.7"}},
		{"10-244-2-7.db.default.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.244.2.7"}},
		{"10-244-3-7.db.default.svc.cluster.local.", dns.TypeA, dns.RcodeNameError, nil}, // not ready
		{"_http._tcp.web.default.svc.cluster.local.", dns.TypeSRV, dns.RcodeSuccess,
			[]string{"SRV web.default.svc.cluster.local. 80"}},
		{"_pg._tcp.db.default.svc.cluster.local.", dns.TypeSRV, dns.RcodeSuccess,
			[]string{"SRV 10-244-2-7.db.default.svc.cluster.local. 5432", "SRV db-0.db.default.svc.cluster.local. 5432"}},
		{"_http._udp.web.default.svc.cluster.local.", dns.TypeSRV, dns.RcodeNameError, nil},
		{"nope.default.svc.cluster.local.", dns.TypeA, dns.RcodeNameError, nil},
		{"web.nope.svc.cluster.local.", dns.TypeA, dns.RcodeNameError, nil},
		{"web.default.cluster.local.", dns.TypeA, dns.RcodeNameError, nil},
		{"web.default.svc.cluster.local.default.svc.cluster.local.", dns.TypeA, dns.RcodeNameError, nil},
		{"default.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, nil},
		{"example.com.", dns.TypeA, dns.RcodeRefused, nil}, // no upstreams
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tc := range tests {
			t.Run(network+"/"+tc.name+"/"+dns.TypeToString[tc.qtype], func(t *testing.T) {
				resp := query(t, addr, network, tc.name, tc.qtype)
				if resp.Rcode != tc.rcode {
					t.Fatalf("rcode %s, want %s", dns.RcodeToString[resp.Rcode], dns.RcodeToString[tc.rcode])
				}
				if got := answers(resp); !slices.Equal(got, tc.want) {
					t.Errorf("answers %q, want %q", got, tc.want)
				}
				if tc.rcode != dns.RcodeRefused && !resp.Authoritative {
					t.Error("answer about the cluster domain is not authoritative")
				}
				if len(resp.Answer) == 0 && tc.rcode != dns.RcodeRefused && len(resp.Ns) == 0 {
					t.Error("negative answer without an SOA (resolvers cannot cache it)")
				}
			})
		}
	}
}

func TestDNSFollowsTheCache(t *testing.T) {
	api := newFakeAPI()
	cache := newCache(api.connect, nil)
	cfg := DefaultDNSConfig()
	addr := startDNS(t, newDNS(cfg, cache, true)) // the server runs the cache
	api.put(testService("default", "web", "10.96.0.10", "ClusterIP", "80->8080"))
	eventually(t, 5*time.Second, "web resolves", func() bool {
		r := query(t, addr, "udp", "web.default.svc.cluster.local.", dns.TypeA)
		return r.Rcode == dns.RcodeSuccess && slices.Equal(answers(r), []string{"A 10.96.0.10"})
	})
	api.del(testService("default", "web", "", ""))
	eventually(t, 5*time.Second, "web is NXDOMAIN after deletion", func() bool {
		return query(t, addr, "udp", "web.default.svc.cluster.local.", dns.TypeA).Rcode == dns.RcodeNameError
	})
}

func TestDNSBeforeSyncIsServerFailure(t *testing.T) {
	d := newDNS(DefaultDNSConfig(), newCache(nil, nil), false)
	addr := startDNS(t, d)
	if r := query(t, addr, "udp", "web.default.svc.cluster.local.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %s before the cache is synced, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
}

func TestDNSForwardsOtherNames(t *testing.T) {
	// An upstream on loopback that answers every A query with 192.0.2.1.
	up := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
			A:   net.ParseIP("192.0.2.1"),
		})
		_ = w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: up, NotifyStartedFunc: func() { close(started) }}
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })

	cfg := DefaultDNSConfig()
	// The first upstream is dead (a closed port): the second answers.
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.LocalAddr().String()
	dead.Close()
	cfg.Upstreams = []string{deadAddr, pc.LocalAddr().String()}
	cfg.UpstreamTimeout = 500 * time.Millisecond
	addr := startDNS(t, newDNS(cfg, filledCache(), false))
	r := query(t, addr, "udp", "example.com.", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || !slices.Equal(answers(r), []string{"A 192.0.2.1"}) {
		t.Errorf("forwarded answer: %s %q", dns.RcodeToString[r.Rcode], answers(r))
	}
}

func TestDNSConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		field string
		edit  func(*DNSConfig)
	}{
		{"Domain", func(c *DNSConfig) { c.Domain = "" }},
		{"Upstreams[0]", func(c *DNSConfig) { c.Upstreams = []string{"8.8.8.8"} }},
		{"UpstreamTimeout", func(c *DNSConfig) { c.UpstreamTimeout = 0 }},
	} {
		cfg := DefaultDNSConfig()
		tc.edit(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("Validate with a bad %s: %v; want an error naming the field", tc.field, err)
		}
	}
	if _, err := NewDNS(DefaultDNSConfig(), nil); err == nil {
		t.Error("NewDNS without connect or Cache: no error")
	}
}
