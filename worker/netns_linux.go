package worker

import (
	"context"
	"net"

	"github.com/skiff-sh/skiff/worker/podnet"
)

// dialInNetNS dials addr from inside the network namespace pinned at nsPath
// (the host's when nsPath is ""). The socket is created on an OS thread
// inside the namespace, which then goes back to the worker's (see
// podnet.InNetNS); the connection keeps working from any thread.
func dialInNetNS(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	var d net.Dialer
	if nsPath == "" {
		return d.DialContext(ctx, network, addr)
	}
	var c net.Conn
	err := podnet.InNetNS(nsPath, func() error {
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}
