//go:build !linux

package netproxy

import (
	"fmt"
	"runtime"
)

func newBackend(Config) (backend, error) {
	return nil, fmt.Errorf("%w (this is %s)", ErrUnsupported, runtime.GOOS)
}
