//go:build !linux

package worker

import (
	"context"
	"errors"
	"net"
)

// dialInNetNS dials from the host; other network namespaces exist only on
// Linux.
func dialInNetNS(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	if nsPath != "" {
		return nil, errors.New("network namespaces are only supported on linux")
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}
