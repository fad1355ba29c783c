//go:build !linux

package worker

import (
	"errors"
	"time"
)

var errNotLinux = errors.New("only supported on linux")

func removeCgroupDirs(parent string) {}

func mountTmpfs(dir, opts string) error { return errNotLinux }

func unmount(path string) error { return errNotLinux }

func bootTime() time.Time { return time.Time{} }
