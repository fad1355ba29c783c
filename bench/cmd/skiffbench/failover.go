package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// failoverControl kills, restarts and moves the leader of a cluster.
type failoverControl interface {
	leader(ctx context.Context) (int, error)
	kill(i int)
	restart(i int) error
	waitHealthy(ctx context.Context) error
	// transfer hands leadership to another member gracefully and returns
	// when the old leader knows the new one.
	transfer(ctx context.Context) error
}

// failoverSettings are the client's settings during a failover run, which
// shape the measured window as much as the servers do.
type failoverSettings struct {
	clients    int
	reqTimeout time.Duration // per attempt
	backoff    time.Duration // pause after a failed attempt, fixed
	kills      int
	transfers  int
	settle     time.Duration // steady writing before each kill
}

// leaderEventer tells from the servers' own logs when a new leader was
// elected and when it was ready to serve, to split the window.
type leaderEventer interface {
	leaderEvents(t time.Time) (elected, ready time.Time)
}

type failoverResult struct {
	// elected and ready: kill -> new leader elected / ready, from logs.
	elected, ready []time.Duration
	windows        []time.Duration // kill -> first ack of an attempt started after the kill
	transfers      []time.Duration // transfer call -> first ack of an attempt started after it returned
	acked          int
	failed         int // attempts that failed (and were retried)
	missing        []string
	timeouts       int // kills after which no write succeeded within the limit
}

// ackLog records every acknowledged write: which key, when its successful
// attempt started and when it was acknowledged.
type ackLog struct {
	mu   sync.Mutex
	keys []string
	// starts and acks are parallel to keys.
	starts, acks []time.Time
	// latestStart is the start (UnixNano) of the most recent acknowledged
	// attempt, for polling.
	latestStart atomic.Int64
}

func (a *ackLog) add(key string, start, ack time.Time) {
	a.mu.Lock()
	a.keys = append(a.keys, key)
	a.starts = append(a.starts, start)
	a.acks = append(a.acks, ack)
	a.mu.Unlock()
	for {
		cur := a.latestStart.Load()
		if start.UnixNano() <= cur || a.latestStart.CompareAndSwap(cur, start.UnixNano()) {
			return
		}
	}
}

// firstAckAfter returns the earliest acknowledgement of an attempt that
// started at or after t.
func (a *ackLog) firstAckAfter(t time.Time) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var best time.Time
	for i, s := range a.starts {
		if !s.Before(t) && (best.IsZero() || a.acks[i].Before(best)) {
			best = a.acks[i]
		}
	}
	return best, !best.IsZero()
}

// waitAckAfter waits until an attempt started at or after t is
// acknowledged.
func (a *ackLog) waitAckAfter(ctx context.Context, t time.Time, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if a.latestStart.Load() >= t.UnixNano() {
			return true
		}
		time.Sleep(2 * time.Millisecond)
	}
	return false
}

// runFailover keeps s.clients writers creating keys, each retrying the same
// key until it is acknowledged (a retry that finds the key already stored
// counts as acknowledged: the earlier attempt was applied), while the
// leader is SIGKILLed s.kills times and restarted, then moved gracefully
// s.transfers times. At the end every acknowledged key is read back.
func runFailover(ctx context.Context, t target, ctl failoverControl, s failoverSettings, logf func(string, ...any)) (failoverResult, error) {
	var res failoverResult
	run := runSeq.Add(1)
	ws := make([]writer, s.clients)
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
			return res, err
		}
		ws[i] = w
	}
	acks := &ackLog{}
	var failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; ; seq++ {
				key := fmt.Sprintf("f%d-%d-%d", run, i, seq)
				for attempt := 0; ; attempt++ {
					select {
					case <-stop:
						return
					default:
					}
					start := time.Now()
					rctx, cancel := context.WithTimeout(ctx, s.reqTimeout)
					err := w.put(rctx, key)
					cancel()
					if err == nil || (attempt > 0 && errors.Is(err, errExists)) {
						acks.add(key, start, time.Now())
						break
					}
					if ctx.Err() != nil {
						return
					}
					failed.Add(1)
					if errors.Is(err, errExists) {
						break // a key this writer never wrote: skip it
					}
					select {
					case <-stop:
						return
					case <-time.After(s.backoff):
					}
				}
			}
		}()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	// kills
	for k := 0; k < s.kills && ctx.Err() == nil; k++ {
		time.Sleep(s.settle)
		if !acks.waitAckAfter(ctx, time.Now(), 10*time.Second) {
			return res, errors.New("no writes before the kill: the cluster is not serving")
		}
		l, err := ctl.leader(ctx)
		if err != nil {
			return res, err
		}
		killAt := time.Now()
		ctl.kill(l)
		ok := acks.waitAckAfter(ctx, killAt, 30*time.Second)
		if ok {
			at, _ := acks.firstAckAfter(killAt)
			res.windows = append(res.windows, at.Sub(killAt))
			logf("kill %d/%d of member %d: writes again after %s", k+1, s.kills, l+1, at.Sub(killAt).Round(time.Millisecond))
		} else {
			res.timeouts++
			logf("kill %d/%d of member %d: no write within 30s", k+1, s.kills, l+1)
		}
		if le, ok := ctl.(leaderEventer); ok {
			if el, rd := le.leaderEvents(killAt); !el.IsZero() && !rd.IsZero() {
				res.elected = append(res.elected, el.Sub(killAt))
				res.ready = append(res.ready, rd.Sub(killAt))
			}
		}
		if err := ctl.restart(l); err != nil {
			return res, err
		}
		if err := ctl.waitHealthy(ctx); err != nil {
			return res, err
		}
	}
	// graceful transfers
	for k := 0; k < s.transfers && ctx.Err() == nil; k++ {
		time.Sleep(s.settle)
		t0 := time.Now()
		if err := ctl.transfer(ctx); err != nil {
			logf("transfer %d: %v", k+1, err)
			continue
		}
		returned := time.Now()
		if acks.waitAckAfter(ctx, returned, 30*time.Second) {
			at, _ := acks.firstAckAfter(returned)
			res.transfers = append(res.transfers, at.Sub(t0))
			logf("transfer %d/%d: call %s, writes on the new leader after %s", k+1, s.transfers,
				returned.Sub(t0).Round(time.Millisecond), at.Sub(t0).Round(time.Millisecond))
		}
	}
	time.Sleep(s.settle)
	close(stop)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return res, err
	}
	res.failed = int(failed.Load())
	acks.mu.Lock()
	keys := append([]string(nil), acks.keys...)
	acks.mu.Unlock()
	res.acked = len(keys)
	if v, ok := t.(verifier); ok {
		if err := ctl.waitHealthy(ctx); err != nil {
			return res, err
		}
		missing, err := v.missing(ctx, keys)
		if err != nil {
			return res, fmt.Errorf("read back acknowledged writes: %w", err)
		}
		res.missing = missing
	}
	return res, nil
}

func durStats(d []time.Duration) (med, mx time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		med = s[len(s)/2]
	} else {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return med, s[len(s)-1]
}

func durList(d []time.Duration) string {
	out := ""
	for i, x := range d {
		if i > 0 {
			out += " "
		}
		out += fmt.Sprintf("%.0f", ms(x))
	}
	return out + " ms"
}
