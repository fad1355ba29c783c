package cli

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/client"
)

// The client's TLS mismatch becomes a message in terms of the CLI's flags,
// whether a command returns the error as is or through apiError.
func TestTransportHint(t *testing.T) {
	toTLS := fmt.Errorf("list pods: %w", &client.TransportMismatchError{Server: "10.0.0.1:7001", ServerTLS: true})
	toPlain := &client.TransportMismatchError{Server: "10.0.0.1:7001"}
	for _, tc := range []struct {
		err  error
		want []string
	}{
		{toTLS, []string{"the cluster uses TLS", "10.0.0.1:7001", "drop --insecure", "--token-file", "skiff token show", "--ca-file"}},
		{toPlain, []string{"master 10.0.0.1:7001 runs with --insecure", "pass --insecure"}},
	} {
		for _, msg := range []string{transportHint(tc.err), errMessage(tc.err), apiError(tc.err).Error()} {
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
		}
	}
	if h := transportHint(status.Error(codes.Unavailable, "cannot connect")); h != "" {
		t.Errorf("hint for another error: %q", h)
	}
	if h := transportHint(errors.New("x")); h != "" {
		t.Errorf("hint for another error: %q", h)
	}
}
