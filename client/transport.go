package client

// Telling a misconfigured client why it cannot connect. A plaintext client
// of a TLS master, or a TLS client of a master run with --insecure, sees
// only a connection that closes (gRPC's "error reading server preface" or
// "first record does not look like a TLS handshake"), which the retry loop
// would report, after RetryFor, as masters that do not answer. When a
// connection fails, do probes the master once to find out which protocol it
// speaks and fails at once with a TransportMismatchError that says so.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

// ErrTransportMismatch matches every TransportMismatchError (errors.Is).
var ErrTransportMismatch = errors.New("the client and the master disagree about TLS")

// TransportMismatchError says that a master speaks TLS while the client
// was configured for plaintext (ServerTLS), or the converse.
type TransportMismatchError struct {
	// Server is the master's API address.
	Server string
	// ServerTLS is true when the master speaks TLS and the client connects
	// in plaintext; false when the master speaks plaintext (it runs with
	// --insecure) and the client connects with TLS.
	ServerTLS bool
}

func (e *TransportMismatchError) Error() string {
	if e.ServerTLS {
		return fmt.Sprintf("master %s serves TLS, but this client connects in plaintext (insecure): "+
			"connect with the cluster's credentials (the cluster token file, or a bearer token with the cluster CA)", e.Server)
	}
	return fmt.Sprintf("master %s serves plaintext (it runs with --insecure), but this client connects with TLS: "+
		"connect in plaintext (insecure), or run the masters with --token-file", e.Server)
}

// Is makes errors.Is(err, ErrTransportMismatch) true.
func (e *TransportMismatchError) Is(target error) bool { return target == ErrTransportMismatch }

// maxProbeTime bounds one probe; a master that accepted the connection
// answers within milliseconds either way.
const maxProbeTime = 2 * time.Second

// checkTransport returns a TransportMismatchError when conn's last attempt
// failed and the master at addr speaks the other protocol. Only a failed
// attempt (TransientFailure) is probed: a master that is down refuses the
// probe at once, and one that cannot be reached (a partition) leaves the
// connection in Connecting, which costs no probe.
func (c *Client) checkTransport(ctx context.Context, addr string, conn *grpc.ClientConn) error {
	if conn.GetState() != connectivity.TransientFailure {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, min(c.cfg.ConnectTimeout, maxProbeTime))
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil
	}
	defer raw.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	if c.cfg.TLS == nil {
		if speaksTLS(ctx, raw) {
			return &TransportMismatchError{Server: addr, ServerTLS: true}
		}
		return nil
	}
	if speaksPlainHTTP2(raw) {
		return &TransportMismatchError{Server: addr, ServerTLS: false}
	}
	return nil
}

// speaksTLS starts a TLS handshake on conn and reports whether the server
// answered with a TLS record (a handshake or an alert). Nothing is
// verified and nothing is sent after the handshake: the only question is
// which protocol the server speaks, and the handshake fails without a CA
// to verify the server with, which is fine.
func speaksTLS(ctx context.Context, conn net.Conn) bool {
	rec := &firstByte{Conn: conn}
	_ = tls.Client(rec, &tls.Config{ServerName: "probe.invalid", MinVersion: tls.VersionTLS12}).HandshakeContext(ctx)
	// 22 is a TLS handshake record, 21 an alert (RFC 8446, 5.1).
	return rec.seen && (rec.b == 22 || rec.b == 21)
}

// firstByte remembers the first byte read from a connection.
type firstByte struct {
	net.Conn
	seen bool
	b    byte
}

func (f *firstByte) Read(p []byte) (int, error) {
	n, err := f.Conn.Read(p)
	if n > 0 && !f.seen {
		f.seen, f.b = true, p[0]
	}
	return n, err
}

// http2Preface is what an HTTP/2 client sends first over cleartext (RFC
// 9113, 3.4): the connection preface and an empty SETTINGS frame.
var http2Preface = append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)

// speaksPlainHTTP2 sends the cleartext HTTP/2 preface and reports whether
// the server answered with a SETTINGS frame on stream 0, as a gRPC server
// without TLS does.
func speaksPlainHTTP2(conn net.Conn) bool {
	if _, err := conn.Write(http2Preface); err != nil {
		return false
	}
	// A frame header: 24-bit length, type, flags, 31-bit stream id.
	var h [9]byte
	if _, err := io.ReadFull(conn, h[:]); err != nil {
		return false
	}
	return h[3] == 4 && bytes.Equal(h[5:9], []byte{0, 0, 0, 0})
}
