package cli

import (
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
