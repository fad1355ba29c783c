package netproxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"
)

// ErrUnsupported is returned by New on platforms without a backend.
var ErrUnsupported = errors.New("netproxy: forwarding rules need Linux (nftables or netlink)")

// Proxy modes.
const (
	ModeNFTables  = "nftables"
	ModeUserspace = "userspace"
)

// Config configures a Proxy.
type Config struct {
	// Mode is ModeNFTables (default) or ModeUserspace.
	Mode string
	// NodeIPs are the addresses NodePorts answer on (the node's InternalIP).
	// Without any, NodePorts are not served.
	NodeIPs []string
	// ClusterCIDR is the pod CIDR of the whole cluster. Traffic to a
	// ClusterIP from outside it is masqueraded so replies come back through
	// this node; empty masquerades only NodePort and hairpin traffic.
	ClusterCIDR string
	// MinSyncInterval bounds how often the rules are rebuilt; a change is
	// applied at most this long after the previous sync (default 100ms).
	MinSyncInterval time.Duration
	// Table is the nftables table (family ip) the proxy owns.
	Table string
	// Link is the link that holds the ClusterIPs in userspace mode.
	Link string
	// Cache, when set, is a cache the caller runs (Cache.Run) and shares,
	// e.g. with the DNS server; otherwise the Proxy runs its own.
	Cache  *Cache
	Logger *slog.Logger
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Mode:            ModeNFTables,
		ClusterCIDR:     "10.244.0.0/16",
		MinSyncInterval: 100 * time.Millisecond,
		Table:           "skiff-proxy",
		Link:            "skiff-svc",
	}
}

// maxLinkName is IFNAMSIZ minus the terminating NUL.
const maxLinkName = 15

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.Mode != ModeNFTables && c.Mode != ModeUserspace {
		return fmt.Errorf("netproxy config: Mode: %q is neither %q nor %q", c.Mode, ModeNFTables, ModeUserspace)
	}
	for i, s := range c.NodeIPs {
		if a, err := netip.ParseAddr(s); err != nil || !a.Is4() {
			return fmt.Errorf("netproxy config: NodeIPs[%d]: %q is not an IPv4 address", i, s)
		}
	}
	if c.ClusterCIDR != "" {
		if p, err := netip.ParsePrefix(c.ClusterCIDR); err != nil || !p.Addr().Is4() {
			return fmt.Errorf("netproxy config: ClusterCIDR: %q is not an IPv4 CIDR such as 10.244.0.0/16", c.ClusterCIDR)
		}
	}
	if c.MinSyncInterval < 0 || c.MinSyncInterval > time.Second {
		return fmt.Errorf("netproxy config: MinSyncInterval: %s is outside 0..1s (changes must apply within a second)", c.MinSyncInterval)
	}
	if c.Table == "" {
		return errors.New("netproxy config: Table: empty; use the default skiff-proxy")
	}
	if c.Link == "" || len(c.Link) > maxLinkName {
		return fmt.Errorf("netproxy config: Link: %q must be 1 to %d characters", c.Link, maxLinkName)
	}
	return nil
}

func (c Config) nodeIPs() []netip.Addr {
	out := make([]netip.Addr, 0, len(c.NodeIPs))
	for _, s := range c.NodeIPs {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a)
		}
	}
	return out
}

func (c Config) clusterCIDR() netip.Prefix {
	p, _ := netip.ParsePrefix(c.ClusterCIDR)
	return p.Masked()
}

// DNSConfig configures a DNS server.
type DNSConfig struct {
	// Domain is the cluster domain (cluster.local).
	Domain string
	// Upstreams (host:port) answer names outside Domain, tried in order;
	// without any such queries are REFUSED.
	Upstreams []string
	// TTL of the answers about Services, in seconds.
	TTL uint32
	// UpstreamTimeout bounds one exchange with an upstream.
	UpstreamTimeout time.Duration
	// Cache, when set, is a cache the caller runs (Cache.Run) and shares,
	// e.g. with the Proxy; otherwise the server runs its own.
	Cache  *Cache
	Logger *slog.Logger
}

// DefaultDNSConfig returns the defaults.
func DefaultDNSConfig() DNSConfig {
	return DNSConfig{Domain: "cluster.local", TTL: 5, UpstreamTimeout: 2 * time.Second}
}

// Validate reports the first invalid field.
func (c DNSConfig) Validate() error {
	if c.Domain == "" {
		return errors.New("dns config: Domain: empty; use the default cluster.local")
	}
	for i, u := range c.Upstreams {
		if _, err := netip.ParseAddrPort(u); err != nil {
			return fmt.Errorf("dns config: Upstreams[%d]: %q is not ip:port (e.g. 8.8.8.8:53)", i, u)
		}
	}
	if c.UpstreamTimeout <= 0 {
		return fmt.Errorf("dns config: UpstreamTimeout: %s must be positive", c.UpstreamTimeout)
	}
	return nil
}
