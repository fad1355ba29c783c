package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/skiff-sh/skiff/client"
)

// podTimes is what a watch saw of one pod, in this process's clock: the
// objects' own timestamps have a resolution of one second (as Kubernetes'),
// too coarse for sub-second latencies.
type podTimes struct {
	added   time.Time // ADDED event received
	bound   time.Time // first event with spec.nodeName set
	running time.Time // first event with status.phase Running
	deleted time.Time // DELETED event received
	node    string
}

// podWatch follows the Pods of one namespace and records, per pod name,
// when each transition was first seen.
type podWatch struct {
	mu      sync.Mutex
	pods    map[string]*podTimes
	changed chan struct{} // closed and replaced on every change
	err     error         // why the watch ended early
	events  int
	n       podCounts
	cancel  context.CancelFunc
	done    chan struct{}
}

// watchPods opens the watch (from now) before returning, so that every
// change made after it returns is seen.
func watchPods(ctx context.Context, c *skiffCluster, first int, namespace string) (*podWatch, error) {
	cl, err := c.client(first)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	w, err := cl.Watch(wctx, "Pod", client.WatchOptions{Namespace: namespace})
	if err != nil {
		cancel()
		cl.Close()
		return nil, fmt.Errorf("watch pods: %w", err)
	}
	pw := &podWatch{pods: map[string]*podTimes{}, changed: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(pw.done)
		defer cl.Close()
		defer w.Close()
		for {
			ev, err := w.Next(wctx)
			now := time.Now()
			if err != nil {
				pw.mu.Lock()
				if wctx.Err() == nil {
					pw.err = err
				}
				close(pw.changed)
				pw.changed = make(chan struct{})
				pw.mu.Unlock()
				return
			}
			pod := ev.GetObject().GetPod()
			if pod == nil {
				continue
			}
			name := pod.GetMetadata().GetName()
			pw.mu.Lock()
			pw.events++
			t := pw.pods[name]
			if t == nil {
				t = &podTimes{}
				pw.pods[name] = t
			}
			if ev.GetType() == "ADDED" && t.added.IsZero() {
				t.added = now
				pw.n.added++
			}
			if n := pod.GetSpec().GetNodeName(); n != "" && t.bound.IsZero() {
				t.bound, t.node = now, n
				pw.n.bound++
			}
			if pod.GetStatus().GetPhase() == "Running" && t.running.IsZero() {
				t.running = now
				pw.n.running++
			}
			if ev.GetType() == "DELETED" && t.deleted.IsZero() {
				t.deleted = now
				pw.n.deleted++
			}
			close(pw.changed)
			pw.changed = make(chan struct{})
			pw.mu.Unlock()
		}
	}()
	return pw, nil
}

func (pw *podWatch) close() {
	pw.cancel()
	<-pw.done
}

// podCounts counts the pods that reached each transition.
type podCounts struct{ added, bound, running, deleted int }

// waitFor waits until cond holds over the counts and the recorded pods
// (which cond must not keep), the watch fails, within passes or ctx ends.
func (pw *podWatch) waitFor(ctx context.Context, within time.Duration, what string, cond func(podCounts, map[string]*podTimes) bool) error {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		pw.mu.Lock()
		ok := cond(pw.n, pw.pods)
		err, ch := pw.err, pw.changed
		pw.mu.Unlock()
		switch {
		case ok:
			return nil
		case err != nil:
			return fmt.Errorf("waiting for %s: the pod watch ended: %w", what, err)
		}
		select {
		case <-ch:
		case <-deadline.C:
			return fmt.Errorf("%s: not within %s", what, within)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// snapshot copies the recorded times.
func (pw *podWatch) snapshot() map[string]podTimes {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	out := make(map[string]podTimes, len(pw.pods))
	for k, v := range pw.pods {
		out[k] = *v
	}
	return out
}

func (pw *podWatch) counts() podCounts {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	return pw.n
}

// slidingRates counts events (sorted times) in windows of length win
// sliding by step across [first, last] and returns each window's rate per
// second. A run shorter than two windows gives one rate over the whole run.
func slidingRates(sorted []time.Time, win, step time.Duration) []float64 {
	if len(sorted) < 2 {
		return nil
	}
	first, last := sorted[0], sorted[len(sorted)-1]
	if last.Sub(first) < 2*win {
		return []float64{float64(len(sorted)-1) / last.Sub(first).Seconds()}
	}
	var out []float64
	lo, hi := 0, 0
	for start := first; !start.Add(win).After(last); start = start.Add(step) {
		end := start.Add(win)
		for lo < len(sorted) && sorted[lo].Before(start) {
			lo++
		}
		for hi < len(sorted) && sorted[hi].Before(end) {
			hi++
		}
		out = append(out, float64(hi-lo)/win.Seconds())
	}
	return out
}

func sortTimes(t []time.Time) {
	sort.Slice(t, func(i, j int) bool { return t[i].Before(t[j]) })
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100
// on every Linux architecture skiff runs on.
const clockTicks = 100

// cpuTime returns the CPU time (user + system) a process has used.
func cpuTime(pid int) (time.Duration, error) {
	if pid == 0 {
		return 0, errors.New("process not running")
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count fields after the last ')'. utime and stime are fields 14, 15.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// loadAvg returns the 1-minute load average (the machine is shared: a
// figure is read beside it).
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func secs(d time.Duration) float64 { return math.Round(d.Seconds()*1000) / 1000 }
