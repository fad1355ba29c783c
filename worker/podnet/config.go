package podnet

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
)

// RouteProtocol marks the routes SetRoutes installs (the rtm_protocol of a
// route, as `ip route ... proto 83` shows it), so that it replaces its own
// routes and never touches anybody else's.
const RouteProtocol = 83

// TableName is the nftables table (family ip) the package owns.
const TableName = "skiff-podnet"

// vethPrefix starts the name of the host end of every pod's veth pair.
const vethPrefix = "skv"

var (
	// ErrExhausted is returned when every address of the pod CIDR is
	// allocated.
	ErrExhausted = errors.New("no free address left in the pod CIDR")
	// ErrUnsupported is returned on platforms other than Linux.
	ErrUnsupported = errors.New("the pod network is only supported on linux")
)

// Config configures a node's pod network.
type Config struct {
	// PodCIDR is this node's pod CIDR (the Node's spec.podCIDR), e.g.
	// 10.244.1.0/24. Required, IPv4, at most /30.
	PodCIDR string
	// ClusterCIDR contains every node's pod CIDR (default 10.244.0.0/16):
	// pod traffic to it is not masqueraded.
	ClusterCIDR string
	// Bridge is the bridge's name. Default "skiff0".
	Bridge string
	// MTU of the bridge and the veths. Default: the MTU of the interface of
	// the default route, else 1500.
	MTU int
	// StateFile is the bbolt file that holds the IP allocations. Required,
	// absolute.
	StateFile string
	// NetNS is the path of the network namespace the bridge, routes and
	// nftables table live in (a /run/netns/NAME pin or /proc/PID/ns/net);
	// "" means the namespace of the process.
	NetNS  string
	Logger *slog.Logger
}

// DefaultConfig returns a Config with every default set; the caller fills
// in PodCIDR and StateFile.
func DefaultConfig() Config {
	return Config{ClusterCIDR: "10.244.0.0/16", Bridge: "skiff0", Logger: slog.Default()}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("pod network config: %s: %s", field, fmt.Sprintf(format, args...))
	}
	pod, err := parseCIDR(c.PodCIDR)
	if err != nil {
		return bad("PodCIDR", "%v", err)
	}
	cluster, err := parseCIDR(c.ClusterCIDR)
	if err != nil {
		return bad("ClusterCIDR", "%v", err)
	}
	if ones, _ := pod.Mask.Size(); ones > 30 {
		return bad("PodCIDR", "%s is too small: a pod CIDR needs at least a /30", c.PodCIDR)
	}
	if po, _ := pod.Mask.Size(); !cluster.Contains(pod.IP) || func() bool { co, _ := cluster.Mask.Size(); return po < co }() {
		return bad("PodCIDR", "%s is not inside ClusterCIDR %s", c.PodCIDR, c.ClusterCIDR)
	}
	if err := ValidBridgeName(c.Bridge); err != nil {
		return bad("Bridge", "%v", err)
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		return bad("MTU", "%d is out of range (576-65535, or 0 for the default route's)", c.MTU)
	}
	if c.StateFile == "" || !filepath.IsAbs(c.StateFile) {
		return bad("StateFile", "%q: an absolute path is required", c.StateFile)
	}
	if c.Logger == nil {
		return bad("Logger", "required")
	}
	return nil
}

// ValidBridgeName checks a Linux interface name for the bridge.
func ValidBridgeName(name string) error {
	switch {
	case name == "":
		return errors.New("required")
	case len(name) > 15:
		return fmt.Errorf("%q is longer than 15 characters (IFNAMSIZ)", name)
	case name == "." || name == "..":
		return fmt.Errorf("%q is not an interface name", name)
	}
	for _, r := range name {
		if r <= ' ' || r == '/' || r == ':' || r > '~' {
			return fmt.Errorf("%q: interface names have no spaces, '/', ':' or non-ASCII", name)
		}
	}
	return nil
}

// parseCIDR parses an IPv4 CIDR in its canonical form (network address).
func parseCIDR(s string) (*net.IPNet, error) {
	if s == "" {
		return nil, errors.New("required")
	}
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not a CIDR: %v", s, err)
	}
	if ip.To4() == nil {
		return nil, fmt.Errorf("%q: only IPv4 is supported", s)
	}
	if !ip.Equal(n.IP) {
		return nil, fmt.Errorf("%q has host bits set (the network is %s)", s, n)
	}
	n.IP = n.IP.To4()
	return n, nil
}

// Route is a host-gw route: another node's pod CIDR via that node's
// address.
type Route struct {
	CIDR *net.IPNet
	Via  net.IP
}

func (r Route) String() string { return fmt.Sprintf("%s via %s", r.CIDR, r.Via) }

// Gateway returns the gateway address of a pod CIDR: its first host.
func Gateway(podCIDR *net.IPNet) net.IP {
	return offsetIP(podCIDR.IP.To4(), 1)
}

func ipToU32(ip net.IP) uint32 {
	ip = ip.To4()
	return uint32(ip[0])<<24 | uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
}

func u32ToIP(v uint32) net.IP {
	return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)).To4()
}

func offsetIP(base net.IP, off uint32) net.IP { return u32ToIP(ipToU32(base) + off) }
