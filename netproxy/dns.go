package netproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/skiff-sh/skiff/client"
	pb "github.com/skiff-sh/skiff/proto"
)

// DNS answers for Services in the cluster domain, as CoreDNS's kubernetes
// plugin does, and forwards other names to upstream servers:
//
//	NAME.NS.svc.DOMAIN                 A: the ClusterIP, or the ready
//	                                   endpoint IPs of a headless Service
//	_PORT._PROTO.NAME.NS.svc.DOMAIN    SRV: the named port
//	HOST.NAME.NS.svc.DOMAIN            A: one endpoint of a headless
//	                                   Service, by hostname or dashed IP
//
// Unknown names in the domain are NXDOMAIN. Short names are the resolver's
// job (the pod's resolv.conf search path).
type DNS struct {
	cfg      DNSConfig
	domain   string // lower case, fully qualified
	log      *slog.Logger
	cache    *Cache
	ownCache bool
	started  atomic.Bool
}

// NewDNS returns a DNS server. connect returns the current API client; it
// may be nil when cfg.Cache is set.
func NewDNS(cfg DNSConfig, connect func(ctx context.Context) (*client.Client, error)) (*DNS, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Cache == nil && connect == nil {
		return nil, errors.New("netproxy: NewDNS needs a connect func or DNSConfig.Cache")
	}
	cache, own := cfg.Cache, false
	if cache == nil {
		cache, own = NewCache(connect, cfg.Logger), true
	}
	return newDNS(cfg, cache, own), nil
}

func newDNS(cfg DNSConfig, cache *Cache, own bool) *DNS {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &DNS{
		cfg: cfg, domain: dns.CanonicalName(cfg.Domain), log: log.With("component", "dns"),
		cache: cache, ownCache: own,
	}
}

// Run serves UDP and TCP on addr (e.g. the pod gateway's IP:53) until ctx
// ends.
func (d *DNS) Run(ctx context.Context, addr string) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("dns: listen on udp %s: %w", addr, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		return fmt.Errorf("dns: listen on tcp %s: %w", addr, err)
	}
	return d.serve(ctx, pc, ln)
}

// serve answers on pc and ln until ctx ends, and closes them.
func (d *DNS) serve(ctx context.Context, pc net.PacketConn, ln net.Listener) error {
	if !d.started.CompareAndSwap(false, true) {
		pc.Close()
		ln.Close()
		return errors.New("netproxy: DNS.Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	if d.ownCache {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = d.cache.Run(ctx)
		}()
	}
	servers := []*dns.Server{
		{PacketConn: pc, Handler: d},
		{Listener: ln, Handler: d},
	}
	errc := make(chan error, len(servers))
	for _, s := range servers {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.ActivateAndServe(); err != nil {
				errc <- err
			}
		}()
		// Shutdown refuses a server that has not started yet.
		select {
		case <-started:
		case err := <-errc:
			cancel()
			pc.Close()
			ln.Close()
			return fmt.Errorf("dns: serve: %w", err)
		}
	}
	d.log.Info("dns serving", "udp", pc.LocalAddr(), "tcp", ln.Addr(), "domain", d.domain)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("dns: serve: %w", err)
	}
	cancel()
	for _, s := range servers {
		_ = s.Shutdown()
	}
	return err
}

// ServeDNS answers one query.
func (d *DNS) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	if len(r.Question) != 1 || r.Opcode != dns.OpcodeQuery {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeFormatError)
		_ = w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	if !dns.IsSubDomain(d.domain, dns.CanonicalName(q.Name)) {
		d.forward(w, r)
		return
	}
	m := d.answer(r)
	size := dns.MinMsgSize
	if _, tcp := w.LocalAddr().(*net.TCPAddr); tcp {
		size = dns.MaxMsgSize
	} else if opt := r.IsEdns0(); opt != nil {
		size = max(int(opt.UDPSize()), dns.MinMsgSize)
	}
	m.Truncate(size)
	_ = w.WriteMsg(m)
}

// answer builds the reply to a question inside the cluster domain.
func (d *DNS) answer(r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	m.RecursionAvailable = len(d.cfg.Upstreams) > 0
	q := r.Question[0]
	if !d.cache.Synced() {
		// Not NXDOMAIN: that would be cached as "no such service".
		m.Rcode = dns.RcodeServerFailure
		return m
	}
	name := dns.CanonicalName(q.Name)
	rel := strings.TrimSuffix(strings.TrimSuffix(name, d.domain), ".")
	var labels []string
	if rel != "" {
		labels = strings.Split(rel, ".")
	}
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: d.cfg.TTL}
	}
	exists := false
	n := len(labels)
	switch {
	case n <= 1 && (n == 0 || labels[0] == "svc"):
		exists = true // the domain itself and svc.DOMAIN
		if n == 0 && q.Qtype == dns.TypeSOA {
			m.Answer = append(m.Answer, d.soa())
		}
	case n == 2 && labels[1] == "svc":
		exists = true // a namespace
	case n == 3 && labels[2] == "svc":
		svc := d.cache.Service(labels[1], labels[0])
		if svc == nil {
			break
		}
		exists = true
		if q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY {
			for _, ip := range d.serviceIPs(svc) {
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: ip.AsSlice()})
			}
		}
	case n == 4 && labels[3] == "svc":
		// One endpoint of a headless Service.
		svc := d.cache.Service(labels[2], labels[1])
		if svc == nil || !headless(svc) {
			break
		}
		for _, a := range readyAddresses(d.cache.Endpoints(labels[2], labels[1])) {
			if endpointLabel(a) != labels[0] {
				continue
			}
			exists = true
			if ip, err := netip.ParseAddr(a.GetIp()); err == nil && ip.Is4() && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY) {
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: ip.AsSlice()})
			}
			break
		}
	case n == 5 && labels[4] == "svc" && strings.HasPrefix(labels[0], "_") && strings.HasPrefix(labels[1], "_"):
		exists = d.srv(m, q, labels)
	}
	if !exists {
		m.Rcode = dns.RcodeNameError
	}
	if len(m.Answer) == 0 {
		m.Ns = append(m.Ns, d.soa())
	}
	return m
}

// srv answers _PORT._PROTO.NAME.NS.svc.DOMAIN and reports whether the name
// exists.
func (d *DNS) srv(m *dns.Msg, q dns.Question, labels []string) bool {
	portName, proto := labels[0][1:], labels[1][1:]
	ns, name := labels[3], labels[2]
	svc := d.cache.Service(ns, name)
	if svc == nil {
		return false
	}
	var sp *pb.ServicePort
	for _, p := range svc.GetSpec().GetPorts() {
		if p.GetName() == portName && strings.EqualFold(protocol(p.GetProtocol()), proto) {
			sp = p
			break
		}
	}
	if sp == nil {
		return false
	}
	if q.Qtype != dns.TypeSRV && q.Qtype != dns.TypeANY {
		return true
	}
	svcName := name + "." + ns + ".svc." + d.domain
	srvRR := func(target string, port uint16) *dns.SRV {
		return &dns.SRV{
			Hdr:      dns.RR_Header{Name: q.Name, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: d.cfg.TTL},
			Priority: 0, Weight: 100, Port: port, Target: target,
		}
	}
	aRR := func(owner string, ip netip.Addr) *dns.A {
		return &dns.A{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: d.cfg.TTL}, A: ip.AsSlice()}
	}
	if !headless(svc) {
		m.Answer = append(m.Answer, srvRR(svcName, uint16(sp.GetPort())))
		for _, ip := range d.serviceIPs(svc) {
			m.Extra = append(m.Extra, aRR(svcName, ip))
		}
		return true
	}
	// Headless: one record per ready endpoint, on the endpoint's port.
	for _, ss := range d.cache.Endpoints(ns, name).GetSubsets() {
		var port int32
		for _, p := range ss.GetPorts() {
			if p.GetName() == portName && strings.EqualFold(protocol(p.GetProtocol()), proto) {
				port = p.GetPort()
			}
		}
		if port <= 0 || port > 65535 {
			continue
		}
		for _, a := range ss.GetAddresses() {
			ip, err := netip.ParseAddr(a.GetIp())
			if err != nil || !ip.Is4() {
				continue
			}
			target := endpointLabel(a) + "." + svcName
			m.Answer = append(m.Answer, srvRR(target, uint16(port)))
			m.Extra = append(m.Extra, aRR(target, ip))
		}
	}
	return true
}

func headless(svc *pb.Service) bool {
	return strings.EqualFold(svc.GetSpec().GetClusterIp(), "None")
}

// serviceIPs is the ClusterIP, or the ready endpoint IPs of a headless
// Service, sorted.
func (d *DNS) serviceIPs(svc *pb.Service) []netip.Addr {
	if !headless(svc) {
		ip, err := netip.ParseAddr(svc.GetSpec().GetClusterIp())
		if err != nil || !ip.Is4() {
			return nil
		}
		return []netip.Addr{ip}
	}
	var out []netip.Addr
	for _, a := range readyAddresses(d.cache.Endpoints(svc.GetMetadata().GetNamespace(), svc.GetMetadata().GetName())) {
		if ip, err := netip.ParseAddr(a.GetIp()); err == nil && ip.Is4() {
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(out)
}

func readyAddresses(ep *pb.Endpoints) []*pb.EndpointAddress {
	var out []*pb.EndpointAddress
	for _, ss := range ep.GetSubsets() {
		out = append(out, ss.GetAddresses()...)
	}
	return out
}

// endpointLabel names an endpoint inside its Service's domain: its
// hostname, or its IP with dashes (10-244-1-5) as Kubernetes does.
func endpointLabel(a *pb.EndpointAddress) string {
	if h := a.GetHostname(); h != "" {
		return strings.ToLower(h)
	}
	return strings.ReplaceAll(a.GetIp(), ".", "-")
}

func (d *DNS) soa() dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: d.domain, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: d.cfg.TTL},
		Ns:      "ns.dns." + d.domain,
		Mbox:    "hostmaster." + d.domain,
		Serial:  uint32(time.Now().Unix()),
		Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: d.cfg.TTL,
	}
}

// forward asks the upstreams in turn, over the protocol the query came in.
func (d *DNS) forward(w dns.ResponseWriter, r *dns.Msg) {
	if len(d.cfg.Upstreams) == 0 {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeRefused)
		_ = w.WriteMsg(m)
		return
	}
	network := "udp"
	if _, tcp := w.LocalAddr().(*net.TCPAddr); tcp {
		network = "tcp"
	}
	c := &dns.Client{Net: network, Timeout: d.cfg.UpstreamTimeout}
	var lastErr error
	for _, up := range d.cfg.Upstreams {
		resp, _, err := c.Exchange(r, up)
		if err != nil {
			lastErr = err
			continue
		}
		resp.Id = r.Id
		_ = w.WriteMsg(resp)
		return
	}
	d.log.Warn("no upstream answered", "name", r.Question[0].Name, "err", lastErr)
	m := new(dns.Msg)
	m.SetRcode(r, dns.RcodeServerFailure)
	_ = w.WriteMsg(m)
}
