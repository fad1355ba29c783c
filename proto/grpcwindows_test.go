package proto

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// pingTap is a listener whose connections parse the HTTP/2 frames going
// each way and count the PINGs (not their acks) each side sends.
type pingTap struct {
	net.Listener
	fromServer, fromClient atomic.Int64
	wg                     sync.WaitGroup
}

type tapConn struct {
	net.Conn
	in, out *io.PipeWriter
}

func (c *tapConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		_, _ = c.in.Write(b[:n])
	}
	return n, err
}

func (c *tapConn) Write(b []byte) (int, error) {
	_, _ = c.out.Write(b)
	return c.Conn.Write(b)
}

func (c *tapConn) Close() error {
	c.in.Close()
	c.out.Close()
	return c.Conn.Close()
}

func (l *pingTap) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	l.wg.Add(2)
	go l.count(inR, len(http2.ClientPreface), &l.fromClient)
	go l.count(outR, 0, &l.fromServer)
	return &tapConn{Conn: c, in: inW, out: outW}, nil
}

func (l *pingTap) count(r *io.PipeReader, skip int, pings *atomic.Int64) {
	defer l.wg.Done()
	defer func() { _, _ = io.Copy(io.Discard, r) }() // never block the connection
	if _, err := io.ReadFull(r, make([]byte, skip)); err != nil {
		return
	}
	fr := http2.NewFramer(nil, r)
	fr.SetMaxReadFrameSize(1 << 24)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		if p, ok := f.(*http2.PingFrame); ok && !p.IsAck() {
			pings.Add(1)
		}
	}
}

// pingsPerCalls makes calls small unary calls over one connection and
// returns the PINGs the server and the client sent.
func pingsPerCalls(t *testing.T, calls int, srvOpts []grpc.ServerOption, dialOpts []grpc.DialOption) (fromServer, fromClient int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tap := &pingTap{Listener: ln}
	srv := grpc.NewServer(srvOpts...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(tap) }()
	conn, err := grpc.NewClient(ln.Addr().String(), append(dialOpts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	client := healthpb.NewHealthClient(conn)
	for range calls {
		if _, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close()
	srv.Stop()
	tap.wg.Wait()
	return tap.fromServer.Load(), tap.fromClient.Load()
}

// TestGRPCWindowsStopBDPPings: with gRPC's default windows, its BDP
// estimator makes both sides send PINGs as calls come one at a time; with
// skiff's fixed windows neither side sends any.
func TestGRPCWindowsStopBDPPings(t *testing.T) {
	const calls = 50
	srv, cli := pingsPerCalls(t, calls, nil, nil)
	t.Logf("default windows: %d PINGs from the server, %d from the client in %d calls", srv, cli, calls)
	if srv < calls/5 || cli < calls/5 {
		t.Fatalf("with gRPC's default windows the BDP estimator sent %d (server) and %d (client) PINGs in %d calls: "+
			"it no longer pings as these windows assume, so re-measure whether fixing them still pays", srv, cli, calls)
	}
	srv, cli = pingsPerCalls(t, calls, GRPCServerWindows(), GRPCDialWindows())
	if srv != 0 || cli != 0 {
		t.Fatalf("with skiff's windows: %d PINGs from the server, %d from the client in %d calls, want none", srv, cli, calls)
	}
}
