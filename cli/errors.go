package cli

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiff-sh/skiff/client"
)

// errMessage turns an API error into one line that says what happened and,
// where it is not obvious, what to do next.
func errMessage(err error) string {
	if hint := transportHint(err); hint != "" {
		return hint
	}
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	msg := st.Message()
	switch st.Code() {
	case codes.Aborted:
		return msg + " (the object changed since it was read: read it again and retry)"
	case codes.Unknown:
		return msg
	case codes.DeadlineExceeded:
		return msg + " (raise --request-timeout or check `skiff cluster status`)"
	}
	return msg
}

// apiError wraps an API error for returning from a command.
func apiError(err error) error {
	if err == nil {
		return nil
	}
	return errors.New(errMessage(err))
}

// transportHint turns the client's TransportMismatchError into what to do
// with the CLI's flags; "" for any other error.
func transportHint(err error) string {
	var mm *client.TransportMismatchError
	if !errors.As(err, &mm) {
		return ""
	}
	if mm.ServerTLS {
		return fmt.Sprintf("the cluster uses TLS (master %s answered with a TLS handshake) but the CLI connects in plaintext "+
			"(--insecure, or insecure: true in %s): drop --insecure and pass --token-file with a copy of the masters' token file "+
			"(`skiff token show --token-file FILE` on a master prints it), or a bearer token with --token and --ca-file "+
			"(an admin makes both with `skiff token create --print-config`)", mm.Server, client.ConfigPath())
	}
	return fmt.Sprintf("master %s runs with --insecure (plaintext, no authentication) but the CLI connects with TLS "+
		"(a token file or bearer token was given): pass --insecure, or restart the masters with --token-file", mm.Server)
}
