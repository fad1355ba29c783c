//go:build !linux

package image

import (
	"context"
	"errors"
	"io"
)

// unpack needs Linux: layers are laid out for overlayfs.
func unpack(ctx context.Context, dst string, r io.Reader) error {
	return errors.ErrUnsupported
}
