//go:build !linux

package podnet

import (
	"context"
	"net"
)

// Network is a node's pod network; it exists only on Linux.
type Network struct{}

// New returns ErrUnsupported.
func New(cfg Config) (*Network, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return nil, ErrUnsupported
}

func (n *Network) Gateway() net.IP          { return nil }
func (n *Network) PodCIDR() *net.IPNet      { return nil }
func (n *Network) MTU() int                 { return 0 }
func (n *Network) Setup() error             { return ErrUnsupported }
func (n *Network) Teardown() error          { return ErrUnsupported }
func (n *Network) Close() error             { return nil }
func (n *Network) SetRoutes([]Route) error  { return ErrUnsupported }
func (n *Network) Routes() ([]Route, error) { return nil, ErrUnsupported }
func (n *Network) Attach(ctx context.Context, podUID, netnsPath string) (net.IP, error) {
	return nil, ErrUnsupported
}
func (n *Network) Detach(podUID, netnsPath string) error   { return ErrUnsupported }
func (n *Network) Allocations() (map[string]net.IP, error) { return nil, ErrUnsupported }
