package netproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// dialTimeout bounds one attempt to reach an endpoint before the next one is
// tried.
const dialTimeout = 2 * time.Second

// userspaceBackend forwards connections in the proxy process, for hosts
// without nftables. Every ClusterIP is added as a /32 to a link of its own
// (as kube-proxy's IPVS mode does with kube-ipvs0), which makes the node
// accept traffic for it; a listener on each CLUSTERIP:PORT and
// NODEIP:NODEPORT hands each connection to a random ready endpoint. Only
// TCP is forwarded. A ClusterIP with no ready endpoint has no listener, so
// the kernel resets connections to it at once.
type userspaceBackend struct {
	link    string
	table   string // nftables mode's table, removed on the first sync
	nodeIPs []netip.Addr
	log     *slog.Logger

	mu        sync.Mutex
	synced    bool
	listeners map[netip.AddrPort]*listener
	conns     map[net.Conn]struct{} // open client and endpoint connections
	wg        sync.WaitGroup
	warned    map[string]bool // service ports already warned about
}

type listener struct {
	key string
	ln  net.Listener
	eps atomic.Pointer[[]netip.AddrPort]
}

func newUserspaceBackend(cfg Config) *userspaceBackend {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &userspaceBackend{
		link: cfg.Link, table: cfg.Table, nodeIPs: cfg.nodeIPs(), log: log,
		listeners: map[netip.AddrPort]*listener{}, conns: map[net.Conn]struct{}{},
		warned: map[string]bool{},
	}
}

// Sync makes the link's addresses and the listeners match rs.
func (u *userspaceBackend) Sync(rs RuleSet) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.synced {
		removeTable(u.table, u.log)
	}
	link, err := u.ensureLink()
	if err != nil {
		return err
	}

	wantIPs := map[netip.Addr]bool{}
	wantLn := map[netip.AddrPort]ServicePort{}
	for _, p := range rs.Ports {
		wantIPs[p.ClusterIP] = true
		if p.Protocol != "TCP" {
			if !u.warned[p.Key()] {
				u.warned[p.Key()] = true
				u.log.Warn("the userspace proxy forwards TCP only; use the nftables mode for this service port", "service", p.Key(), "protocol", p.Protocol)
			}
			continue
		}
		if len(p.Endpoints) == 0 {
			continue
		}
		wantLn[netip.AddrPortFrom(p.ClusterIP, p.Port)] = p
		if p.NodePort != 0 {
			for _, nip := range u.nodeIPs {
				wantLn[netip.AddrPortFrom(nip, p.NodePort)] = p
			}
		}
	}

	var errs []error
	// Listeners go before their addresses, and addresses come before
	// new listeners, so neither step finds the other missing.
	for addr, l := range u.listeners {
		if _, ok := wantLn[addr]; !ok {
			l.ln.Close()
			delete(u.listeners, addr)
		}
	}
	have, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list the addresses of %s: %w", u.link, err)
	}
	present := map[netip.Addr]bool{}
	for _, a := range have {
		ip, _ := netip.AddrFromSlice(a.IP.To4())
		if !wantIPs[ip] {
			if err := netlink.AddrDel(link, &a); err != nil {
				errs = append(errs, fmt.Errorf("remove %s from %s: %w", ip, u.link, err))
			}
			continue
		}
		present[ip] = true
	}
	for ip := range wantIPs {
		if present[ip] {
			continue
		}
		a := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}}
		if err := netlink.AddrAdd(link, a); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("add %s to %s: %w", ip, u.link, err))
		}
	}
	for addr, p := range wantLn {
		l := u.listeners[addr]
		if l == nil {
			ln, err := net.Listen("tcp4", addr.String())
			if err != nil {
				errs = append(errs, fmt.Errorf("listen on %s for %s: %w", addr, p.Key(), err))
				continue
			}
			l = &listener{key: p.Key(), ln: ln}
			u.listeners[addr] = l
			l.eps.Store(&p.Endpoints)
			u.wg.Add(1)
			go u.serve(l)
			continue
		}
		l.key = p.Key()
		l.eps.Store(&p.Endpoints)
	}
	u.synced = true
	return errors.Join(errs...)
}

// ensureLink returns the link holding the ClusterIPs, creating it. A dummy
// link is the natural kind; kernels built without it get an empty bridge,
// which holds local addresses just as well.
func (u *userspaceBackend) ensureLink() (netlink.Link, error) {
	l, err := netlink.LinkByName(u.link)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return nil, fmt.Errorf("look up link %s: %w", u.link, err)
		}
		attrs := netlink.LinkAttrs{Name: u.link}
		err = netlink.LinkAdd(&netlink.Dummy{LinkAttrs: attrs})
		if errors.Is(err, unix.EOPNOTSUPP) {
			err = netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs})
		}
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create link %s for the ClusterIPs: %w", u.link, err)
		}
		if l, err = netlink.LinkByName(u.link); err != nil {
			return nil, fmt.Errorf("look up link %s: %w", u.link, err)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(l); err != nil {
			return nil, fmt.Errorf("set link %s up: %w", u.link, err)
		}
	}
	return l, nil
}

func (u *userspaceBackend) serve(l *listener) {
	defer u.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return // closed
		}
		if !u.track(c) {
			c.Close()
			return
		}
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			u.forward(l, c)
		}()
	}
}

// track registers a connection so Cleanup can close it; it refuses once
// Cleanup has started.
func (u *userspaceBackend) track(c net.Conn) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conns == nil {
		return false
	}
	u.conns[c] = struct{}{}
	return true
}

func (u *userspaceBackend) untrack(c net.Conn) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.conns, c)
	c.Close()
}

// forward connects the client to a random ready endpoint, trying the
// others in random order when a dial fails, and copies both ways.
func (u *userspaceBackend) forward(l *listener, client net.Conn) {
	defer u.untrack(client)
	eps := *l.eps.Load()
	var d net.Dialer
	var backend net.Conn
	for _, i := range rand.Perm(len(eps)) {
		ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
		c, err := d.DialContext(ctx, "tcp4", eps[i].String())
		cancel()
		if err == nil {
			backend = c
			break
		}
		u.log.Debug("dial endpoint; trying another", "service", l.key, "endpoint", eps[i], "err", err)
	}
	if backend == nil {
		u.log.Warn("no endpoint answered", "service", l.key, "endpoints", len(eps))
		return
	}
	if !u.track(backend) {
		backend.Close()
		return
	}
	defer u.untrack(backend)
	done := make(chan struct{})
	go func() {
		defer close(done)
		pipe(backend, client)
	}()
	pipe(client, backend)
	<-done
}

// pipe copies src to dst and then half-closes dst, so each side sees the
// other's end of stream.
func pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	} else {
		dst.Close()
	}
}

// Cleanup closes every listener and connection and deletes the link.
func (u *userspaceBackend) Cleanup() error {
	u.mu.Lock()
	for addr, l := range u.listeners {
		l.ln.Close()
		delete(u.listeners, addr)
	}
	for c := range u.conns {
		c.Close()
	}
	u.conns = nil
	u.mu.Unlock()
	u.wg.Wait()
	u.mu.Lock()
	u.conns = map[net.Conn]struct{}{}
	u.synced = false
	u.mu.Unlock()

	l, err := netlink.LinkByName(u.link)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("look up link %s: %w", u.link, err)
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("delete link %s: %w", u.link, err)
	}
	return nil
}

// removeTable deletes a table left by the nftables mode, if there is one:
// its DNAT rules would take the traffic before the listeners see it.
func removeTable(name string, log *slog.Logger) {
	c, err := nftables.New()
	if err != nil {
		return
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return // no nftables on this host: nothing can be left
	}
	for _, t := range tables {
		if t.Name != name {
			continue
		}
		c.DelTable(t)
		if err := c.Flush(); err != nil {
			log.Warn("remove the table of an earlier nftables proxy", "table", name, "err", err)
			return
		}
		log.Info("removed the table of an earlier nftables proxy", "table", name)
	}
}
