package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// errExists is returned by a writer when the key is already stored.
var errExists = errors.New("already exists")

// target is a store the write workloads and the failover driver talk to:
// skiff through its gRPC API, etcd through clientv3, or raw raft.
type target interface {
	name() string
	// newWriter returns the connection of client i.
	newWriter(ctx context.Context, i int) (writer, error)
}

// writer creates key with a 256-byte payload.
type writer interface {
	put(ctx context.Context, key string) error
	close()
}

// serverProcs is a target whose servers are processes of this machine:
// runWrites then measures the CPU they use.
type serverProcs interface {
	serverPIDs() []int
}

// verifier can tell which acknowledged keys are not stored.
type verifier interface {
	missing(ctx context.Context, keys []string) ([]string, error)
}

var runSeq atomic.Int64

// writeResult is one run of the write workload.
type writeResult struct {
	clients  int
	ops      int
	errors   int
	elapsed  time.Duration
	p50, p99 time.Duration
	max      time.Duration
	mean     time.Duration
	// CPU used during the run by each server process (nil when the target
	// has none) and by this process, the clients.
	serverCPU []time.Duration
	clientCPU time.Duration
	// steal is the machine's CPU time the hypervisor took during the run
	// (stealSince; -1 when not known).
	steal float64
}

func (r writeResult) rate() float64 { return float64(r.ops) / r.elapsed.Seconds() }

// cpuPerWrite is the servers' and the clients' CPU per acknowledged write,
// and how busy the run kept the machine (1 = every core all the time).
func (r writeResult) cpuPerWrite() (servers, clients time.Duration, busy float64) {
	if r.serverCPU == nil || r.ops == 0 {
		return 0, 0, 0
	}
	var total time.Duration
	for _, d := range r.serverCPU {
		total += d
	}
	busy = float64(total+r.clientCPU) / float64(r.elapsed) / float64(runtime.NumCPU())
	return total / time.Duration(r.ops), r.clientCPU / time.Duration(r.ops), busy
}

// runWrites has clients writers create new keys back to back for dur and
// measures each acknowledged write.
func runWrites(ctx context.Context, t target, clients int, dur time.Duration) (writeResult, error) {
	run := runSeq.Add(1)
	ws := make([]writer, clients)
	defer func() {
		for _, w := range ws {
			if w != nil {
				w.close()
			}
		}
	}()
	for i := range ws {
		w, err := t.newWriter(ctx, i)
		if err != nil {
			return writeResult{}, fmt.Errorf("%s client %d: %w", t.name(), i, err)
		}
		ws[i] = w
		// Warm up: connect and find the leader before the clock starts.
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = w.put(wctx, fmt.Sprintf("warm-%d-%d", run, i))
		cancel()
		if err != nil {
			return writeResult{}, fmt.Errorf("%s client %d warm-up write: %w", t.name(), i, err)
		}
	}
	var meter *cpuMeter
	if sp, ok := t.(serverProcs); ok {
		meter = startCPU(sp.serverPIDs())
	}
	machine0 := readMachineCPU()
	lats := make([][]time.Duration, clients)
	errs := make([]int, clients)
	var firstErr atomic.Value
	start := time.Now()
	deadline := start.Add(dur)
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := make([]time.Duration, 0, 4096)
			for seq := 0; ; seq++ {
				now := time.Now()
				if now.After(deadline) || ctx.Err() != nil {
					break
				}
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := w.put(rctx, fmt.Sprintf("w%d-%d-%d", run, i, seq))
				cancel()
				if err != nil {
					errs[i]++
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				l = append(l, time.Since(now))
			}
			lats[i] = l
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return writeResult{}, err
	}
	var all []time.Duration
	res := writeResult{clients: clients, elapsed: elapsed, steal: readMachineCPU().stealSince(machine0)}
	if meter != nil {
		res.serverCPU, res.clientCPU = meter.stop()
	}
	for i := range lats {
		all = append(all, lats[i]...)
		res.errors += errs[i]
	}
	res.ops = len(all)
	var total time.Duration
	for _, d := range all {
		total += d
	}
	if len(all) > 0 {
		res.mean = total / time.Duration(len(all))
	}
	sortDurations(all)
	res.p50, res.p99 = percentile(all, 50), percentile(all, 99)
	if len(all) > 0 {
		res.max = all[len(all)-1]
	}
	if res.ops == 0 {
		err, _ := firstErr.Load().(error)
		return res, fmt.Errorf("%s: no write succeeded with %d clients: %v", t.name(), clients, err)
	}
	return res, nil
}
