package main

import (
	"context"
	"log/slog"
	"math"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// memoryLimitRatio is the share of the cgroup's memory limit that Go's
// collector is given as its own (GOMEMLIMIT): the rest is the runtime's
// and the kernel's (stacks, page tables, socket buffers, files it caches
// for the process).
const memoryLimitRatio = 0.9

// setMemoryLimit gives Go's collector the memory limit of the cgroup the
// process runs in (a container's limit, a systemd unit's MemoryMax), as
// memoryLimitRatio of it, and follows changes to it every minute; a
// GOMEMLIMIT in the environment wins, and AUTOMEMLIMIT=off leaves the
// runtime alone. Between collections a master's heap grows to
// (1 + gc-percent/100) times its live data: without the limit a master
// whose data fit its cgroup could be killed at that peak, while with it
// the collector works harder as the heap nears the limit.
func setMemoryLimit(ctx context.Context, log *slog.Logger) {
	limit, err := memlimit.Set(
		memlimit.WithRatio(memoryLimitRatio),
		memlimit.WithProvider(memlimit.FromCgroup),
		memlimit.WithRefreshInterval(ctx, time.Minute),
		memlimit.WithLogger(log.With("component", "memlimit")),
	)
	switch {
	case err != nil:
		log.Warn("cannot read the cgroup's memory limit; Go's memory limit is left as it was (set GOMEMLIMIT to choose one)", "err", err)
	case limit == math.MaxInt64:
		log.Debug("no memory limit on this process's cgroup: Go's memory limit stays off")
	default:
		log.Info("Go's memory limit follows the cgroup's", "gomemlimit_bytes", limit)
	}
}
