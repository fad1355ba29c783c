package netproxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	nl "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// masqMark is the packet mark bit that asks postrouting to masquerade,
// the same bit kube-proxy uses.
const masqMark = 0x4000

// bytesPerObject is a generous size of one chain, rule or set in a batch
// and of its acknowledgement in the socket's receive buffer.
const bytesPerObject = 1024

// Chain names of the table. Base chains hook into nat and filter; the
// service, endpoint and reject chains are regular chains reached from them.
const (
	chainNATPrerouting  = "nat-prerouting"
	chainNATOutput      = "nat-output"
	chainNATPostrouting = "nat-postrouting"
	chainFilterInput    = "filter-input"
	chainFilterForward  = "filter-forward"
	chainFilterOutput   = "filter-output"
	chainServices       = "services"
	chainNoEndpoints    = "no-endpoints"
)

// nftBackend programs a RuleSet as one nftables table of family ip, which
// it rebuilds as a whole in a single netlink batch (delete the table, add
// it again with everything in it) so packets see either the old or the new
// rule set, never a mix.
type nftBackend struct {
	table       string
	link        string // userspace mode's link, removed on the first sync
	nodeIPs     []netip.Addr
	clusterCIDR netip.Prefix
	log         *slog.Logger
	synced      bool
}

func newNFTBackend(cfg Config) *nftBackend {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &nftBackend{
		table: cfg.Table, link: cfg.Link, nodeIPs: cfg.nodeIPs(),
		clusterCIDR: cfg.clusterCIDR(), log: log,
	}
}

// conn opens a netlink connection whose buffers fit a batch of about
// objects chains, rules and sets. The whole table goes in one sendmsg (a
// transaction cannot span several) and every message is acknowledged, so
// the default socket buffers (about 200 KiB) would refuse a few hundred
// services; nft(8) sizes its buffers the same way.
func (b *nftBackend) conn(objects int) (*nftables.Conn, error) {
	size := min(max(objects*bytesPerObject, 1<<20), 512<<20)
	grow := func(nl *nl.Conn) error {
		rc, err := nl.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		err = rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size)
			if serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
			}
		})
		if err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("size the netlink socket buffers to %d bytes: %w", size, serr)
		}
		return nil
	}
	c, err := nftables.New(nftables.WithSockOptions(grow))
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink socket: %w", err)
	}
	return c, nil
}

// Sync replaces the table with one built from rs.
func (b *nftBackend) Sync(rs RuleSet) error {
	if !b.synced {
		// A worker that ran in userspace mode before leaves its link
		// holding the ClusterIPs; they would swallow the traffic.
		removeLink(b.link, b.log)
	}
	objects := 16
	for _, p := range rs.Ports {
		objects += 4 + 3*len(p.Endpoints) + len(b.nodeIPs)
	}
	c, err := b.conn(objects)
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: b.table, Family: nftables.TableFamilyIPv4}
	// Adding first makes the delete valid when the table does not exist
	// yet; all three happen in the same transaction.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	if err := b.build(c, t, rs); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("program nftables table %s (%d service ports): %w; on hosts without nftables run the proxy in userspace mode",
			b.table, len(rs.Ports), err)
	}
	b.synced = true
	return nil
}

// Cleanup deletes the table.
func (b *nftBackend) Cleanup() error {
	c, err := b.conn(2)
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: b.table, Family: nftables.TableFamilyIPv4}
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete nftables table %s: %w", b.table, err)
	}
	return nil
}

// build queues the chains and rules of rs. The layout follows kube-proxy's
// nftables mode:
//
//	nat-prerouting, nat-output  -> services
//	services:      ip daddr CLUSTERIP PROTO dport PORT goto svc-KEY
//	               ip daddr NODEIP PROTO dport NODEPORT mark goto svc-KEY
//	svc-KEY:       [ip daddr CLUSTERIP ip saddr != CLUSTERCIDR mark]
//	               numgen random mod N vmap @eps-KEY
//	eps-KEY:       map { 0: goto ep-KEY-EP0, 1: goto ep-KEY-EP1, ... }
//	ep-KEY-EP:     ip saddr EP mark (hairpin); dnat to EP:PORT
//	nat-postrouting: mark & 0x4000 masquerade
//	filter-input/forward/output -> no-endpoints: reject traffic to a
//	               service port with no ready endpoint
func (b *nftBackend) build(c *nftables.Conn, t *nftables.Table, rs RuleSet) error {
	base := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return c.AddChain(&nftables.Chain{Name: name, Table: t, Type: typ, Hooknum: hook, Priority: prio})
	}
	regular := func(name string) *nftables.Chain {
		return c.AddChain(&nftables.Chain{Name: name, Table: t})
	}
	rule := func(ch *nftables.Chain, exprs ...expr.Any) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs})
	}

	services := regular(chainServices)
	noEndpoints := regular(chainNoEndpoints)
	for _, name := range []string{chainNATPrerouting, chainNATOutput} {
		hook := nftables.ChainHookPrerouting
		if name == chainNATOutput {
			hook = nftables.ChainHookOutput
		}
		ch := base(name, nftables.ChainTypeNAT, hook, nftables.ChainPriorityNATDest)
		rule(ch, verdict(expr.VerdictJump, chainServices)...)
	}
	post := base(chainNATPostrouting, nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	rule(post, join(isMarked(), []expr.Any{&expr.Masq{FullyRandom: true}})...)
	for _, f := range []struct {
		name string
		hook *nftables.ChainHook
	}{{chainFilterInput, nftables.ChainHookInput}, {chainFilterForward, nftables.ChainHookForward}, {chainFilterOutput, nftables.ChainHookOutput}} {
		ch := base(f.name, nftables.ChainTypeFilter, f.hook, nftables.ChainPriorityFilter)
		rule(ch, verdict(expr.VerdictJump, chainNoEndpoints)...)
	}

	for _, p := range rs.Ports {
		proto, ok := ipProto(p.Protocol)
		if !ok {
			b.log.Warn("skip a service port of unknown protocol", "service", p.Key(), "protocol", p.Protocol)
			continue
		}
		match := func(ip netip.Addr, port uint16) []expr.Any {
			return join(matchAddr(offDaddr, ip), matchPort(proto, port))
		}
		if len(p.Endpoints) == 0 {
			rej := rejectFor(proto)
			rule(noEndpoints, join(match(p.ClusterIP, p.Port), rej)...)
			if p.NodePort != 0 {
				for _, nip := range b.nodeIPs {
					rule(noEndpoints, join(match(nip, p.NodePort), rej)...)
				}
			}
			continue
		}
		svcName := "svc-" + p.Key()
		svc := regular(svcName)
		rule(services, join(match(p.ClusterIP, p.Port), verdict(expr.VerdictGoto, svcName))...)
		if p.NodePort != 0 {
			for _, nip := range b.nodeIPs {
				rule(services, join(match(nip, p.NodePort), markMasq(), verdict(expr.VerdictGoto, svcName))...)
			}
		}
		if b.clusterCIDR.IsValid() {
			// Traffic from outside the pod network reaches the ClusterIP
			// only through this node; masquerade it so replies do too.
			rule(svc, join(matchAddr(offDaddr, p.ClusterIP), notInPrefix(offSaddr, b.clusterCIDR), markMasq())...)
		}
		// A named map rather than an anonymous one: only then does the
		// library record the keys' host byte order (numgen's), so that
		// `nft list` shows 0, 1, ... instead of 0, 16777216, ...
		vmap := &nftables.Set{
			Table: t, Name: "eps-" + p.Key(), IsMap: true,
			KeyType: nftables.TypeInteger, KeyByteOrder: binaryutil.NativeEndian, DataType: nftables.TypeVerdict,
		}
		elems := make([]nftables.SetElement, len(p.Endpoints))
		for i, ep := range p.Endpoints {
			epName := fmt.Sprintf("ep-%s-%s", p.Key(), ep)
			ch := regular(epName)
			// Hairpin: a pod reaching itself through its Service must see
			// the reply come from the node, not from itself.
			rule(ch, join(matchAddr(offSaddr, ep.Addr()), markMasq())...)
			rule(ch, join(matchL4(proto), dnat(ep))...)
			elems[i] = nftables.SetElement{
				Key:         binaryutil.NativeEndian.PutUint32(uint32(i)),
				VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: epName},
			}
		}
		if err := c.AddSet(vmap, elems); err != nil {
			return fmt.Errorf("endpoint map of %s: %w", p.Key(), err)
		}
		rule(svc,
			&expr.Numgen{Register: 1, Modulus: uint32(len(p.Endpoints)), Type: unix.NFT_NG_RANDOM},
			&expr.Lookup{SourceRegister: 1, SetName: vmap.Name, SetID: vmap.ID, DestRegister: 0, IsDestRegSet: true},
		)
	}
	return nil
}

// IPv4 header offsets.
const (
	offSaddr = 12
	offDaddr = 16
)

func ipProto(p string) (byte, bool) {
	switch strings.ToUpper(p) {
	case "TCP":
		return unix.IPPROTO_TCP, true
	case "UDP":
		return unix.IPPROTO_UDP, true
	case "SCTP":
		return unix.IPPROTO_SCTP, true
	}
	return 0, false
}

func join(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func matchAddr(offset uint32, ip netip.Addr) []expr.Any {
	a := ip.As4()
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:]},
	}
}

func notInPrefix(offset uint32, p netip.Prefix) []expr.Any {
	a := p.Addr().As4()
	mask := make([]byte, 4)
	for i := range p.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: a[:]},
	}
}

func matchL4(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

// matchPort matches the protocol and the destination port, which sits at
// the same offset in TCP, UDP and SCTP headers.
func matchPort(proto byte, port uint16) []expr.Any {
	return join(matchL4(proto), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	})
}

// markMasq sets the masquerade bit and keeps the rest of the mark.
func markMasq() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{
			SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^uint32(masqMark)),
			Xor:  binaryutil.NativeEndian.PutUint32(masqMark),
		},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}

func isMarked() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{
			SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(masqMark), Xor: binaryutil.NativeEndian.PutUint32(0),
		},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

func dnat(ep netip.AddrPort) []expr.Any {
	a := ep.Addr().As4()
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: a[:]},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(ep.Port())},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}
}

// rejectFor answers TCP with a reset and anything else with ICMP port
// unreachable, so clients fail at once instead of timing out.
func rejectFor(proto byte) []expr.Any {
	if proto == unix.IPPROTO_TCP {
		return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}}
	}
	return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 3}} // port unreachable
}

func verdict(kind expr.VerdictKind, chain string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: kind, Chain: chain}}
}

// removeLink deletes a link left by the userspace mode, if there is one.
func removeLink(name string, log *slog.Logger) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			log.Warn("look for a stale proxy link", "link", name, "err", err)
		}
		return
	}
	if err := netlink.LinkDel(l); err != nil {
		log.Warn("remove a stale proxy link", "link", name, "err", err)
		return
	}
	log.Info("removed the link of an earlier userspace proxy", "link", name)
}
